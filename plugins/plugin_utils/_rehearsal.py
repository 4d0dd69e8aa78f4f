# -*- coding: utf-8 -*-
# Private to this collection: not a public API.
# Copyright: Contributors to failsafe.deploy
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The rehearsal record store: where failsafe.deploy.rehearse writes what a rehearsal of a release archive did in
staging, and what the production preflight reads to let that archive through (``failsafe_require_rehearsal``).

One record per archive, named by the archive's sha256 (``<store>/<sha256>.json``): the archive is the thing
rehearsed, whatever release id it carries. A record passes when the rehearsal drilled the release's rollback (the
release deployed over what staging runs, a failure injected after its activation, rolled back by the callback, the
restore proven) and then deployed it with its checks, every step ok.
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import json
import os
import re
import subprocess
import time

from ansible_collections.failsafe.deploy.plugins.module_utils._atomic import atomic_write_bytes
from ansible_collections.failsafe.deploy.plugins.plugin_utils import _launcher

# the steps a passing rehearsal has done, each ok, in this order
STEPS = ('drill', 'restore_proven', 'deploy')
_SHA256 = re.compile(r'^[0-9a-f]{64}$')


def staging_hosts(task_vars, name):
    """The staging hosts ``name`` stands for: the hosts of that inventory group, or ``name`` when it is a host."""
    hosts = list((task_vars.get('groups') or {}).get(name) or [])
    if not hosts and name in (task_vars.get('hostvars') or {}):
        hosts = [name]
    return hosts


def record_path(store, sha256):
    """Where the record of the archive ``sha256`` lives in ``store``."""
    if not _SHA256.match(str(sha256 or '')):
        raise ValueError('not a sha256: %r' % (sha256,))
    return os.path.join(os.path.expanduser(store), '%s.json' % sha256)


def read_record(store, sha256):
    """The record of that archive, or None when the store has none (or it cannot be read as JSON)."""
    try:
        with open(record_path(store, sha256), 'rb') as handle:
            record = json.loads(handle.read().decode('utf-8'))
    except (IOError, OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def write_record(store, record):
    """Write ``record`` (its ``archive_sha256`` names it) into ``store``, atomically; returns its path."""
    path = record_path(store, record.get('archive_sha256'))
    directory = os.path.dirname(path)
    if not os.path.isdir(directory):
        os.makedirs(directory, 0o700)
    record = dict(record, record=path, passed=passed(record))
    atomic_write_bytes(path, (json.dumps(record, indent=2, sort_keys=True) + '\n').encode('utf-8'), mode=0o600,
                       controller=True)
    return path


def passed(record):
    """Whether a record shows a passing rehearsal: every step of STEPS done and ok. A failed drill fails the
    rehearsal whatever the deploys did."""
    if not isinstance(record, dict):
        return False
    outcomes = dict((s.get('name'), s.get('outcome')) for s in record.get('steps') or () if isinstance(s, dict))
    return all(outcomes.get(step) == 'ok' for step in STEPS)


def missing(record, store, sha256, release):
    """Why the archive ``sha256`` of ``release`` has no passing rehearsal, in words; None when it has one."""
    if record is None:
        return ('release %s (archive sha256 %s) has no rehearsal record in %s: rehearse it in staging first '
                '(failsafe.deploy.rehearse)' % (release, sha256, store))
    if passed(record):
        return None
    outcomes = dict((s.get('name'), s.get('outcome')) for s in record.get('steps') or () if isinstance(s, dict))
    bad = ['%s %s' % (step, outcomes.get(step) or 'not done') for step in STEPS if outcomes.get(step) != 'ok']
    return ('the rehearsal of release %s (archive sha256 %s) did not pass (%s; record %s)'
            % (release, sha256, ', '.join(bad), record_path(store, sha256)))


# --- the rehearsal itself -------------------------------------------------------------------------------------------

# The verify step's first task, in the drill: a failure after the activation (relative to the verify role).
DRILL_TASKS = '{{ role_path }}/tasks/drill.yml'
DRILL_TASK_NAME = 'Fail on purpose after the activation (rehearsal drill)'


def child_command(ansible_playbook, playbook, cliargs, hosts, extra, defaults=None):
    """argv of one step: the deploy playbook on the staging ``hosts`` with this run's inventory, connection options
    and extra vars (production's settings), then the step's own ``extra`` (later extra vars win)."""
    cliargs = cliargs or {}
    cmd = [ansible_playbook, playbook]
    for source in _launcher._as_list(cliargs.get('inventory')):
        cmd += ['-i', str(source)]
    cmd += _launcher.pass_through(cliargs, defaults)
    for value in _launcher._as_list(cliargs.get('extra_vars')):
        cmd += ['-e', str(value)]
    cmd += ['--limit', hosts]
    cmd += ['-e', json.dumps(dict({'failsafe_hosts': hosts, 'failsafe_require_rehearsal': False}, **extra),
                             sort_keys=True)]
    return cmd


def _run(cmd, env, log_path, timeout):
    started = time.time()
    with open(log_path, 'wb') as log:
        log.write(('$ %s\n' % _launcher.command_line(_launcher.shown_command(cmd))).encode('utf-8'))
        log.flush()
        try:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env)
        except OSError as exc:
            log.write(('cannot start: %s\n' % exc).encode('utf-8'))
            return None, round(time.time() - started, 3)
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            log.write(('stopped after %s s\n' % timeout).encode('utf-8'))
            rc = None
    return rc, round(time.time() - started, 3)


def proven(report):
    """Whether a drill's incident report shows the deploy rolled back and the restore verified on every host."""
    if not isinstance(report, dict) or report.get('outcome') != 'rolled_back':
        return False
    hosts = (report.get('rollback') or {}).get('hosts') or {}
    return bool(hosts) and all(isinstance(h, dict) and h.get('status') == 'ok' and h.get('verified') is True
                               for h in hosts.values())


def _reports(directory):
    found = []
    for name in sorted(os.listdir(directory)) if os.path.isdir(directory) else ():
        if re.match(r'^inc-[^.]+\.json$', name):
            try:
                with open(os.path.join(directory, name), 'rb') as handle:
                    found.append(json.loads(handle.read().decode('utf-8')))
            except (IOError, OSError, ValueError):
                continue
    return found


def rehearse(release, archive, hosts, store, playbook, cliargs, env, build, staging_hosts, timeout=1800,
             ansible_playbook=None, defaults=None):
    """Run the steps of a rehearsal and write its record; returns the record. ``build`` is the archive's build
    record (_build.build_of), ``staging_hosts`` the inventory names ``hosts`` matches."""
    sha = build['archive_sha256']
    work = os.path.join(os.path.expanduser(store), '%s.d' % sha, time.strftime('%Y%m%dT%H%M%SZ', time.gmtime()))
    os.makedirs(work, 0o700)
    ansible_playbook = ansible_playbook or _launcher.default_ansible_playbook()
    started = time.time()
    steps = []

    def step(name, extra, reports=None):
        child_env = _launcher.build_env(env, os.path.join(work, '%s.rollback.json' % name),
                                        callbacks_enabled=(env.get('ANSIBLE_CALLBACKS_ENABLED') or '').split(','))
        for key in ('FAILSAFE_RUN_ID', 'FAILSAFE_CONTROLLER_PID', _launcher.CHILD_ENV, _launcher.RESULT_ENV):
            child_env.pop(key, None)
        child_env['FAILSAFE_REPORT_DIR'] = reports or os.path.join(work, '%s.reports' % name)
        log = os.path.join(work, '%s.log' % name)
        cmd = child_command(ansible_playbook, playbook, cliargs, hosts, extra, defaults)
        rc, duration = _run(cmd, child_env, log, timeout)
        return {'name': name, 'rc': rc, 'duration': duration, 'log': log}

    def not_run(name):
        steps.append({'name': name, 'outcome': 'not run', 'rc': None, 'duration': 0.0, 'log': None})

    # the drill: the release deployed over what staging runs, as production will deploy it over what it runs, and a
    # failure injected after its activation (forced past a quarantine an earlier rehearsal left in staging)
    drill_reports = os.path.join(work, 'drill.reports')
    drill = step('drill', {'failsafe_release_id': release, 'failsafe_force': True,
                           'failsafe_force_reason': 'rehearsal drill: a failure injected after the activation',
                           'failsafe_verify_before_tasks': DRILL_TASKS}, reports=drill_reports)
    reports = _reports(drill_reports)
    drill['incident'] = reports[-1].get('incident_id') if reports else None
    # the drill fails by design: it is ok when the run failed at the injected task (and no other failed)
    tasks = [str(f.get('task') or '') for r in reports for f in r.get('failures') or ()]
    injected = bool(tasks) and all(t.endswith(DRILL_TASK_NAME) for t in tasks)
    drill['outcome'] = 'ok' if drill['rc'] not in (0, None) and injected else 'failed'
    steps.append(drill)
    restore = {'name': 'restore_proven', 'rc': None, 'duration': 0.0, 'log': drill['log'],
               'outcome': 'ok' if drill['outcome'] == 'ok' and reports and proven(reports[-1]) else 'failed'}
    if reports:
        restore['verification'] = (reports[-1].get('summary') or {}).get('verification')
    steps.append(restore)
    if restore['outcome'] == 'ok':
        # deployed again, with its checks: forced past the quarantine the drill left in staging
        deploy = step('deploy', {'failsafe_release_id': release, 'failsafe_force': True,
                                 'failsafe_force_reason': 'rehearsal: the deploy after the drill'})
        deploy['outcome'] = 'ok' if deploy['rc'] == 0 else 'failed'
        steps.append(deploy)
    else:
        not_run('deploy')
    finished = time.time()
    record = dict(build, release=release, archive=archive, staging_hosts=list(staging_hosts), hosts_pattern=hosts,
                  playbook=playbook, steps=steps, started=round(started, 3), finished=round(finished, 3),
                  started_iso=_iso(started), finished_iso=_iso(finished), work_dir=work)
    record['record'] = write_record(store, record)
    record['passed'] = passed(record)
    return record


def _iso(t):
    return time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(t))
