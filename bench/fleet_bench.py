# -*- coding: utf-8 -*-
# Copyright: Contributors to failsafe.deploy
# SPDX-License-Identifier: GPL-3.0-or-later
"""Benchmarks on the namespace SSH fleet: fleet scaling (good deploys vs a copy-and-symlink playbook), time to
recover (auto_rollback vs a hand-written rollback started right after the same failure), and the time from the
controller's death right after the switch to every host back on the previous release by itself (commit confirmed):
on the fleet's supervisor hosts, whose revert timer is a watchdog process, and on hosts that run systemd as their
PID 1, the app a systemd unit and the revert timer a transient systemd timer."""

import glob
import json
import os
import signal
import subprocess
import sys
import time

from common import BENCH, ROOT, read_times, remote_runs, run, stats, ratio, task_durations, write_cfg

sys.path.insert(0, ROOT)
from tests.fleet import Fleet  # noqa: E402  pylint: disable=wrong-import-position
from tests.fleet.fleet import ensure_prereqs  # noqa: E402  pylint: disable=wrong-import-position

# Targets (docs: the transaction engine): a good deploy at most 1.5x the copy-and-symlink baseline and at most 10
# tasks on each host; time to recover at most 1.0x the bare symlink-and-restart baseline, at most 3 tasks per host.
SCALING_TARGET = 1.3
DEPLOY_TASKS_TARGET = 10
RECOVERY_TARGET = 1.0
ROLLBACK_TASKS_TARGET = 3

FLEET_NAME = os.environ.get('FAILSAFE_BENCH_FLEET', 'fsb')  # the smoke test uses its own, so both can run at once
VENV_BIN = os.path.dirname(sys.executable)
SUPERVISORCTL = os.path.join(VENV_BIN, 'supervisorctl')
# The hook that holds the verify step on one host (every host has switched by then) while the controller is killed.
HOLD_HOOK = os.path.join(ROOT, 'tests', 'behaviour', 'fault_hooks', 'fault.yml')
HOLD_MARKER = '/srv/bench-held'
# The example app's settings: under supervisor on the fleet's hosts, as a systemd unit on init='systemd' hosts.
APP_VARS = os.path.join(ROOT, 'tests/fleet/app-vars.yml')
SYSTEMD_APP_VARS = os.path.join(BENCH, 'systemd-app-vars.yml')


class FleetBench(object):
    def __init__(self, ctx):
        self.ctx = ctx
        self.work = os.path.join(ctx.work, 'fleet')
        self.dist = os.path.join(self.work, 'dist')
        self.reports = os.path.join(self.work, 'incidents')
        self.log = os.path.join(self.work, 'ansible.log')
        self.times = os.path.join(self.work, 'times.jsonl')
        for d in (self.work, self.dist, self.reports):
            os.makedirs(d, exist_ok=True)
        self.cfg_cb = write_cfg(os.path.join(self.work, 'cb.cfg'), ['failsafe.deploy.auto_rollback', 'bench_times'])
        self.cfg_plain = write_cfg(os.path.join(self.work, 'plain.cfg'), ['bench_times'])
        self.fleet = None
        self.good = 0
        self.bad = 0
        self.current = None
        self.base_ready = set()
        self.extra_env = {}  # set by a part that runs the same playbooks otherwise (the mitogen part: a strategy)
        self.app_vars = APP_VARS  # SYSTEMD_APP_VARS while the systemd hosts are measured

    # ------------------------------------------------------------------ plumbing
    def build_releases(self, good, bad):
        args = [sys.executable, os.path.join(ROOT, 'examples/app/build.py'), '--out', self.dist,
                '--files', str(self.ctx.app_files)]
        for k in range(good):
            args += ['--release', '1.0.%d=good' % k]
        for k in range(bad):
            args += ['--release', '9.0.%d=unhealthy' % k]
        subprocess.run(args, check=True, stdout=subprocess.DEVNULL)

    def env(self, cfg):
        env = dict(self.fleet.env())
        env.update(ANSIBLE_CONFIG=cfg, ANSIBLE_COLLECTIONS_PATH=self.ctx.collections,
                   ANSIBLE_CALLBACK_PLUGINS=os.path.join(BENCH, 'callback_plugins'),
                   FAILSAFE_DIST=self.dist, FAILSAFE_VENV_BIN=VENV_BIN, FAILSAFE_REPORT_DIR=self.reports,
                   FAILSAFE_SPOOL_PATH=os.path.join(self.reports, 'alerts.jsonl'), BENCH_TIMES_FILE=self.times)
        env.update(self.extra_env)
        return env

    def playbook(self, playbook, hosts, cfg, extra=(), match=None):
        if os.path.exists(self.times):
            os.unlink(self.times)
        cmd = [os.path.join(VENV_BIN, 'ansible-playbook'), '-i', self.fleet.inventory_path,
               '--limit', ','.join(hosts), playbook, '-e', 'supervisorctl=%s' % SUPERVISORCTL]
        for item in extra:
            cmd += ['-e', item]
        result = run(cmd, env=self.env(cfg), log=self.log, match=match)
        result['events'] = read_times(self.times)
        return result

    def deploy(self, hosts, version, cfg, serial=None):
        # The test fixture's per-release changes (a before-activate hook) are the tests' business, not what a deploy
        # costs: the benchmark runs the role's own empty hook, as an operator's deploy without hooks would.
        return self.playbook('failsafe.deploy.deploy', hosts, cfg,
                             ['@' + self.app_vars, 'release_version=%s' % version,
                              'failsafe_activate_before_tasks={{ role_path }}/tasks/empty.yml']
                             + (['failsafe_serial=%d' % serial] if serial else []))

    def host_release(self, host):
        """The release the host's current link names, or None when nothing was deployed there yet."""
        try:
            return os.path.basename(os.readlink(self.fleet.host_path(host, '/srv/app/current')))
        except OSError:
            return None

    def healthy(self, host, port=8080):
        code = ('import urllib.request,sys; r=urllib.request.urlopen("http://127.0.0.1:%d/health",timeout=3); '
                'sys.stdout.write(r.read().decode())' % port)
        proc = self.fleet.run(host, ['/usr/bin/python3', '-c', code])
        return proc.returncode == 0 and '"ok"' in proc.stdout

    def check(self, ok, what):
        if not ok:
            raise RuntimeError('%s (see %s)' % (what, self.log))

    # ------------------------------------------------------------------ the run
    def up(self):
        mitogen = getattr(self.ctx, 'mitogen_hosts', [])
        transport = getattr(self.ctx, 'transport_hosts', [])
        breakdown = 1 if getattr(self.ctx, 'breakdown', False) else 0
        n = max(self.ctx.scaling_hosts + self.ctx.recovery_hosts + self.ctx.confirm_hosts + mitogen + transport
                + [breakdown])
        # commit confirmed: a setup deploy and the one killed, on the supervisor hosts and again on systemd hosts
        good = 2 + sum(self.ctx.reps_for(h) for h in self.ctx.scaling_hosts) + 4 * len(self.ctx.confirm_hosts)
        # the mitogen part: a setup deploy, then a good and a failing deploy per strategy and repeat
        good += len(mitogen) * (1 + 2 * getattr(self.ctx, 'mitogen_reps', 0))
        bad = 2 * sum(self.ctx.recovery_reps_for(h) for h in self.ctx.recovery_hosts)
        bad += len(mitogen) * 2 * getattr(self.ctx, 'mitogen_reps', 0)
        # the transport part: a setup deploy, then a good and a failing deploy per SSH setting (three) and repeat
        good += len(transport) * (1 + 3 * getattr(self.ctx, 'transport_reps', 0))
        bad += len(transport) * 3 * getattr(self.ctx, 'transport_reps', 0)
        # the breakdown part: a setup deploy, a timed good deploy and a timed failing one
        good += 2 * breakdown
        bad += breakdown
        self.build_releases(good=good, bad=bad)
        # stock hosts: without the test fleet's module_utils bytecode cache (tests/fleet), which a host does not have
        self.fleet = Fleet(n, name=FLEET_NAME, base_dir=os.path.join(self.work, 'fleet'), bytecode_cache=False)
        self.fleet.up()
        return {'hosts': n}

    def setup_baseline(self, hosts):
        """Untimed: the baseline app on hosts the collection has deployed to (its first deploy starts supervisord)."""
        todo = [h for h in hosts if h not in self.base_ready]
        if not todo:
            return
        setup = self.playbook(os.path.join(BENCH, 'playbooks/baseline_setup.yml'), todo, self.cfg_plain,
                              ['archive=%s' % os.path.join(self.dist, 'app-%s.tar.gz' % self.current)])
        self.check(setup['rc'] == 0, 'baseline setup failed')
        self.base_ready.update(todo)

    def down(self):
        if self.fleet is not None:
            self.fleet.down()

    def next_good(self):
        self.current = '1.0.%d' % self.good
        self.good += 1
        return self.current

    def next_bad(self):
        version = '9.0.%d' % self.bad
        self.bad += 1
        return version

    def scaling(self):
        rows = []
        for n in self.ctx.scaling_hosts:
            hosts = self.fleet.names[:n]
            serial = (getattr(self.ctx, 'scaling_waves', None) or {}).get(n)
            ours, base, peaks, slow, trips = [], [], [], {}, {'deploy': [], 'baseline': []}
            for rep in range(self.ctx.reps_for(n)):
                order = ('ours', 'base') if rep % 2 == 0 else ('base', 'ours')
                version = self.next_good()
                for which in order:
                    if which == 'ours':
                        res = self.deploy(hosts, version, self.cfg_cb, serial=serial)
                        self.check(res['rc'] == 0, 'deploy of %s on %d hosts failed' % (version, n))
                        self.check(all(self.host_release(h) == version for h in hosts), 'hosts not on %s' % version)
                        ours.append(res['seconds'])
                        peaks.append(res['peak_rss_kb'])
                        for task, secs in task_durations(res['events']).items():
                            slow.setdefault(task, []).append(secs)
                        trips['deploy'] += list(remote_runs(res['events']).values())
                    else:
                        self.setup_baseline(hosts)
                        res = self.playbook(os.path.join(BENCH, 'playbooks/baseline_deploy.yml'), hosts,
                                            self.cfg_plain, ['archive=%s' % os.path.join(
                                                self.dist, 'app-%s.tar.gz' % version), 'rid=b%s' % version]
                                            + (['bench_serial=%d' % serial] if serial else []))
                        self.check(res['rc'] == 0, 'baseline deploy on %d hosts failed' % n)
                        base.append(res['seconds'])
                        trips['baseline'] += list(remote_runs(res['events']).values())
            self.check(all(self.healthy(h) and self.healthy(h, 8081) for h in hosts), 'hosts not healthy')
            top = sorted(((sum(v) / len(v), k) for k, v in slow.items()), reverse=True)[:3]
            row = {'hosts': n, 'repeats': len(ours), 'deploy': stats(ours), 'baseline': stats(base),
                   'controller_peak_rss_mb': stats([p / 1024.0 for p in peaks]),
                   'slowest_tasks': [{'task': k, 'seconds': round(v, 2)} for v, k in top],
                   'remote_runs_per_host': dict((k, stats(v)) for k, v in trips.items())}
            row['ratio'] = ratio(row['deploy'], row['baseline'])
            row['serial'] = serial
            row['target'] = SCALING_TARGET
            row['met'] = row['ratio'] is not None and row['ratio'] <= SCALING_TARGET
            tasks = (row['remote_runs_per_host'].get('deploy') or {}).get('max')
            row['tasks_target'] = DEPLOY_TASKS_TARGET
            row['tasks_met'] = tasks is not None and tasks <= DEPLOY_TASKS_TARGET
            rows.append(row)
        return rows

    def _failing(self, hosts, cfg=None):
        """A deploy of the next unhealthy release that fails on its health check: the collection's deploy (cfg), or
        for the baseline (cfg None) a plain upload-unpack-switch-restart playbook."""
        version = self.next_bad()
        if cfg is None:
            res = self.playbook(os.path.join(BENCH, 'playbooks/baseline_fail.yml'), hosts, self.cfg_plain, [
                'archive=%s' % os.path.join(self.dist, 'app-%s.tar.gz' % version), 'rid=%s' % version])
        else:
            res = self.deploy(hosts, version, cfg)
        self.check(res['rc'] != 0, 'deploy of unhealthy %s did not fail' % version)
        fails = [e for e in res['events'] if e['event'] == 'result' and e['status'] == 'failed'
                 and e['pid'] == res['events'][0]['pid']]
        self.check(fails, 'no failed result recorded for %s' % version)
        task = fails[0]['task']
        res['fail_end'] = max(e['t'] for e in fails if e['task'] == task)
        res['fail_task'] = task
        return res

    def _back(self, hosts, good):
        return all(self.host_release(h) == good and self.healthy(h) for h in hosts)

    def recovery(self):
        rows = []
        for n in self.ctx.recovery_hosts:
            hosts = self.fleet.names[:n]
            good = self.current
            ours = {k: [] for k in ('total', 'detection', 'playbook_start', 'restore', 'verification')}
            base = {k: [] for k in ('total', 'detection', 'playbook_start', 'restore', 'verification')}
            peaks, trips = [], {'ours': [], 'baseline': []}
            for rep in range(self.ctx.recovery_reps_for(n)):
                order = ('ours', 'base') if rep % 2 == 0 else ('base', 'ours')
                for which in order:
                    if which == 'ours':
                        before = set(glob.glob(os.path.join(self.reports, 'inc-*Z-*[0-9a-f].json')))
                        res = self._failing(hosts, self.cfg_cb)
                        new = sorted(set(glob.glob(os.path.join(self.reports, 'inc-*Z-*[0-9a-f].json'))) - before)
                        self.check(len(new) == 1, 'expected one incident report, found %d' % len(new))
                        with open(new[0]) as handle:
                            incident = json.load(handle)
                        self.check(incident['outcome'] == 'rolled_back', 'incident outcome %s' % incident['outcome'])
                        self.check(self._back(hosts, good), 'hosts not back on %s and healthy' % good)
                        split = self._split_ours(res, incident)
                        peaks.append(res['peak_rss_kb'])
                        parent = res['events'][0]['pid']
                        trips['ours'] += list(remote_runs(
                            [e for e in res['events'] if e['pid'] != parent]).values())
                        for k, v in split.items():
                            ours[k].append(v)
                    else:
                        res = self._failing(hosts)
                        launched = time.time()
                        rb = self.playbook(os.path.join(BENCH, 'baseline_rollback.yml'), hosts, self.cfg_plain,
                                           ['good_release=%s' % good])
                        self.check(rb['rc'] == 0, 'baseline rollback failed')
                        self.check(self._back(hosts, good), 'baseline: hosts not back on %s' % good)
                        split = self._split_base(res, launched, rb)
                        trips['baseline'] += list(remote_runs(rb['events']).values())
                        for k, v in split.items():
                            base[k].append(v)
            row = {'hosts': n, 'repeats': len(ours['total']),
                   'ours': dict((k, stats(v)) for k, v in ours.items()),
                   'baseline': dict((k, stats(v)) for k, v in base.items()),
                   'controller_peak_rss_mb': stats([p / 1024.0 for p in peaks]),
                   'remote_runs_per_host': dict((k, stats(v)) for k, v in trips.items())}
            row['ratio'] = ratio(row['ours']['total'], row['baseline']['total'])
            row['target'] = RECOVERY_TARGET
            row['met'] = row['ratio'] is not None and row['ratio'] <= RECOVERY_TARGET
            tasks = (row['remote_runs_per_host'].get('ours') or {}).get('max')
            row['tasks_target'] = ROLLBACK_TASKS_TARGET
            row['tasks_met'] = tasks is not None and tasks <= ROLLBACK_TASKS_TARGET
            rows.append(row)
        return rows

    @staticmethod
    def _phases(fail_end, launch, child_start, verify_start, end):
        return {'total': end - fail_end, 'detection': launch - fail_end, 'playbook_start': child_start - launch,
                'restore': verify_start - child_start, 'verification': end - verify_start}

    def _split_ours(self, res, incident):
        """Phases from the incident report (timeline rollback_start/rollback_end), the rollback child's playbook
        start, and the engine's own timings per host (failsafe_rollback.timings: undo, checks, prove): the rollback
        is one task per host, so verification is the slowest host's checks and proof, counted back from the end."""
        timeline = incident['timeline']
        launch = [e['t'] for e in timeline if e['event'] == 'rollback_start'][0]
        end = [e['t'] for e in timeline if e['event'] == 'rollback_end'][0]
        parent = res['events'][0]['pid']
        child = [e for e in res['events'] if e['pid'] != parent]
        self.check(child, 'no events from the rollback child (is the environment passed on?)')
        child_start = min(e['t'] for e in child if e['event'] == 'playbook_start')
        verifying = [((info.get('restored') or {}).get('timings') or {}) for info in
                     ((incident.get('rollback') or {}).get('hosts') or {}).values()]
        verification = max([t.get('checks', 0) + t.get('prove', 0) for t in verifying] or [0])
        verify_start = max(child_start, end - verification)
        return self._phases(res['fail_end'], launch, child_start, verify_start, end)

    def _split_base(self, res, launched, rb):
        events = rb['events']
        child_start = min(e['t'] for e in events if e['event'] == 'playbook_start')
        verify_start = [e['t'] for e in events if e['event'] == 'task_start' and 'healthy' in e['task']][0]
        # the failed deploy's process has to exit before a wrapper can start the rollback: that is detection
        return self._phases(res['fail_end'], launched, child_start, verify_start, rb['end'])

    # ------------------------------------------------------------------ commit confirmed
    def serves(self, host):
        """The release the host's app answers with (its /version), or None."""
        code = ('import urllib.request,sys; r=urllib.request.urlopen("http://127.0.0.1:8080/version",timeout=3); '
                'sys.stdout.write(r.read().decode())')
        proc = self.fleet.run(host, ['/usr/bin/python3', '-c', code])
        return proc.stdout.strip() if proc.returncode == 0 else None

    def _reverted(self, host):
        """The host closed its transaction after its own revert (restore proven), not merely switched back."""
        try:
            with open(self.fleet.host_path(host, '/var/lib/failsafe-deploy/app/journal.json')) as handle:
                journal = json.load(handle)
        except (IOError, ValueError):
            return False
        return journal.get('status') == 'rolled_back' and (journal.get('confirm') or {}).get('state') == 'reverted'

    def self_revert(self):
        """Per fleet size: a deploy whose controller is SIGKILLed once every host switched (the verify step held on
        the first host); from the kill to every host back on the previous verified release and answering healthy,
        with no command run after the kill. The hosts' deadline is ctx.confirm_timeout seconds from their
        activation, so the total is mostly that wait: the row also gives each host's own revert (deadline to restore
        proven). On the fleet's hosts the app runs under supervisor and the revert timer is a watchdog process."""
        return [self._self_revert_row(n, 'process') for n in self.ctx.confirm_hosts]

    def self_revert_systemd(self):
        """The same measure on hosts whose PID 1 is systemd (tests/fleet, init='systemd'), the app a systemd unit and
        the revert timer a transient systemd timer (``systemd-run``): one fleet of the largest size, with the fleet's
        name and subnet, so it runs once the supervisor hosts are down."""
        if not self.ctx.confirm_hosts:
            return []
        ensure_prereqs(init='systemd')
        saved = (self.fleet, self.current, self.app_vars)
        self.fleet = Fleet(max(self.ctx.confirm_hosts), name=FLEET_NAME,
                           base_dir=os.path.join(self.work, 'fleet-systemd'), init='systemd', bytecode_cache=False)
        self.current, self.app_vars = None, SYSTEMD_APP_VARS
        try:
            self.fleet.up()
            return [self._self_revert_row(n, 'systemd') for n in self.ctx.confirm_hosts]
        finally:
            try:
                self.fleet.down()
            finally:
                self.fleet, self.current, self.app_vars = saved

    def _armed(self, host):
        """The host's armed revert timer, from its journal: (mechanism, systemd unit or None)."""
        try:
            with open(self.fleet.host_path(host, '/var/lib/failsafe-deploy/app/journal.json')) as handle:
                confirm = json.load(handle).get('confirm') or {}
        except (IOError, ValueError):
            return None, None
        return confirm.get('mechanism'), confirm.get('unit')

    def _timer_listed(self, host, unit):
        """True when the host's systemd lists the revert timer (``systemctl list-timers``)."""
        proc = self.fleet.run(host, ['systemctl', 'list-timers', '--all', '--no-pager', '--no-legend'], timeout=30)
        return proc.returncode == 0 and ('%s.timer' % unit) in proc.stdout

    def _self_revert_row(self, n, mechanism):
        hosts = self.fleet.names[:n]
        if self.current is None or not self._back(hosts, self.current):
            version = self.next_good()
            res = self.deploy(hosts, version, self.cfg_cb)
            self.check(res['rc'] == 0, 'setup deploy of %s on %d hosts failed' % (version, n))
        good = self.current
        new = self.next_good()
        self.current = good  # the hosts must come back to it
        for host in hosts:
            if os.path.exists(self.fleet.host_path(host, HOLD_MARKER)):
                os.unlink(self.fleet.host_path(host, HOLD_MARKER))
        extra = ['@' + self.app_vars, 'release_version=%s' % new,
                 'failsafe_activate_before_tasks={{ role_path }}/tasks/empty.yml',
                 'failsafe_confirm_timeout=%d' % self.ctx.confirm_timeout,
                 'failsafe_verify_before_tasks=%s' % HOLD_HOOK, 'failsafe_fault_host=%s' % hosts[0],
                 'failsafe_fault_kind=hold', 'failsafe_fault_marker=%s' % HOLD_MARKER]
        cmd = [os.path.join(VENV_BIN, 'ansible-playbook'), '-i', self.fleet.inventory_path, '--limit',
               ','.join(hosts), 'failsafe.deploy.deploy', '-e', 'supervisorctl=%s' % SUPERVISORCTL]
        for item in extra:
            cmd += ['-e', item]
        full_env = dict(os.environ)
        full_env.update(self.env(self.cfg_cb))
        with open(self.log, 'ab') as out:
            out.write(('\n$ %s\n' % ' '.join(cmd)).encode())
            out.flush()
            proc = subprocess.Popen(cmd, env=full_env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        marker = self.fleet.host_path(hosts[0], HOLD_MARKER)
        limit = time.time() + 600
        while not (os.path.exists(marker) and os.path.getsize(marker)) and time.time() < limit:
            self.check(proc.poll() is None, 'the deploy of %s ended before the switch was held' % new)
            time.sleep(0.1)
        self.check(all(self.host_release(h) == new for h in hosts), 'not every host switched to %s' % new)
        killed = time.time()
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        # what each host armed: the mechanism measured, never a fallback (read from the host, untimed)
        armed = dict((h, self._armed(h)) for h in hosts)
        self.check(all(a[0] == mechanism for a in armed.values()),
                   'revert timers armed %r, not %s' % (armed, mechanism))
        back = {}
        limit = killed + self.ctx.confirm_timeout + 120
        while len(back) < len(hosts) and time.time() < limit:
            for host in hosts:
                if host not in back and self._reverted(host) and self.serves(host) == good:
                    back[host] = time.time() - killed
            time.sleep(0.1)
        self.check(len(back) == len(hosts), 'hosts not back on %s by themselves: %r' % (good, back))
        own = []
        for host in hosts:
            with open(self.fleet.host_path(host, '/var/lib/failsafe-deploy/app/self_revert.json')) as handle:
                facts = json.load(handle)
            self.check(facts['txid'] and facts['outcome'] == 'rolled_back', '%s: revert %s' % (host, facts))
            own.append(facts['finished'] - facts['deadline'])
            if mechanism == 'systemd':
                # the timer fired and is gone, and the host's systemd runs the old release's unit
                self.check(not self._timer_listed(host, armed[host][1]), '%s: the revert timer is still listed' % host)
                show = self.fleet.run(host, ['systemctl', 'show', '-p', 'ActiveState,Environment', 'app.service'],
                                      timeout=30).stdout
                self.check('ActiveState=active' in show and 'APP_RELEASE=%s' % good in show,
                           '%s: app.service after the revert: %s' % (host, show))
        return {'hosts': n, 'repeats': 1, 'mechanism': mechanism, 'confirm_timeout': self.ctx.confirm_timeout,
                'death_to_healthy': stats([max(back.values())]), 'per_host_back': stats(list(back.values())),
                'revert_after_deadline': stats(own)}
