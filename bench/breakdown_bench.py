# -*- coding: utf-8 -*-
# Copyright: Contributors to failsafe.deploy
# SPDX-License-Identifier: GPL-3.0-or-later
"""Bench part ``breakdown``: where a module call's time goes on the host, for each phase of a good deploy and for
the rollback call of a failed one, on one host of the namespace fleet (FleetBench's plumbing).

Every module run on that host goes through an interpreter wrapper (``ansible_python_interpreter``, passed on to the
rollback child with the other extra vars) that notes the AnsiballZ payload's size and starts the interpreter with a
``sitecustomize`` first on its path. That wraps the functions of each category below (no profiler: only those
functions pay a timer call) and charges every moment of the run to the innermost category running, so the
categories add up to the call's time without counting anything twice: imports (every ``import`` statement's
``_find_and_load``), snapshot capture / restore / verification, the release and service layers (the service
manager's commands and their waits), health probes, journal and ledger writes, fsync, and ``other`` (AnsiballZ's
unpacking, argument checks, the engine's own logic, the result's output). The interpreter's start (process start to
the sitecustomize, from /proc) is counted apart. Each run is matched to the task that started it (the last task
started on the controller before it). Python programs the module starts (supervisorctl, the commit-confirmed
watchdog) inherit the sitecustomize and are timed as rows of their own, named by their program."""

import glob
import json
import os

from common import ROOT

# The wrapper (host side): the payload from stdin (pipelining) into a file, its size and module name noted, then the
# interpreter with the profiling sitecustomize first on its path.
WRAPPER = '''#!/bin/sh
# Interpreter of the benchmark's breakdown part (bench/breakdown_bench.py).
dir=%(dir)s
payload=$(mktemp "$dir/payload.XXXXXX")
cat > "$payload"
name=$(grep -o -m1 "ansible_collections[.][a-z_]*[.][a-z_]*[.]plugins[.]modules[.][a-z_]*" "$payload" | head -n1)
[ -n "$name" ] || name=$(grep -o -m1 "ansible[.]modules[.][a-z_]*" "$payload" | head -n1)
echo "$(date +%%s.%%N) $$ $(wc -c < "$payload") ${name:-unknown}" >> "$dir/payloads.txt"
PYTHONPATH="$dir/site" FAILSAFE_BENCH_PROFILE_OUT="$dir/out" /usr/bin/python3 "$payload"
rc=$?
rm -f "$payload"
exit "$rc"
'''

SITECUSTOMIZE = '''# Times the module run by category (bench/breakdown_bench.py), from before its first import to its exit.
import atexit
import json
import os
import sys
import time

_out = os.environ.get('FAILSAFE_BENCH_PROFILE_OUT')
# module name suffix -> [(class or '', function, category)]
_TARGETS = %(targets)r


def _install():
    import importlib._bootstrap as bootstrap
    clock = time.perf_counter
    totals = {}
    stack = [['other', clock()]]   # the innermost category running is charged

    def enter(category):
        now = clock()
        top = stack[-1]
        totals[top[0]] = totals.get(top[0], 0.0) + now - top[1]
        stack.append([category, now])

    def leave():
        now = clock()
        category, since = stack.pop()
        totals[category] = totals.get(category, 0.0) + now - since
        stack[-1][1] = now

    def wrap(func, category):
        def timed(*args, **kwargs):
            enter(category)
            try:
                return func(*args, **kwargs)
            finally:
                leave()
        timed.__wrapped__ = func
        return timed

    def patch(name, module):
        for suffix, targets in _TARGETS.items():
            if not name.endswith(suffix):
                continue
            for owner_name, func_name, category in targets:
                owner = getattr(module, owner_name, None) if owner_name else module
                func = getattr(owner, func_name, None) if owner is not None else None
                if func is not None and not hasattr(func, '__wrapped__'):
                    setattr(owner, func_name, wrap(func, category))

    find_and_load = bootstrap._find_and_load

    def timed_find_and_load(name, import_):
        enter('imports')
        try:
            module = find_and_load(name, import_)
        finally:
            leave()
        patch(name, module)
        return module

    bootstrap._find_and_load = timed_find_and_load
    os.fsync = wrap(os.fsync, 'fsync')
    started = time.time()
    try:
        with open('/proc/self/stat') as handle:
            ticks = int(handle.read().rsplit(')', 1)[1].split()[19])
        with open('/proc/uptime') as handle:
            uptime = float(handle.read().split()[0])
        age = max(0.0, uptime - ticks / float(os.sysconf('SC_CLK_TCK')))
    except (OSError, ValueError, IndexError):
        age = 0.0

    def dump():
        now = clock()
        while len(stack) > 1:
            leave()
        totals['other'] = totals.get('other', 0.0) + now - stack[0][1]
        path = os.path.join(_out, '%%.6f-%%d.json' %% (started, os.getppid()))
        with open(path, 'w') as handle:
            json.dump({'started': started, 'interpreter_start': age, 'seconds': sum(totals.values()),
                       'categories': totals, 'program': os.path.basename(sys.argv[0] if sys.argv else '')}, handle)

    atexit.register(dump)


if _out:
    _install()
'''

# module name suffix -> what is timed there: (class or '' for the module, function, category)
TARGETS = {
    'module_utils._snapshot': [('SnapshotStore', 'capture', 'snapshot capture'),
                               ('SnapshotStore', 'restore', 'snapshot restore'),
                               ('SnapshotStore', 'verify', 'snapshot verify')],
    'module_utils._health': [('', 'run_checks', 'health probes')],
    'module_utils.kinds.service': [('ServiceLayer', name, 'service layer (manager and waits)')
                                   for name in ('capture', 'apply', 'undo', 'verify')],
    'module_utils.kinds.release': [('ReleaseLayer', name, 'release layer')
                                   for name in ('capture', 'apply', 'undo', 'verify')],
    'module_utils._release': [('', 'ensure_staged', 'staging (unpack)'),
                              ('ReleaseRoot', 'save_ledger', 'journal and ledger writes')],
    'module_utils._journal': [('DeployState', name, 'journal and ledger writes')
                              for name in ('write_journal', 'append_history', 'write_lock', 'create_lock',
                                           'remove_lock')],
}
CATEGORIES = ('imports', 'staging (unpack)', 'snapshot capture', 'snapshot restore', 'snapshot verify',
              'release layer', 'service layer (manager and waits)', 'health probes', 'journal and ledger writes',
              'fsync', 'other')


class BreakdownBench(object):
    def __init__(self, fleet):
        self.fleet = fleet  # a FleetBench whose fleet is up
        self.ctx = fleet.ctx
        self.dir = '/srv/bench-prof'

    def _install(self, host):
        base = self.fleet.fleet.host_path(host, self.dir)
        for sub in ('site', 'out'):
            os.makedirs(os.path.join(base, sub), exist_ok=True)
        with open(os.path.join(base, 'site', 'sitecustomize.py'), 'w') as handle:
            handle.write(SITECUSTOMIZE % {'targets': TARGETS})
        with open(os.path.join(base, 'python'), 'w') as handle:
            handle.write(WRAPPER % {'dir': self.dir})
        os.chmod(os.path.join(base, 'python'), 0o755)
        self._clear(base)
        return base

    @staticmethod
    def _clear(base):
        for stale in glob.glob(os.path.join(base, 'out', '*.json')) + [os.path.join(base, 'payloads.txt')]:
            if os.path.exists(stale):
                os.unlink(stale)

    def _collect(self, base, events):
        """One row per module run on the host: its task (and the pid of the playbook that ran it), module, payload
        size, interpreter start, seconds and categories; then the host's files are cleared for the next run."""
        payloads = {}
        path = os.path.join(base, 'payloads.txt')
        if os.path.exists(path):
            with open(path) as handle:
                for line in handle:
                    parts = line.split()
                    if len(parts) == 4:
                        payloads[int(parts[1])] = (int(parts[2]), parts[3])
        starts = sorted((e['t'], e['task'], e['pid']) for e in events if e['event'] == 'task_start')
        rows = []
        for name in sorted(glob.glob(os.path.join(base, 'out', '*.json'))):
            with open(name) as handle:
                run = json.load(handle)
            ppid = int(os.path.basename(name)[:-len('.json')].split('-')[1])
            task = [(t, label, pid) for t, label, pid in starts if t <= run['started']]
            # a run with no payload of its own is a Python program the module started (supervisorctl, the
            # commit-confirmed watchdog): it inherited the wrapper's environment, so it is timed too
            size, module = payloads.get(ppid, (None, run.get('program') or '?'))
            rows.append({'task': task[-1][1] if task else '?', 'pid': task[-1][2] if task else None,
                         'module': module.rsplit('.', 1)[-1],
                         'payload_kb': round(size / 1024.0, 1) if size else None,
                         'interpreter_start': round(run['interpreter_start'], 3),
                         'seconds': round(run['seconds'], 3),
                         'categories': dict((k, round(v, 4)) for k, v in run['categories'].items())})
        self._clear(base)
        return rows

    def _deploy(self, host, version, interpreter):
        fb = self.fleet
        return fb.playbook('failsafe.deploy.deploy', [host], fb.cfg_cb,
                           ['@' + os.path.join(ROOT, 'tests/fleet/app-vars.yml'), 'release_version=%s' % version,
                            'failsafe_activate_before_tasks={{ role_path }}/tasks/empty.yml', interpreter])

    def run(self):
        fb = self.fleet
        host = fb.fleet.names[0]
        fb.extra_env = {}
        if fb.current is None or not fb._back([host], fb.current):  # pylint: disable=protected-access
            version = fb.next_good()
            res = fb.deploy([host], version, fb.cfg_cb)
            fb.check(res['rc'] == 0, 'setup deploy of %s failed' % version)
        base = self._install(host)
        interpreter = 'ansible_python_interpreter=%s/python' % self.dir
        # a good deploy, every module run timed
        version = fb.next_good()
        res = self._deploy(host, version, interpreter)
        fb.check(res['rc'] == 0 and fb.host_release(host) == version, 'timed deploy of %s failed' % version)
        deploy_rows = self._collect(base, res['events'])
        # a failing deploy and its rollback (the rollback child gets the same extra vars: its runs are timed too)
        good = fb.current
        res = self._deploy(host, fb.next_bad(), interpreter)
        fb.check(res['rc'] != 0, 'the unhealthy release did not fail')
        fb.check(fb._back([host], good), 'not back on %s after the timed rollback' % good)  # pylint: disable=W0212
        parent = res['events'][0]['pid']
        rows = self._collect(base, res['events'])
        rollback_rows = [r for r in rows if r['pid'] is not None and r['pid'] != parent]
        failing_rows = [r for r in rows if r not in rollback_rows]
        fb.check(deploy_rows and rollback_rows, 'no timed module run (deploy %d, rollback %d)'
                 % (len(deploy_rows), len(rollback_rows)))
        return {'host': host, 'deploy': deploy_rows, 'failing_deploy': failing_rows, 'rollback': rollback_rows,
                'categories': list(CATEGORIES)}
