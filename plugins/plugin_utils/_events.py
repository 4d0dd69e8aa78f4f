# -*- coding: utf-8 -*-
# Private to this collection: not a public API.
# Copyright: Contributors to failsafe.deploy
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""What the auto_rollback callback reads from ansible's event objects, as plain data.

One job: turn a TaskResult, a Task and the play they belong to into names, dicts and lists (the host and task of a
result, the transactions and rollback stages it reports, the escalation ladder, the connection keywords a host's
rollback needs), for ansible-core 2.19 and older attribute names alike. Nothing here decides or sends anything.
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

from ansible_collections.failsafe.deploy.plugins.plugin_utils import _launcher


def result_parts(result):
    """(host name, task, result dict) of a callback TaskResult, for ansible-core 2.19 and older names."""
    host = getattr(result, 'host', None) or getattr(result, '_host', None)
    task = getattr(result, 'task', None) or getattr(result, '_task', None)
    data = getattr(result, 'result', None)
    if data is None:
        data = getattr(result, '_result', None)
    name = host.get_name() if host is not None and hasattr(host, 'get_name') else str(host)
    return name, task, data if isinstance(data, dict) else {}


def result_host(result):
    """The inventory Host object of a callback TaskResult, for ansible-core 2.19 and older names."""
    return getattr(result, 'host', None) or getattr(result, '_host', None)


def task_info(task):
    """{name, role, path, action, tags, uuid} of a Task, or {} without one."""
    if task is None:
        return {}
    role = getattr(task, '_role', None)
    role_name = None
    if role is not None:
        try:
            role_name = role.get_name()
        except Exception:  # pylint: disable=broad-except
            role_name = str(role)
    try:
        name = task.get_name()
    except Exception:  # pylint: disable=broad-except
        name = getattr(task, 'name', None)
    try:
        path = task.get_path()
    except Exception:  # pylint: disable=broad-except
        path = None
    # The resolved action (FQCN) when ansible already resolved it; never trigger resolution from a callback.
    action = getattr(task, '_resolved_action', None) or getattr(task, 'action', None)
    tags = getattr(task, 'tags', None) or []
    return {
        'name': name or action or '',
        'role': role_name,
        'path': path or None,
        'action': action,
        'tags': list(tags) if isinstance(tags, (list, tuple, set)) else [tags],
        'uuid': getattr(task, '_uuid', None),
    }


def transactions(result):
    """The ``failsafe_transaction`` values of a result and of its loop items."""
    found = []
    if isinstance(result.get('failsafe_transaction'), dict):
        found.append(result['failsafe_transaction'])
    for item in result.get('results') or ():
        if isinstance(item, dict) and isinstance(item.get('failsafe_transaction'), dict):
            found.append(item['failsafe_transaction'])
    return found


def opens_transaction(task):
    """Whether the task is the call that opens a deploy transaction (failsafe.deploy.transaction, phase open)."""
    action = str(getattr(task, '_resolved_action', None) or getattr(task, 'action', None) or '')
    if action.rsplit('.', 1)[-1] != 'transaction':
        return False
    args = getattr(task, 'args', None) or {}
    return str(args.get('phase', '')) == 'open'


def censored(task, result):
    """Whether the task's output is hidden (the task's own no_log, or a result ansible censored)."""
    task_no_log = isinstance(getattr(task, 'no_log', None), bool) and task.no_log
    return bool(task_no_log or result.get('_ansible_no_log') or result.get('censored'))


def owner(txn, host):
    """The inventory host whose transaction ``txn`` is: the one it names (a delegated call) or the task's host."""
    named = txn.get('inventory_host') if isinstance(txn, dict) else None
    return str(named) if named else host


def layer_stages(data, host):
    """{host: [stage, ...]}: the rollback stages (flags, traffic, code, database) the layers of each transaction in
    this result need. A looped task (one apply per flag store) carries them in its items."""
    found = {}
    items = [data] + [item for item in (data.get('results') or []) if isinstance(item, dict)]
    for item in items:
        stages = item.get('failsafe_layer_stages')
        if isinstance(stages, list) and stages:
            found[owner(item.get('failsafe_transaction'), host)] = [str(stage) for stage in stages]
    return found


def ladder_steps(data):
    """The steps of the escalation ladder (verify role: kill switch, traffic back, full rollback) a result reports,
    the last one the step just taken; None when it reports none."""
    ladder = (data.get('ansible_facts') or {}).get('failsafe_ladder')
    if isinstance(ladder, list) and ladder and isinstance(ladder[-1], dict):
        return [dict(step) for step in ladder if isinstance(step, dict)]
    return None


def ladder_event(step, redact):
    """The timeline fields of the escalation ladder's ``step`` (texts through ``redact``)."""
    return {'step': redact(str(step.get('step'))), 'outcome': redact(str(step.get('outcome'))),
            'detail': redact(str(step['msg'])) if step.get('msg') else None}


def self_revert_event(facts):
    """The timeline fields of a host that reverted a transaction by itself, from the ``facts`` it kept."""
    return {'txid': facts.get('txid'), 'release': facts.get('release'), 'cause': facts.get('cause'),
            'outcome': facts.get('outcome'), 'reverted_at': facts.get('finished_iso')}


def awx_job_id(play):
    """The AWX / controller job id of the run (the ``awx_job_id`` or ``tower_job_id`` extra var), or None. Only
    this one key is read: extra vars are never recorded wholesale."""
    try:
        extra = play.get_variable_manager().extra_vars
        return extra.get('awx_job_id') or extra.get('tower_job_id')
    except Exception:  # pylint: disable=broad-except
        return None


def inventory_host(play, name):
    """The inventory Host object named ``name`` (a delegated task's target), or None when it is not in the
    inventory."""
    try:
        inventory = getattr(play.get_variable_manager(), '_inventory', None)
        return inventory.get_host(name) if inventory is not None else None
    except Exception:  # pylint: disable=broad-except
        return None


def host_templar(play, host):
    """A Templar with the variables ``host`` has in ``play``: play keywords may be templates, which ansible resolves
    per host when a task runs."""
    from ansible.template import Templar
    manager = play.get_variable_manager()
    loader = getattr(manager, '_loader', None) or getattr(play, '_loader', None)
    return Templar(loader=loader, variables=manager.get_vars(play=play, host=host))


def host_connection(play, play_connection, host, host_obj, warn):
    """The connection keywords of ``play`` (``play_connection``) for ``host``, templates resolved with its variables.
    A value that does not resolve is left out with a warning (the child then decides that keyword as a play without
    it)."""
    settings = dict(play_connection)
    templar = None
    for keyword, value in list(settings.items()):
        try:
            if _launcher.is_template(value):
                if templar is None:
                    templar = host_templar(play, host_obj)
                value = templar.template(value)
                if _launcher.is_template(value):
                    raise ValueError('%r is not a trusted template' % value)
            settings[keyword] = _launcher.normalize_connection({keyword: value}).get(keyword)
        except Exception as exc:  # pylint: disable=broad-except
            settings.pop(keyword)
            warn('could not resolve the play keyword %s for %s: %s: %s; the rollback decides it from the '
                 'inventory and command line alone' % (keyword, host, type(exc).__name__, exc))
    return dict((k, v) for k, v in settings.items() if v is not None)


def opened_connection(result, host, txn_host, play, play_connection, warn):
    """The connection keywords the rollback of ``txn_host`` needs, whose transaction ``result`` (a task of ``host``,
    maybe delegated to ``txn_host``) opened: those of the play, resolved for that host; as the play has them when the
    host is not in the inventory."""
    host_obj = result_host(result) if txn_host == host else inventory_host(play, txn_host)
    if host_obj is None:
        return dict(play_connection)
    return host_connection(play, play_connection, txn_host, host_obj, warn)
