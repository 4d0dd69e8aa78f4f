# -*- coding: utf-8 -*-
# Private to this collection: not a public API.
# Copyright: Contributors to failsafe.deploy
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Failure classification and failure handling facts for the auto_rollback callback.

``classify()`` turns a failed task result into one cause class, checked in this order:
network (unreachable), input, config_error (a service that refused its configuration at start),
missing_configuration, infrastructure, script_error (a failed migration), start_failure (a service that did not
start), health, network (by message), script_error, unknown. ``input`` is something the deploy was given that is
malformed or missing (a release id that is not a plain name, a release archive that is not there, malformed health checks or
feature flag settings, an SQLite database file that does not exist, a configuration file that does not parse): the
preflight refuses most of it before anything changes, and says so in the result (``refused: input``). A
configuration error is named before health because a health task that never ran (an undefined URL) is a
configuration problem. A service that does not start is ``config_error`` when its log says its configuration
does not parse (a syntax error, an invalid INI/JSON/YAML file, a setting it does not know), else ``start_failure``
(unless its log names a missing file, a resource or a dependency), with the end of its log as evidence; an
unreachable host is always network.

``rescue_block_for()`` answers whether a failing task sits in the ``block:`` section of a block that has a
``rescue:`` section, in which case ansible rescues it and it is not a deploy failure.
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import collections
import re

CAUSES = ('network', 'input', 'missing_configuration', 'infrastructure', 'config_error', 'start_failure', 'health',
          'script_error', 'unknown')

Classification = collections.namedtuple('Classification', ['cause', 'evidence'])

_TEXT_KEYS = ('msg', 'reason', 'stderr', 'module_stderr', 'module_stdout', 'exception', 'stdout')
_MAX_TEXT = 20000

# What the deploy was given, malformed or missing: the preflight's own refusals, and configuration that does not parse.
_INPUT = [
    (re.compile(r"invalid release id", re.I), 'invalid release id'),
    (re.compile(r"release archive .* (?:is not a file|is not readable|does not exist)|"
                r"failsafe_release_archive .* is not a file", re.I), 'release archive not found'),
    (re.compile(r"flag key .* does not exist|flag '[^']*': (?:unknown setting|state must be|enabled must be|set either)|"
                r"flag '[^']*' has no variant|flag file .* is not valid JSON|is not a flagd flag file", re.I),
     'malformed feature flag settings'),
    (re.compile(r"SQLite database \S+(?: does not exist|: no such file)", re.I), 'database file missing'),
    (re.compile(r"failsafe_migrate_database is empty|failsafe_migrate_create applies to SQLite only", re.I),
     'database settings'),
    (re.compile(r'fails "(?:nginx -t|haproxy -c)"|configuration (?:file )?test failed|'
                r'\bconfig(?:uration)?\b[^\n]{0,80}\bsyntax error|'
                r'\bsyntax error\b[^\n]{0,80}\.(?:conf|cfg|ini|ya?ml|json|toml)\b', re.I),
     'configuration syntax error'),
]
_MIGRATION = re.compile(r"\bmigration \S+ failed|\b(?:alembic|sqitch)\b[^\n]* failed \(rc", re.I)
_SERVICE_START = re.compile(r"did not start under (?:supervisor|systemd)|supervisord did not start", re.I)
# What a service's log says when it refused its configuration at start (after "It ends with:" in the failure).
_CONFIG_ERROR = re.compile(
    r"invalid (?:INI|JSON|YAML|TOML|config(?:uration)?)\b|config(?:uration)? (?:file )?(?:error|syntax)|"
    r"syntax error|parse error|could not parse|ParsingError|MissingSectionHeaderError|ScannerError|"
    r"unknown (?:setting|directive|option)|\[emerg\]", re.I)
_LOG_END = re.compile(r"It ends with: (.*)", re.S)
_MISSING_CONFIGURATION = [
    (re.compile(r"is undefined|undefined variable|has no attribute|AnsibleUndefinedVariable", re.I), 'undefined variable'),
    (re.compile(r"missing required arguments?|missing parameter|required_(?:if|one_of|together)|"
                r"parameters are required together|one of the following is required", re.I),
     'missing required arguments'),
    (re.compile(r"Could not find or access|could not locate file|Unable to find '.*' in expected paths|"
                r"template not found|TemplateNotFound|vars file .* was not found|file not found|"
                r"No such file or directory.*\.(?:j2|ya?ml|json|cfg|conf|ini|env)\b|"
                r"the role '.*' was not found|couldn't resolve module/action|unsupported parameters",
                re.I),
     'file or template not found'),
]
_INFRASTRUCTURE = [
    (re.compile(r'No space left on device|ENOSPC|disk quota exceeded', re.I), 'no space left on device'),
    (re.compile(r'Read-only file system|EROFS', re.I), 'read-only file system'),
    (re.compile(r'Permission denied|Operation not permitted|EACCES|EPERM', re.I), 'permission denied'),
    (re.compile(r'out of memory|Cannot allocate memory|MemoryError|oom-kill|OOM killer|ENOMEM', re.I),
     'out of memory'),
    (re.compile(r'Too many open files|EMFILE|Input/output error|EIO\b', re.I), 'system resource error'),
    (re.compile(r'Failed to import the required Python library|No module named|ModuleNotFoundError|'
                r'command not found|executable file not found', re.I), 'missing dependency'),
]
# What ansible says of a loop whose items failed: the real reason is in the first failed item.
_LOOP_SUMMARY = re.compile(r'^(One or more items failed|All items completed)$')
_MISSING_LIBRARY = re.compile(r'Failed to import the required Python library \(([^)]+)\)|No module named \'([^\']+)\'')
_HEALTH_MSG = re.compile(r'health[ _-]?check failed|health check did not pass|unhealthy|metric gate failed', re.I)
_HEALTH_ACTIONS = frozenset(('failsafe.deploy.health_check', 'health_check'))
_VERIFY_WORD = re.compile(r'(^|[^a-z])(verify|verification|health|smoke[ _-]?test)([^a-z]|$)', re.I)
_NETWORK = [
    (re.compile(r'Connection refused|ECONNREFUSED', re.I), 'connection refused'),
    (re.compile(r'timed out|timeout|ETIMEDOUT', re.I), 'connection timed out'),
    (re.compile(r'Failed to connect to the host via ssh|ssh: |ssh_exchange_identification|'
                r'kex_exchange_identification|Connection closed by remote host|Host key verification failed|'
                r'Connection reset by peer|Broken pipe', re.I), 'ssh connection failure'),
    (re.compile(r'No route to host|Network is unreachable|Name or service not known|'
                r'Could not resolve host|Temporary failure in name resolution|nodename nor servname|'
                r'getaddrinfo failed', re.I), 'host or network unreachable'),
]
_SCRIPT_ACTIONS = frozenset((
    'command', 'shell', 'script', 'raw', 'expect',
    'ansible.builtin.command', 'ansible.builtin.shell', 'ansible.builtin.script', 'ansible.builtin.raw',
    'ansible.legacy.command', 'ansible.legacy.shell', 'ansible.legacy.script', 'ansible.legacy.raw',
))
_TRACEBACK = re.compile(r'Traceback \(most recent call last\)|MODULE FAILURE|Exception:|Error:.*line \d+', re.I)


def failure_text(result, limit=_MAX_TEXT):
    """Concatenate the human-readable parts of a (possibly looped) task result, bounded in size."""
    parts = []

    def collect(res, depth=0):
        if not isinstance(res, dict) or depth > 2:
            return
        for key in _TEXT_KEYS:
            value = res.get(key)
            if value in (None, '', []):
                continue
            if isinstance(value, (list, tuple)):
                value = '\n'.join(str(v) for v in value)
            elif isinstance(value, dict):
                value = ' '.join('%s' % v for v in value.values())
            parts.append(str(value))
        for item in res.get('results') or ():
            collect(item, depth + 1)

    collect(result if isinstance(result, dict) else {})
    text = '\n'.join(parts)
    if len(text) > limit:
        text = text[:limit // 2] + '\n...\n' + text[-limit // 2:]
    return text


def first_line(result, limit=300):
    """A short one-line reason for a failure (the msg, else stderr), for tables and alerts."""
    if not isinstance(result, dict):
        return ''
    if result.get('censored'):
        return 'output hidden (no_log)'
    if _LOOP_SUMMARY.match(str(result.get('msg') or '').strip()):
        item_line = _first_failed_item_line(result, limit)
        if item_line:
            return item_line
    for key in ('msg', 'reason', 'stderr', 'module_stderr', 'exception', 'stdout'):
        value = result.get(key)
        if isinstance(value, (list, tuple)):
            value = ' '.join(str(v) for v in value)
        if value:
            value = str(value).strip()
            lines = [ln.strip() for ln in value.splitlines() if ln.strip()]
            if not lines:
                continue
            line = lines[0]
            if key != 'msg' and len(lines) > 1 and lines[-1] != line:
                # stderr usually ends with the meaningful line
                line = lines[-1]
            if len(line) > limit:
                line = line[:limit - 3] + '...'
            return line
    if result.get('rc') not in (None, 0):
        return 'non-zero return code %s' % result.get('rc')
    for item in result.get('results') or ():
        if isinstance(item, dict) and (item.get('failed') or item.get('msg')):
            line = first_line(item, limit)
            if line:
                return line
    return ''


def _first_failed_item_line(result, limit):
    """The first line of the first failed item of a loop, named by its label: ``[health] status 503 ...``."""
    for item in result.get('results') or ():
        if isinstance(item, dict) and item.get('failed'):
            line = first_line(item, limit)
            if not line:
                continue
            label = item.get('_ansible_item_label')
            if isinstance(label, (str, int, float)) and str(label):
                line = '[%s] %s' % (label, line)
            return line if len(line) <= limit else line[:limit - 3] + '...'
    return ''


def _match(rules, text):
    for pattern, evidence in rules:
        if pattern.search(text):
            return evidence
    return None


def _is_health_task(action, task_name, tags, role):
    if action in _HEALTH_ACTIONS:
        return 'health check task failed'
    if any(str(tag).lower() in ('verify', 'health', 'health_check', 'healthcheck', 'smoke') for tag in tags or ()):
        return 'verification task failed'
    if role and str(role).rsplit('.', maxsplit=1)[-1].lower() in ('verify', 'health', 'health_check'):
        return 'verification role failed'
    if task_name and _VERIFY_WORD.search(str(task_name)):
        return 'verification task failed'
    return None


def _start_failure(text):
    """A service that did not start: ``config_error`` when the end of its log says its configuration does not parse,
    else ``start_failure``; the evidence names the last line of its log when the failure carried one."""
    end = _LOG_END.search(text)
    log = end.group(1) if end else ''
    # the failure joins the log's last lines with ' | '
    lines = [' '.join(line.split())[:200] for line in re.split(r'\n| \| ', log) if line.strip()]
    last = lines[-1] if lines else ''
    if _CONFIG_ERROR.search(log):
        said = next((line for line in reversed(lines) if _CONFIG_ERROR.search(line)), last)
        return Classification('config_error', 'configuration refused at start: %s' % said)
    return Classification('start_failure', 'service did not start' + (': %s' % last if last else ''))


def classify(result, action=None, task_name=None, tags=None, role=None, unreachable=False):
    """Return ``Classification(cause, evidence)`` for a failed or unreachable task result.

    ``result`` is the callback's result dict; ``action`` the task action (short or FQCN); ``tags`` the task's
    tags; ``role`` the role name the task belongs to, if any.
    """
    result = result if isinstance(result, dict) else {}
    text = failure_text(result)

    if unreachable or result.get('unreachable'):
        evidence = _match(_NETWORK, text) or 'host unreachable'
        return Classification('network', evidence)

    if result.get('refused') == 'input':
        return Classification('input', str(result.get('input_error') or 'invalid input'))
    # a configuration the service refused when it started: after the change, so not an input refused before it
    if _SERVICE_START.search(text):
        started = _start_failure(text)
        if started.cause == 'config_error':
            return started
    evidence = _match(_INPUT, text)
    if evidence:
        return Classification('input', evidence)

    evidence = _match(_MISSING_CONFIGURATION, text)
    if evidence:
        return Classification('missing_configuration', evidence)

    evidence = _match(_INFRASTRUCTURE, text)
    if evidence:
        library = _MISSING_LIBRARY.search(text)
        if library:
            evidence = '%s: %s' % (evidence, library.group(1) or library.group(2))
        return Classification('infrastructure', evidence)

    if _MIGRATION.search(text):
        return Classification('script_error', 'migration failed')
    if _SERVICE_START.search(text):
        return _start_failure(text)

    # A gate that judged metrics (its settings were sound): a health/metric regression, or no data under no_data=fail.
    if isinstance(result.get('failsafe_metric_gate'), dict):
        return Classification('health', 'metric gate failed')
    if _HEALTH_MSG.search(text):
        return Classification('health', 'health check failed')
    evidence = _is_health_task(action, task_name, tags, role)
    if evidence:
        return Classification('health', evidence)

    evidence = _match(_NETWORK, text)
    if evidence:
        return Classification('network', evidence)

    if 'Traceback (most recent call last)' in text or 'MODULE FAILURE' in text:
        return Classification('script_error', 'traceback')
    rc = result.get('rc')
    if isinstance(rc, int) and rc != 0 and (action in _SCRIPT_ACTIONS or action is None or 'cmd' in result):
        return Classification('script_error', 'non-zero return code %d' % rc)
    for item in result.get('results') or ():
        if isinstance(item, dict) and isinstance(item.get('rc'), int) and item.get('rc') != 0 \
                and action in _SCRIPT_ACTIONS:
            return Classification('script_error', 'non-zero return code %d' % item['rc'])
    if _TRACEBACK.search(text) and action in _SCRIPT_ACTIONS:
        return Classification('script_error', 'script error')

    return Classification('unknown', first_line(result, 120) or 'no message')


def _section_of(node, block):
    """Which section of ``block`` holds ``node`` ('block', 'rescue', 'always' or None), by uuid."""
    uuid = getattr(node, '_uuid', None)
    for section in ('block', 'rescue', 'always'):
        for child in getattr(block, section, None) or ():
            if child is node or (uuid is not None and getattr(child, '_uuid', None) == uuid):
                return section
    return None


def rescue_block_for(task, max_depth=100):
    """Return the block that will rescue a failure of ``task``, or None.

    Walks up the parent chain (blocks, include_tasks, include_role). A failure is rescued by the nearest enclosing
    block that has a non-empty ``rescue`` and holds the failing branch in its ``block`` section (a failure inside
    ``rescue`` or ``always`` is only rescued by an outer block).
    """
    node = task
    parent = getattr(task, '_parent', None)
    depth = 0
    while parent is not None and depth < max_depth:
        depth += 1
        rescue = getattr(parent, 'rescue', None)
        if isinstance(rescue, list) and rescue and hasattr(parent, 'block'):
            # A branch listed under rescue/always is not rescued by this block. An unknown position (a block
            # copied without its task lists) counts as the block section, as ansible's iterator would see it.
            if _section_of(node, parent) not in ('rescue', 'always'):
                return parent
        node = parent
        parent = getattr(parent, '_parent', None)
    return None


def _enclosing(task, max_depth=100):
    """Yield (block, section) for every block enclosing ``task``, nearest first."""
    node = task
    parent = getattr(task, '_parent', None)
    depth = 0
    while parent is not None and depth < max_depth:
        depth += 1
        if hasattr(parent, 'block') and hasattr(parent, 'rescue'):
            yield parent, _section_of(node, parent)
        node = parent
        parent = getattr(parent, '_parent', None)


def guarding_blocks(task):
    """uuids of the enclosing blocks that have a rescue and hold ``task`` outside their rescue/always sections:
    the blocks whose rescue section runs if ``task`` fails."""
    return [getattr(block, '_uuid', None) for block, section in _enclosing(task)
            if block.rescue and section not in ('rescue', 'always')]


def enclosing_blocks(task):
    """uuids of every enclosing block that holds ``task`` in its ``block:`` section (rescue or not)."""
    return [getattr(block, '_uuid', None) for block, section in _enclosing(task) if section in ('block', None)]


def rescue_owner(task):
    """uuid of the nearest block whose ``rescue:`` section holds ``task``, or None: a task running there means
    that block's failure is being rescued."""
    for block, section in _enclosing(task):
        if section == 'rescue':
            return getattr(block, '_uuid', None)
    return None
