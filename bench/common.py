# -*- coding: utf-8 -*-
# Copyright: Contributors to failsafe.deploy
# SPDX-License-Identifier: GPL-3.0-or-later
"""Shared plumbing of the benchmarks: timed runs with process-tree memory sampling, statistics, ansible configs."""

import json
import os
import resource
import statistics
import subprocess
import threading
import time

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
PAGE_KB = os.sysconf('SC_PAGE_SIZE') // 1024


def stats(values):
    values = [v for v in values if v is not None]
    if not values:
        return None
    return {'median': round(statistics.median(values), 4), 'min': round(min(values), 4),
            'max': round(max(values), 4), 'n': len(values), 'runs': [round(v, 4) for v in values]}


def ratio(a, b):
    if not a or not b:
        return None
    return round(a['median'] / b['median'], 4)


def _proc_table():
    table = {}
    for name in os.listdir('/proc'):
        if not name.isdigit():
            continue
        try:
            with open('/proc/%s/stat' % name) as handle:
                raw = handle.read()
            fields = raw[raw.rfind(')') + 2:].split()
            table[int(name)] = (int(fields[1]), int(fields[21]) * PAGE_KB)   # ppid, rss kB
        except (OSError, IndexError, ValueError):
            continue
    return table


def _cmdline(pid):
    try:
        with open('/proc/%d/cmdline' % pid, 'rb') as handle:
            return handle.read().replace(b'\0', b' ').decode('utf-8', 'replace')
    except OSError:
        return ''


class TreeSampler(threading.Thread):
    """Samples the summed RSS of a process and all its descendants every `interval` seconds."""

    def __init__(self, pid, interval=0.1, match=None):
        super(TreeSampler, self).__init__(daemon=True)
        self.pid, self.interval, self.match = pid, interval, match
        self.peak_kb = 0
        self.peak_match_kb = 0
        self._halt = threading.Event()
        self._seen = {}

    def run(self):
        while not self._halt.is_set():
            table = _proc_table()
            children = {}
            for pid, (ppid, dummy) in table.items():
                children.setdefault(ppid, []).append(pid)
            total, todo = 0, [self.pid]
            while todo:
                pid = todo.pop()
                if pid in table:
                    total += table[pid][1]
                    if self.match:
                        if pid not in self._seen:
                            self._seen[pid] = self.match in _cmdline(pid)
                        if self._seen[pid]:
                            self.peak_match_kb = max(self.peak_match_kb, table[pid][1])
                todo.extend(children.get(pid, ()))
            self.peak_kb = max(self.peak_kb, total)
            self._halt.wait(self.interval)

    def stop(self):
        self._halt.set()
        self.join()


def run(cmd, env=None, cwd=ROOT, log=None, match=None, timeout=1800):
    """Run cmd; return dict(rc, seconds, start, end, peak_rss_kb[, peak_match_kb])."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    out = open(log, 'ab') if log else subprocess.DEVNULL
    try:
        if log:
            out.write(('\n$ %s\n' % ' '.join(cmd)).encode())
            out.flush()
        cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.time()
        proc = subprocess.Popen(cmd, env=full_env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
        sampler = TreeSampler(proc.pid, match=match)
        sampler.start()
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            rc = proc.wait()
        end = time.time()
        cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        sampler.stop()
    finally:
        if log:
            out.close()
    # CPU time (user + system) of the process and every descendant it waited for: less noisy than wall time
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    result = {'rc': rc, 'seconds': end - start, 'start': start, 'end': end, 'peak_rss_kb': sampler.peak_kb,
              'cpu_seconds': cpu}
    if match:
        result['peak_match_kb'] = sampler.peak_match_kb
    return result


def read_times(path):
    events = []
    if os.path.exists(path):
        with open(path) as handle:
            for line in handle:
                try:
                    events.append(json.loads(line))
                except ValueError:
                    pass
    return events


def task_durations(events, pid=None):
    """Per task name: seconds from its task_start to the next task_start (or stats) of the same process."""
    durations = {}
    mine = [e for e in events if e['event'] in ('task_start', 'stats') and (pid is None or e['pid'] == pid)]
    for here, nxt in zip(mine, mine[1:]):
        if here['event'] == 'task_start':
            durations[here['task']] = durations.get(here['task'], 0.0) + nxt['t'] - here['t']
    return durations


# actions that run on the controller only (no module on the host, no round trip)
_LOCAL = ('assert', 'debug', 'fail', 'set_fact', 'set_stats', 'include_tasks', 'include_role', 'import_tasks',
          'import_role', 'include_vars', 'meta', 'validate_argument_spec', 'pause')
LOCAL_ACTIONS = frozenset(_LOCAL) | frozenset('ansible.builtin.' + name for name in _LOCAL)


def remote_runs(events):
    """Per host: tasks that ran on the host (one per task result, or per loop item of a loop), from bench_times
    events. Skipped tasks and controller-only actions are not counted."""
    looped = set((e['host'], e['task']) for e in events if e['event'] == 'item')
    counts = {}
    for e in events:
        if e['event'] not in ('result', 'item'):
            continue
        if e.get('status') == 'skipped' or e.get('action') in LOCAL_ACTIONS:
            continue
        if e['event'] == 'result' and (e['host'], e['task']) in looped:
            continue
        counts[e['host']] = counts.get(e['host'], 0) + 1
    return counts


def write_cfg(path, callbacks, forks=30, extra=''):
    """An ansible.cfg for one side of a comparison. Both sides get the settings examples/ansible.cfg recommends
    for speed (SSH pipelining; ansible's default ControlPersist), so a ratio compares the work, not the setup."""
    with open(path, 'w') as handle:
        handle.write('[defaults]\n%sinterpreter_python = auto_silent\n'
                     'retry_files_enabled = false\nforks = %d\n%s\n'
                     '[ssh_connection]\npipelining = True\n\n'
                     '[failsafe_auto_rollback]\nrollback_scope = opened\nrollback_timeout = 600\n'
                     % ('callbacks_enabled = %s\n' % ', '.join(callbacks) if callbacks else '', forks, extra))
    return path


def du_kb(path):
    """Disk blocks really used under path (kB), hard links counted once."""
    if not os.path.exists(path):
        return 0
    out = subprocess.run(['du', '-sk', path], capture_output=True, text=True, check=True).stdout
    return int(out.split()[0])


def loadavg():
    with open('/proc/loadavg') as handle:
        return [float(x) for x in handle.read().split()[:3]]
