# -*- coding: utf-8 -*-
# Private to this collection: not a public API.
# Copyright: Contributors to failsafe.deploy
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Builds and runs the rollback ``ansible-playbook`` child of the auto_rollback callback, and the child's side of
the protocol.

Parent side: ``build_command()`` (same inventories, ``--limit`` the scope, pass-through of ``-e`` and connection
options, ``-e @<vars file>``), ``play_connection()`` (the connection keywords a play sets, which the vars file carries
per host as ``failsafe_rollback_connection``), ``build_env()`` (``FAILSAFE_ROLLBACK_CHILD=1`` against recursion, our
callback kept enabled, runner/AWX variables scrubbed), ``run()`` (stdin closed, output to a log file and echoed, killed
at the timeout), ``read_child_result()``, ``merge_child_hosts()`` and ``rollback_reason()`` (the per-host outcome and
why the rollback did not succeed); ``launch_local()`` does all of that for the callback. ``rollback_request()`` builds
the extra vars of a rollback once, for the child, the controller's job template and the printed way out alike.
``operator_command()`` is the command an operator runs by hand (the rollback of a committed deploy, the way out of a
failed rollback, ``way_out()``): the same inventories and pass-through options, without the run's extra vars.

Child side: ``ChildReport`` collects per-host results and every ``failsafe_rollback`` value tasks return, and is
written to the path the parent passes in ``FAILSAFE_ROLLBACK_RESULT``.
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import collections
import json
import os
import queue
import re
import select
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time

from ansible.module_utils.common.sentinel import Sentinel
from ansible.module_utils.parsing.convert_bool import boolean

from ansible_collections.failsafe.deploy.plugins.module_utils._atomic import atomic_write_bytes

CHILD_ENV = 'FAILSAFE_ROLLBACK_CHILD'
RESULT_ENV = 'FAILSAFE_ROLLBACK_RESULT'
CALLBACK_FQCN = 'failsafe.deploy.auto_rollback'

# Removed from the child's environment: the parent's stdout callback (AWX forces awx_display, which would write
# into the parent's job events) and job identity of AWX/ansible-runner.
SCRUBBED_ENV = (
    'ANSIBLE_STDOUT_CALLBACK', 'JOB_ID', 'INVENTORY_ID', 'PROJECT_REVISION', 'AWX_ISOLATED_DATA_DIR',
    'RUNNER_OMIT_EVENTS', 'RUNNER_ONLY_FAILED_EVENTS', 'ANSIBLE_RUNNER_JOB_ID', 'ANSIBLE_FORCE_COLOR',
    'FAILSAFE_ROLLBACK_RESULT', 'ANSIBLE_CALLBACK_WHITELIST',
)

# Python warnings filters for the child (PYTHONWARNINGS entries, matched at the start of the message): ansible-core
# 2.19 imports DSA from cryptography at every start, and cryptography 51 and later deprecate DSA, so the rollback's log
# would begin with a CryptographyDeprecationWarning that is neither the collection's nor the deploy's.
QUIET_WARNINGS = ('ignore:DSA is deprecated',)

# (CLIARGS key, flag, kind): options passed through to the child when set in the parent run.
_PASS_THROUGH = (
    ('remote_user', '--user', 'value'),
    ('private_key_file', '--private-key', 'value'),
    ('connection', '--connection', 'value'),
    ('timeout', '--timeout', 'value'),
    ('ssh_common_args', '--ssh-common-args', 'value'),
    ('ssh_extra_args', '--ssh-extra-args', 'value'),
    ('sftp_extra_args', '--sftp-extra-args', 'value'),
    ('scp_extra_args', '--scp-extra-args', 'value'),
    ('connection_password_file', '--connection-password-file', 'value'),
    ('become', '--become', 'flag'),
    ('become_method', '--become-method', 'value'),
    ('become_user', '--become-user', 'value'),
    ('become_password_file', '--become-password-file', 'value'),
    ('forks', '--forks', 'value'),
    ('module_path', '--module-path', 'list'),
    ('vault_ids', '--vault-id', 'list'),
    ('vault_password_files', '--vault-password-file', 'list'),
)
# Play keywords that decide how a host is reached and who runs the tasks there. The rollback playbook is a play of
# its own: without them it would reach a host of a `connection: local` play over SSH, and run unprivileged where the
# play had `become: true`. The callback records the ones the play that opened a host's transaction set explicitly;
# playbooks/rollback.yml applies each unless the host has a variable that overrides that keyword (as in any play,
# ansible lets variables win over keywords), so inventory settings stay in force.
CONNECTION_KEYWORDS = ('connection', 'remote_user', 'become', 'become_method', 'become_user')

# Interactive prompts cannot be answered by a child whose stdin is closed.
INTERACTIVE_OPTIONS = ('ask_pass', 'become_ask_pass', 'ask_vault_pass')

# Exported by the callback at playbook start: the pid of this ansible-playbook, recorded in the deploy lock so that a
# later run on the same controller can tell that the lock's holder is dead (SIGKILL) without waiting for its TTL.
CONTROLLER_PID_ENV = 'FAILSAFE_CONTROLLER_PID'

LaunchResult = collections.namedtuple(
    'LaunchResult', ['rc', 'timed_out', 'interrupted', 'started', 'ended', 'duration', 'log_path', 'error'])


def default_ansible_playbook(executable=None):
    """The ``ansible-playbook`` beside the running Python (same venv), else the first on PATH."""
    executable = executable or sys.executable
    candidate = os.path.join(os.path.dirname(executable or ''), 'ansible-playbook')
    if executable and os.path.isfile(candidate) and os.access(candidate, os.X_OK):
        return candidate
    return shutil.which('ansible-playbook') or 'ansible-playbook'


def limit_pattern(hosts):
    """``--limit`` value naming exactly ``hosts`` (comma-separated: safe for IPv6 names and ranges)."""
    pattern = ','.join(hosts)
    if len(hosts) == 1 and ':' in pattern:
        pattern += ','
    return pattern


def _as_list(value):
    if value is None or value == '' or value is False:
        return []
    if isinstance(value, (list, tuple)):
        return [v for v in value if v not in (None, '')]
    return [value]


def config_defaults():
    """CLIARGS values that only repeat the configuration: the child reads the same configuration itself, so
    these are not passed on (keeps the command short and honest about what the operator chose)."""
    from ansible import constants as C
    names = {
        'remote_user': 'DEFAULT_REMOTE_USER', 'private_key_file': 'DEFAULT_PRIVATE_KEY_FILE',
        'connection': 'DEFAULT_TRANSPORT', 'become': 'DEFAULT_BECOME', 'become_method': 'DEFAULT_BECOME_METHOD',
        'forks': 'DEFAULT_FORKS', 'connection_password_file': 'CONNECTION_PASSWORD_FILE',
        'become_password_file': 'BECOME_PASSWORD_FILE',
    }
    out = {}
    for key, setting in names.items():
        try:
            out[key] = C.config.get_config_value(setting)
        except Exception:  # pylint: disable=broad-except
            continue
    return out


def pass_through(cliargs, defaults=None):
    """The run's connection, privilege, vault and module path options (``_PASS_THROUGH``) as arguments of another
    ``ansible-playbook``; options whose value equals ``defaults[key]`` (the configured default) are left to the
    configuration."""
    cliargs = cliargs or {}
    defaults = defaults or {}
    out = []
    for key, flag, kind in _PASS_THROUGH:
        value = cliargs.get(key)
        if key in defaults and value == defaults[key]:
            continue
        if kind == 'flag':
            if value:
                out.append(flag)
        elif kind == 'list':
            for item in _as_list(value):
                out += [flag, str(item)]
        elif value not in (None, '', False):
            out += [flag, str(value)]
    return out


def build_command(ansible_playbook, playbook, cliargs, hosts, vars_file, defaults=None):
    """The child's argv. ``cliargs`` is ``ansible.context.CLIARGS`` (or any mapping with the same keys);
    options whose value equals ``defaults[key]`` (the configured default) are left to the configuration."""
    if not hosts:
        raise ValueError('no host to roll back')
    cliargs = cliargs or {}
    cmd = [ansible_playbook, playbook]
    for source in _as_list(cliargs.get('inventory')):
        cmd += ['--inventory', str(source)]
    cmd += ['--limit', limit_pattern(list(hosts))]
    cmd += pass_through(cliargs, defaults)
    verbosity = cliargs.get('verbosity') or 0
    if isinstance(verbosity, int) and verbosity > 0:
        cmd.append('-' + 'v' * min(verbosity, 6))
    for extra in _as_list(cliargs.get('extra_vars')):
        cmd += ['--extra-vars', str(extra)]
    # Our own vars come last: they win over anything passed through.
    cmd += ['--extra-vars', '@' + vars_file]
    return cmd


def rollback_reason(launch, child, hosts):
    """Why a local rollback (``launch``, the child's result file ``child``, the merged per-host outcome ``hosts``)
    did not succeed, or None when it did: the child did not run, exited non-zero or left no result, a host was not
    rolled back, or a restore could not be verified."""
    reason = None
    bad = [h for h, info in hosts.items() if info['status'] != 'ok']
    unverified = [h for h, info in hosts.items() if info.get('verified') is False]
    if launch.error:
        reason = launch.error
    elif launch.rc != 0:
        reason = 'rollback playbook exited %s' % launch.rc
    elif child is None:
        reason = 'the rollback playbook left no result file (is the callback enabled for it?)'
    if bad:
        reason = (reason + '; ' if reason else '') + 'not rolled back: %s' % ', '.join(
            '%s (%s)' % (h, hosts[h]['status']) for h in bad)
    if unverified:
        reason = (reason + '; ' if reason else '') + 'verification failed on %s' % ', '.join(unverified)
    return reason


def rollback_files(report_dir, incident_id):
    """{rollback_vars, rollback_result, rollback_log}: the files of an incident's local rollback."""
    base = os.path.join(report_dir, incident_id)
    return {'rollback_vars': base + '.rollback-vars.json', 'rollback_result': base + '.rollback-result.json',
            'rollback_log': base + '.rollback.log'}


_FQCN_PLAYBOOK = re.compile(r'^[A-Za-z_]\w*\.[A-Za-z_]\w*\.[A-Za-z_][\w.]*$')


def resolve_playbook(playbook, playbook_path=None):
    """The rollback playbook to run: a path as given (absolute), else beside the deploy playbook ``playbook_path``,
    else a collection playbook's FQCN as is, else a path relative to the working directory."""
    if os.path.isabs(playbook) or os.path.exists(playbook):
        return os.path.abspath(playbook)
    if playbook_path:
        beside = os.path.join(os.path.dirname(playbook_path), playbook)
        if os.path.exists(beside):
            return beside
    if _FQCN_PLAYBOOK.match(playbook):
        return playbook
    return os.path.abspath(playbook)


def enabled_callbacks():
    """The run's ``callbacks_enabled`` setting (the child keeps them), [] when it cannot be read."""
    try:
        from ansible import constants as C
        return C.config.get_config_value('CALLBACKS_ENABLED') or []
    except Exception:  # pylint: disable=broad-except
        return []


# Extra vars that say where a transaction is recorded and on which hosts the playbooks run: a command printed for
# an operator repeats these from the run's extra vars (and no other: the rest may hold secrets).
LOCATION_VARS = ('failsafe_hosts', 'failsafe_name', 'failsafe_state_dir')

# Prompts a command printed for an operator keeps (the operator answers them; the rollback child cannot).
_PROMPTS = (('ask_pass', '--ask-pass'), ('become_ask_pass', '--ask-become-pass'),
            ('ask_vault_pass', '--ask-vault-pass'))


def location_vars(loader=None):
    """The ``LOCATION_VARS`` the run was given as extra vars (``-e``), read as ansible reads them."""
    try:
        from ansible.utils.vars import load_extra_vars
        if loader is None:
            from ansible.parsing.dataloader import DataLoader
            loader = DataLoader()
        extra = load_extra_vars(loader)
    except Exception:  # pylint: disable=broad-except
        return {}
    return dict((name, extra[name]) for name in LOCATION_VARS if name in extra)


def operator_command(playbook, cliargs, hosts=None, extra_vars=None, defaults=None,
                     ansible_playbook='ansible-playbook'):
    """argv of a playbook of this collection (the rollback, recover) for an operator to run by hand: the run's
    inventory sources, ``--limit`` ``hosts`` (else the run's own ``--limit``), the run's options that
    ``pass_through()`` gives the rollback child, its prompts, and ``extra_vars`` ({name: value}) as the only extra
    vars: the run's own are never repeated (they may hold secrets)."""
    cliargs = cliargs or {}
    cmd = [ansible_playbook, playbook]
    for source in _as_list(cliargs.get('inventory')):
        cmd += ['-i', str(source)]
    if hosts:
        cmd += ['--limit', limit_pattern(list(hosts))]
    elif cliargs.get('subset'):
        cmd += ['--limit', str(cliargs['subset'])]
    cmd += pass_through(cliargs, defaults)
    cmd += [flag for key, flag in _PROMPTS if cliargs.get(key)]
    for name in sorted(extra_vars or {}):
        value = extra_vars[name]
        if isinstance(value, str) and value and not any(c.isspace() or c in '\'"\\=' for c in value):
            cmd += ['-e', '%s=%s' % (name, value)]
        else:
            cmd += ['-e', json.dumps({name: value}, sort_keys=True, default=str)]
    return cmd


def way_out(scope, hosts, request_for, cliargs):
    """The command that finishes the rollback on the hosts of ``scope`` whose rollback did not succeed (every host
    in scope when ``hosts``, the per-host outcome, says none did), with the run's inventory, limit and connection
    options; ``request_for(hosts)`` is their rollback request. None when it cannot be built."""
    hosts = hosts or {}

    def undone(host):
        return hosts.get(host, {}).get('status') == 'ok' and hosts.get(host, {}).get('verified') is not False

    left = [h for h in scope if not undone(h)] or list(scope)
    extra = location_vars()
    extra.update(request_for(left))
    try:
        return command_line(operator_command('failsafe.deploy.rollback', cliargs, hosts=left, extra_vars=extra,
                                             defaults=config_defaults()))
    except Exception:  # pylint: disable=broad-except
        return None


def command_line(cmd):
    """``cmd`` as one shell line (each argument quoted where the shell needs it)."""
    return ' '.join(shlex.quote(str(part)) for part in cmd)


def shown_command(cmd):
    """The command for reports and logs: pass-through extra vars are hidden (they may hold secrets)."""
    shown = []
    hide_next = False
    vars_files = [c for c in cmd if isinstance(c, str) and c.startswith('@')]
    own = vars_files[-1] if vars_files else None
    for part in cmd:
        if hide_next:
            shown.append(part if part == own else '<extra vars>')
            hide_next = False
            continue
        if part in ('--extra-vars', '-e', '--connection-password-file', '--become-password-file',
                    '--vault-password-file'):
            hide_next = part in ('--extra-vars', '-e')
        shown.append(part)
    return shown


def interactive_options(cliargs):
    """Names of interactive prompt options used by the parent (the child cannot answer them)."""
    return [key for key in INTERACTIVE_OPTIONS if (cliargs or {}).get(key)]


def build_env(base_env, result_path, callbacks_enabled=None):
    """Environment of the child: recursion flag, result path, our callback enabled, scrubbed of runner/AWX keys, and
    the interpreter's known third-party start-up warnings silenced (``QUIET_WARNINGS``)."""
    env = dict(base_env)
    for key in SCRUBBED_ENV:
        env.pop(key, None)
    # ansible-runner's awx_display patches ansible's Display as soon as its module is imported, and ansible imports
    # every callback module on the callback path: without the runner's environment it then crashes the child.
    if env.get('ANSIBLE_CALLBACK_PLUGINS'):
        kept = [p for p in env['ANSIBLE_CALLBACK_PLUGINS'].split(os.pathsep)
                if p and not os.path.exists(os.path.join(p, 'awx_display.py'))]
        if kept:
            env['ANSIBLE_CALLBACK_PLUGINS'] = os.pathsep.join(kept)
        else:
            env.pop('ANSIBLE_CALLBACK_PLUGINS')
    env[CHILD_ENV] = '1'
    env[RESULT_ENV] = result_path
    env['ANSIBLE_NOCOLOR'] = '1'
    env['PYTHONUNBUFFERED'] = '1'
    env['ANSIBLE_RETRY_FILES_ENABLED'] = 'False'
    filters = [f for f in (env.get('PYTHONWARNINGS') or '').split(',') if f]
    env['PYTHONWARNINGS'] = ','.join(filters + [f for f in QUIET_WARNINGS if f not in filters])
    enabled = []
    for name in list(callbacks_enabled or []) + [CALLBACK_FQCN]:
        name = str(name).strip()
        if name and name not in enabled:
            enabled.append(name)
    env['ANSIBLE_CALLBACKS_ENABLED'] = ','.join(enabled)
    return env


def play_connection(play):
    """{keyword: value} of the CONNECTION_KEYWORDS that ``play`` sets itself. A keyword the play leaves unset (ansible
    keeps Sentinel in the attribute's storage; the public attribute would answer the command line's default) is left
    out: the child gets the same command line and inventory, which decide it there as they did here. Values may
    still be templates (see ``is_template``)."""
    out = {}
    for keyword in CONNECTION_KEYWORDS:
        value = getattr(play, '_' + keyword, Sentinel)
        if value is Sentinel or value is None:
            continue
        out[keyword] = value
    return out


def is_template(value):
    """Whether a keyword value is a Jinja template that needs the host's variables to resolve."""
    return isinstance(value, str) and ('{{' in value or '{%' in value)


def normalize_connection(settings):
    """Resolved keyword values as the child receives them: ``become`` a bool, the others strings.
    Raises TypeError or ValueError on a value that is neither."""
    out = {}
    for keyword, value in (settings or {}).items():
        if keyword not in CONNECTION_KEYWORDS or value is None:
            continue
        if keyword == 'become':
            out[keyword] = boolean(value, strict=True)
        elif isinstance(value, (str, int, float)) and not isinstance(value, bool):
            out[keyword] = str(value)
        else:
            raise TypeError('%s must be a string, not %s' % (keyword, type(value).__name__))
    return out


def rollback_request(run_id, hosts, incident_id, connection=None, stages=None):
    """The rollback request: the extra vars the rollback playbook gets for one failure, whichever path starts it (the
    local child's ``-e @file``, the controller's job template, the command printed for an operator), so that two
    paths to a rollback cannot disagree. failsafe_hosts (all: the ``--limit`` is the scope), failsafe_rollback_run_id,
    failsafe_rollback_hosts ({host: where its transaction is recorded}), failsafe_rollback_incident,
    failsafe_rollback_connection ({host: {keyword: value}}, only hosts whose play set a connection keyword) and
    failsafe_rollback_stages ({host: [stage, ...]}, only hosts whose layers need stages other than code alone).

    Secrets are never part of it: the child gets the layers' secret options from the run's own extra vars, passed
    through on its command line; the controller's job template from its credentials; an operator adds their own."""
    data = {
        # the rollback plays run on every host of the --limit (the scope): a host outside the deploy's own host
        # pattern (a load balancer or database host its tasks were delegated to) is rolled back too
        'failsafe_hosts': 'all',
        'failsafe_rollback_run_id': run_id,
        'failsafe_rollback_hosts': hosts,
        'failsafe_rollback_incident': incident_id,
        'failsafe_rollback_connection': dict((host, dict(settings)) for host, settings in (connection or {}).items()
                                             if settings),
    }
    staged = dict((host, list(host_stages)) for host, host_stages in (stages or {}).items()
                  if host_stages and list(host_stages) != ['code'])
    if staged:
        data['failsafe_rollback_stages'] = staged
    return data


def write_request(path, request):
    """Write the rollback request (``rollback_request``) as the child's ``-e @file`` (mode 0600); returns it."""
    atomic_write_bytes(os.path.abspath(path), json.dumps(request, indent=2, sort_keys=True).encode('utf-8'),
                       mode=0o600, controller=True)
    return request


def write_rollback_vars(path, run_id, hosts, incident_id, connection=None, stages=None):
    """The ``-e @file`` of the child: the rollback request (``rollback_request``) written to ``path``."""
    return write_request(path, rollback_request(run_id, hosts, incident_id, connection=connection, stages=stages))


def _pump(stream, lines):
    try:
        for raw in iter(stream.readline, b''):
            lines.put(raw)
    except (OSError, ValueError):
        pass
    finally:
        lines.put(None)


def _read_line(stream, timeout):
    """One line of ``stream`` (None at EOF) when it is ready within ``timeout`` s, else raise queue.Empty."""
    try:
        ready = select.select([stream], [], [], timeout)[0]
    except (OSError, ValueError):
        return None
    if not ready:
        raise queue.Empty()
    raw = stream.readline()
    return raw or None


def _kill_group(proc, grace=5.0):
    """SIGTERM the child's process group, then SIGKILL after ``grace`` seconds."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, grace)):
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            try:
                proc.send_signal(sig)
            except (ProcessLookupError, OSError):
                pass
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def run(cmd, env, log_path, timeout, echo=None, cwd=None, redact=None, header=None):
    """Run the child with stdin closed, stdout+stderr to ``log_path`` and to ``echo(line)``.

    Kills the whole process group after ``timeout`` seconds. Never raises: failures to start are in ``error``.
    """
    started = time.time()
    redact = redact or (lambda text: text)
    os.makedirs(os.path.dirname(os.path.abspath(log_path)), exist_ok=True)
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    log = os.fdopen(fd, 'w', encoding='utf-8')
    rc = None
    timed_out = False
    interrupted = False
    error = None
    try:
        if header:
            log.write(redact(header).rstrip('\n') + '\n')
            log.flush()
        try:
            proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, start_new_session=True, close_fds=True)
        except (OSError, ValueError) as exc:
            error = 'could not start %s: %s' % (cmd[0], exc)
            log.write(redact(error) + '\n')
            return LaunchResult(None, False, False, started, time.time(), round(time.time() - started, 3),
                                log_path, error)
        lines = queue.Queue()
        reader = threading.Thread(target=_pump, args=(proc.stdout, lines), daemon=True)
        try:
            reader.start()
        except RuntimeError:
            # No new thread at interpreter shutdown (Python 3.12+): the callback's exit handler reads inline.
            reader = None
        deadline = started + float(timeout)
        eof = False
        try:
            while True:
                remaining = deadline - time.time()
                if remaining <= 0:
                    timed_out = True
                    error = 'rollback playbook did not finish within %s s: killed' % timeout
                    _kill_group(proc)
                    break
                try:
                    raw = (lines.get(timeout=min(0.2, remaining)) if reader is not None
                           else _read_line(proc.stdout, min(0.2, remaining)))
                except queue.Empty:
                    if eof and proc.poll() is not None:
                        break
                    continue
                if raw is None:
                    eof = True
                    if proc.poll() is not None:
                        break
                    continue
                text = redact(raw.decode('utf-8', 'replace').rstrip('\n'))
                log.write(text + '\n')
                log.flush()
                if echo is not None:
                    try:
                        echo(text)
                    except Exception:  # pylint: disable=broad-except
                        pass
        except KeyboardInterrupt:
            interrupted = True
            error = 'interrupted while the rollback playbook ran: killed'
            _kill_group(proc, grace=2.0)
        try:
            rc = proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            _kill_group(proc, grace=2.0)
            rc = proc.poll()
        # Drain what the reader still holds (bounded).
        if reader is not None:
            reader.join(timeout=1.0)
        while True:
            try:
                raw = lines.get_nowait()
            except queue.Empty:
                break
            if raw is not None:
                log.write(redact(raw.decode('utf-8', 'replace').rstrip('\n')) + '\n')
        ended = time.time()
        if error:
            log.write('failsafe: %s\n' % error)
        log.write('failsafe: rollback playbook exit code %s after %.2f s\n' % (rc, ended - started))
        return LaunchResult(rc, timed_out, interrupted, started, ended, round(ended - started, 3), log_path, error)
    finally:
        try:
            log.flush()
            os.fsync(log.fileno())
        except OSError:
            pass
        log.close()


def read_child_result(path):
    """The child's result file as a dict, or None when it is missing or unreadable."""
    try:
        with open(path, 'r', encoding='utf-8') as handle:
            data = json.load(handle)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def launch_local(ansible_playbook, playbook, cliargs, scope, request, files, timeout, timeline, header=None,
                 on_start=None, warn=None, echo=None, redact=None):
    """Run the rollback child for ``scope`` and wait for it: write ``request`` (``rollback_request``) to the vars
    file of ``files`` (``rollback_files``), build the command and environment, call ``on_start()``, run it (output to
    the log file and ``echo``), then read and merge its result. The end of the rollback and each host's outcome go to
    ``timeline``. Returns (LaunchResult, per-host outcome, failure reason or None, the command as shown)."""
    write_request(files['rollback_vars'], request)
    cmd = build_command(ansible_playbook, playbook, cliargs, scope, files['rollback_vars'], defaults=config_defaults())
    prompts = interactive_options(cliargs)
    if prompts and warn is not None:
        warn('the rollback playbook cannot prompt (%s): use password files or vault ids' % ', '.join(prompts))
    env = build_env(os.environ, files['rollback_result'], enabled_callbacks())
    shown = shown_command(cmd)
    try:
        os.unlink(files['rollback_result'])
    except OSError:
        pass
    if on_start is not None:
        on_start()
    launch = run(cmd, env, files['rollback_log'], timeout, echo=echo, cwd=os.getcwd(), redact=redact,
                 header='%s\n# %s' % (header, ' '.join(shown)) if header else None)
    child = read_child_result(files['rollback_result'])
    hosts = merge_child_hosts(scope, child)
    timeline.add('rollback_end', rc=launch.rc, timed_out=launch.timed_out or None, duration=launch.duration,
                 error=launch.error)
    child_hosts = (child or {}).get('hosts') or {}
    for host, info in hosts.items():
        # placed when the host's rollback came back, so the timeline shows the stages' order across hosts (the
        # code's hosts before the infrastructure's, undone last)
        done = (child_hosts.get(host) or {}).get('done_at') if isinstance(child_hosts.get(host), dict) else None
        when = {'t': done, 'at': time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime(done)) + '.%03dZ'
                % (int(done * 1000) % 1000)} if isinstance(done, (int, float)) else {}
        timeline.add('rollback_host', host=host, status=info['status'], verified=info.get('verified'), **when)
    return launch, hosts, rollback_reason(launch, child, hosts), shown


class ChildReport:
    """Child mode of the callback: per-host outcome of the rollback run and what each host restored."""

    def __init__(self, redactor=None):
        self._redact = redactor.data if redactor is not None else (lambda data: data)
        self.hosts = {}
        self.started = time.time()

    def _host(self, host):
        return self.hosts.setdefault(host, {'status': 'ok', 'failsafe_rollback': [], 'failed_tasks': []})

    def on_result(self, host, result, status, task_name=None, message=None):
        """Record one result; ``status`` is ok/failed/unreachable/skipped."""
        entry = self._host(host)
        for value in _rollback_values(result):
            entry['failsafe_rollback'].append(self._redact(value))
            # when the host's last rollback call (of a staged rollback: its last stage) came back
            entry['done_at'] = round(time.time(), 3)
        if status in ('failed', 'unreachable'):
            entry['failed_tasks'].append({'task': task_name, 'status': status, 'message': message})
            if entry['status'] != 'unreachable':
                entry['status'] = status

    def finish(self, stats=None):
        """Final per-host statuses from the play recap (failures/dark), merged with what the events said."""
        if stats is not None:
            for host in list(getattr(stats, 'processed', {}) or {}):
                entry = self._host(host)
                if (getattr(stats, 'dark', {}) or {}).get(host):
                    entry['status'] = 'unreachable'
                elif (getattr(stats, 'failures', {}) or {}).get(host):
                    entry['status'] = 'failed'
                elif entry['status'] == 'failed' and (getattr(stats, 'rescued', {}) or {}).get(host):
                    entry['status'] = 'ok'
            summary = {}
            for host in getattr(stats, 'processed', {}) or {}:
                try:
                    summary[host] = stats.summarize(host)
                except Exception:  # pylint: disable=broad-except
                    pass
        else:
            summary = None
        return {'hosts': self.hosts, 'stats': summary, 'started': self.started, 'finished': time.time()}


def _rollback_values(result):
    if not isinstance(result, dict):
        return []
    values = []
    if 'failsafe_rollback' in result:
        values.append(result['failsafe_rollback'])
    for item in result.get('results') or ():
        if isinstance(item, dict) and 'failsafe_rollback' in item:
            values.append(item['failsafe_rollback'])
    return values


def merge_child_hosts(scope, child):
    """Per-host rollback outcome for the parent: every scoped host gets a status; one missing from the child's
    result is ``no_result`` (never assumed ok). ``restored`` merges the host's ``failsafe_rollback`` dicts
    (``pending``, the stages still to undo, and ``running_release``, read at the end of each, are the last one's);
    ``verified`` is their last ``verified`` value, if any. A host that failed with stages still to undo keeps the
    layers its finished stages undid, without the release they said it runs nor their ``verified`` (the failure came
    after them), and ``unfinished`` true."""
    child_hosts = (child or {}).get('hosts') or {}
    out = {}
    for host in scope:
        info = child_hosts.get(host)
        if info is None:
            out[host] = {'status': 'no_result', 'restored': None, 'verified': None, 'failed_tasks': []}
            continue
        restored = {}
        verified = None
        extra = []
        for value in info.get('failsafe_rollback') or []:
            if isinstance(value, dict):
                # a staged rollback reports once per stage (flags, traffic, code, database): the layers add up, and
                # a later stage that restored nothing (no paths, no release) does not hide what an earlier one did
                for key, item in value.items():
                    if key == 'layers':
                        restored['layers'] = list(restored.get('layers') or []) + list(item or [])
                    elif key == 'running_release':
                        # read from the host's current link at the end of each stage: the last one is what it runs
                        # (none, where the code stage took the release of a first deploy out of service)
                        restored[key] = item
                    elif item in (None, False, [], {}) and restored.get(key) not in (None, False, [], {}):
                        continue
                    else:
                        restored[key] = item
                if 'verified' in value:
                    verified = value.get('verified')
                # what is still to undo is what the last stage's report says: a stage that undid the rest
                # reports no 'pending'
                if value.get('pending'):
                    restored['pending'] = list(value['pending'])
                else:
                    restored.pop('pending', None)
            else:
                extra.append(value)
        if extra:
            restored['values'] = extra
        status = info.get('status') or 'no_result'
        if status != 'ok' and restored.get('pending'):
            # the host failed with stages still to undo: what its finished stages undid stands, but the release
            # they left running and their verification tell the host before the failure, not after it
            for key in ('running_release', 'target_release', 'verified'):
                restored.pop(key, None)
            restored['unfinished'] = True
            verified = None
        out[host] = {'status': status, 'restored': restored or None,
                     'verified': verified, 'failed_tasks': info.get('failed_tasks') or []}
    return out


class SignalGuard:
    """Turns SIGINT and SIGTERM into one orderly end of the run that the callback's exit handler can act on.

    ansible-playbook runs no callback after SIGINT (KeyboardInterrupt unwinds the run, only ``atexit`` still runs)
    and dies on SIGTERM without running anything. Armed at playbook start, the guard records the first signal
    (``fired``: its name), sends SIGTERM the way of SIGINT (ansible's own SIGINT handler tells the workers and
    raises KeyboardInterrupt), and stays armed: while the exit handler rolls back, one more signal only prints a
    warning, a second one raises KeyboardInterrupt (``run()`` then kills the rollback child).

    Workers forked by ansible inherit the handler until they install their own: in them it restores the default
    and re-raises the signal. The handler never takes a lock (no Display): it writes straight to fd 2.
    """

    SIGNALS = ('SIGINT', 'SIGTERM')

    def __init__(self, on_signal=None, write=None):
        self.pid = None
        self.fired = None
        self.fired_at = None
        self.extra = 0
        self.previous = {}
        self._on_signal = on_signal
        self._write = write or _write_stderr

    def arm(self):
        """Install the handlers (main thread only; a no-op elsewhere or when armed). Returns self."""
        if self.pid is not None:
            return self
        if threading.current_thread() is not threading.main_thread():
            return self
        self.pid = os.getpid()
        for name in self.SIGNALS:
            signum = getattr(signal, name)
            previous = signal.getsignal(signum)
            if previous == signal.SIG_IGN:
                continue  # ignored on purpose (nohup, a supervisor): leave it so
            self.previous[signum] = previous
            signal.signal(signum, self._handle)
        return self

    def _rearm(self):
        for signum in self.previous:
            try:
                signal.signal(signum, self._handle)
            except (ValueError, OSError):
                pass

    def _handle(self, signum, frame):
        if os.getpid() != self.pid:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        name = signal.Signals(signum).name
        if self.fired is not None:
            self.extra += 1
            if self.extra == 1:
                self._write('failsafe auto_rollback: %s received while the run ends and rolls back; send it once '
                            'more to abort the rollback\n' % name)
                return
            raise KeyboardInterrupt()
        self.fired = name
        self.fired_at = time.time()
        self._write('failsafe auto_rollback: %s received: stopping the run; open transactions will be rolled '
                    'back\n' % name)
        if self._on_signal is not None:
            try:
                self._on_signal(name)
            except Exception:  # pylint: disable=broad-except
                pass
        previous = self.previous.get(signal.SIGINT)
        try:
            if callable(previous):
                previous(signal.SIGINT, frame)  # ansible's: forwards to the workers, raises KeyboardInterrupt
            raise KeyboardInterrupt()
        finally:
            self._rearm()


def _write_stderr(text):
    try:
        os.write(2, text.encode('utf-8', 'replace'))
    except OSError:
        pass
