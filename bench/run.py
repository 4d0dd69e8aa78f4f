# -*- coding: utf-8 -*-
# Copyright: Contributors to failsafe.deploy
# SPDX-License-Identifier: GPL-3.0-or-later
"""Runs the benchmarks of failsafe.deploy and writes results.json and results.md. See bench/README.md."""

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import traceback

from common import BENCH as BENCH_DIR, ROOT, loadavg

import report

# Repeats: three for the headline rows (time to recover on 10 hosts, a good deploy on 10 and 30 hosts), two for the
# snapshot operations, the callback runs and the 1-host fleet, one for 3 and 100 hosts (on an idle machine the fleet
# runs spread by a few percent), chosen for the budget of a whole run, 35 minutes on 2 cores (bench/results.md says
# how long the last run took and whether it kept to it). The 100-host row
# deploys in waves (SCALING_WAVES: ansible's serial), as a fleet that size is deployed.
FULL = dict(recovery_hosts=[1, 3, 10], recovery_reps={1: 2, 3: 1, 10: 3}, scaling_hosts=[1, 3, 10, 30, 100],
            scaling_reps={1: 2, 3: 1, 10: 3, 30: 3, 100: 1}, scaling_waves={100: 25}, app_files=500, snap_files=10000,
            snap_bytes=1024 ** 3, repeats=2, callback_tasks=300, callback_reps=4, db_mb=200, confirm_hosts=[10],
            confirm_timeout=10, traffic_repeats=2, mitogen_hosts=[3], mitogen_reps=2, transport_hosts=[3], transport_reps=2,
            breakdown=True, interpreter_tasks=150, interpreter_reps=4, gc_reps=6)
SMOKE = dict(recovery_hosts=[1], recovery_reps={1: 1}, scaling_hosts=[1], scaling_reps={1: 1}, scaling_waves={},
             app_files=5,
             snap_files=50, snap_bytes=1024 ** 2, repeats=1, callback_tasks=15, callback_reps=1, db_mb=5,
             confirm_hosts=[2], confirm_timeout=15, traffic_repeats=1, traffic_drivers=['haproxy'], mitogen_hosts=[1],
             mitogen_reps=1, transport_hosts=[1], transport_reps=1, breakdown=True, interpreter_tasks=15,
             interpreter_reps=1, gc_reps=1)
# fleet: scaling and time to recover; confirm: the hosts' own revert after the controller's death (commit confirmed),
# by a watchdog process on the fleet's supervisor hosts and by a systemd timer on hosts whose PID 1 is systemd;
# traffic: blue-green and switch-back behind HAProxy and nginx; mitogen: a good deploy and a recovery under Mitogen's
# mitogen_linear beside the default strategy, on the fleet's hosts; transport: the same with the SSH settings
# examples/ansible.cfg recommends beside ansible's default (no pipelining) and no multiplexing; breakdown: where a module call's time goes on a
# host, for each deploy phase and the rollback call (bench/breakdown_bench.py)
PARTS = ('snapshot', 'callback', 'database', 'fleet', 'confirm', 'traffic', 'mitogen', 'transport', 'breakdown',
         'interpreter', 'gc_freeze', 'payload_cache')


class Ctx(object):
    def __init__(self, sizes, work, collections):
        self.__dict__.update(sizes)
        self.work = work
        self.collections = collections

    def reps_for(self, hosts):
        return self.scaling_reps[hosts]

    def recovery_reps_for(self, hosts):
        return self.recovery_reps[hosts]


def freeze_collection(work, ref):
    """A private copy of the collection, so edits made to the tree while the benchmarks run do not change them."""
    base = os.path.join(work, 'collections')
    dest = os.path.join(base, 'ansible_collections', 'failsafe', 'deploy')
    os.makedirs(dest)
    if ref:
        archive = subprocess.run(['git', 'archive', ref], cwd=ROOT, capture_output=True, check=True).stdout
        subprocess.run(['tar', '-x', '-C', dest], input=archive, check=True)
        commit = subprocess.run(['git', 'rev-parse', ref], cwd=ROOT, capture_output=True, text=True,
                                check=False).stdout.strip()
    else:
        for name in ('galaxy.yml', 'meta', 'plugins', 'roles', 'playbooks'):
            src = os.path.join(ROOT, name)
            if os.path.isdir(src):
                shutil.copytree(src, os.path.join(dest, name), symlinks=True)
            elif os.path.exists(src):
                shutil.copy2(src, dest)
        commit = subprocess.run(['git', 'rev-parse', 'HEAD'], cwd=ROOT, capture_output=True, text=True,
                                check=False).stdout.strip()
        dirty = subprocess.run(['git', 'status', '--porcelain', '--', 'plugins', 'roles', 'playbooks', 'meta'],
                               cwd=ROOT, capture_output=True, text=True, check=False).stdout.strip()
        if dirty:
            commit += ' + uncommitted changes'
    return base, commit


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--smoke', action='store_true', help='tiny sizes, one repeat')
    parser.add_argument('--out', default=BENCH_DIR, help='where results.json/.md go')
    parser.add_argument('--only', action='append', choices=PARTS, help='run only these parts (repeatable)')
    parser.add_argument('--ref', help='benchmark this git revision instead of the working tree')
    parser.add_argument('--snap-mb', type=int, help='size of the snapshot tree in MB (default 1024)')
    parser.add_argument('--snap-files', type=int, help='files in the snapshot tree (default 10000)')
    parser.add_argument('--db-mb', type=int, help='size of the PostgreSQL database of the database part (default 200)')
    parser.add_argument('--merge', action='store_true',
                        help='with --only: put the parts run into the results.json already at --out (the other parts '
                             'and the run they came from stay; results.md names the run of each merged part)')
    args = parser.parse_args()
    if args.merge and not args.only:
        parser.error('--merge needs --only')
    sizes = dict(SMOKE if args.smoke else FULL)
    if args.snap_mb:
        sizes['snap_bytes'] = args.snap_mb * 1024 ** 2
    if args.snap_files:
        sizes['snap_files'] = args.snap_files
    if args.db_mb:
        sizes['db_mb'] = args.db_mb
    parts = args.only or list(PARTS)
    # the snapshot tree lives in a temp dir on the same disk as the repository
    work = tempfile.mkdtemp(prefix='failsafe-bench-', dir=os.environ.get('FAILSAFE_BENCH_TMP', '/var/tmp'))
    started = time.time()
    collections, commit = freeze_collection(work, args.ref)
    ctx = Ctx(sizes, work, collections)
    results = {'meta': {'started': started, 'smoke': args.smoke, 'commit': commit, 'host': platform.node(),
                        'cpus': os.cpu_count(), 'python': sys.version.split()[0], 'loadavg_start': loadavg(),
                        'sizes': dict(sizes, **dict((key, dict((str(k), v) for k, v in sizes[key].items()))
                                                    for key in ('scaling_reps', 'recovery_reps'))),
                        'work_dir': work},
               'errors': {}}
    failed = False

    def part(name, func):
        nonlocal failed
        t0 = time.time()
        try:
            results[name] = func()
        except Exception:  # pylint: disable=broad-except
            failed = True
            results['errors'][name] = traceback.format_exc()[-3000:]
            sys.stderr.write('bench: %s failed:\n%s\n' % (name, results['errors'][name]))
        results['meta'].setdefault('part_seconds', {})[name] = round(time.time() - t0, 1)
        print('bench: %s done in %.0f s' % (name, time.time() - t0), flush=True)

    try:
        if 'snapshot' in parts:
            from snapshot_bench import SnapshotBench
            snap = SnapshotBench(ctx)
            part('snapshot', snap.run)
            snap.cleanup()
        if 'callback' in parts:
            from callback_bench import CallbackBench
            part('callback', CallbackBench(ctx).run)
        if 'interpreter' in parts:
            from interpreter_bench import InterpreterBench
            part('interpreter', InterpreterBench(ctx).run)
        if 'gc_freeze' in parts:
            from gc_freeze_bench import GcFreezeBench
            part('gc_freeze', GcFreezeBench(ctx).run)
        if 'payload_cache' in parts:
            from gc_freeze_bench import PayloadCacheBench
            part('payload_cache', PayloadCacheBench(ctx).run)
        if 'database' in parts:
            from db_bench import DatabaseBench
            part('database', DatabaseBench(ctx).run)
        if any(name in parts for name in ('fleet', 'confirm', 'mitogen', 'transport', 'breakdown')):
            from fleet_bench import FleetBench
            if 'fleet' not in parts:
                ctx.scaling_hosts, ctx.recovery_hosts = [], []
            if 'confirm' not in parts:
                ctx.confirm_hosts = []
            if 'mitogen' not in parts:
                ctx.mitogen_hosts = []
            if 'transport' not in parts:
                ctx.transport_hosts = []
            if 'breakdown' not in parts:
                ctx.breakdown = False
            fleet = FleetBench(ctx)
            try:
                part('fleet_setup', fleet.up)
                if 'fleet_setup' not in results['errors']:
                    if 'fleet' in parts:
                        part('scaling', fleet.scaling)
                        part('recovery', fleet.recovery)
                    if 'confirm' in parts:
                        part('self_revert', fleet.self_revert)
                    if 'mitogen' in parts:
                        from mitogen_bench import MitogenBench
                        part('mitogen', MitogenBench(fleet).run)
                    if 'transport' in parts:
                        from mitogen_bench import TransportBench
                        part('transport', TransportBench(fleet).run)
                    if 'breakdown' in parts:
                        from breakdown_bench import BreakdownBench
                        part('breakdown', BreakdownBench(fleet).run)
            finally:
                fleet.down()
            # the same self-revert on hosts whose PID 1 is systemd: a fleet of the same name and subnet, so after the
            # supervisor hosts are down
            if 'confirm' in parts and 'fleet_setup' not in results['errors']:
                part('self_revert_systemd', fleet.self_revert_systemd)
        if 'traffic' in parts:
            from traffic_bench import TrafficBench
            part('traffic', TrafficBench(ctx).run)
    finally:
        results['meta']['finished'] = time.time()
        results['meta']['seconds'] = round(time.time() - started, 1)
        results['meta']['loadavg_end'] = loadavg()
        os.makedirs(args.out, exist_ok=True)
        if args.merge and not failed:
            with open(os.path.join(args.out, 'results.json')) as handle:
                merged = json.load(handle)
            for name in [key for key in results if key not in ('meta', 'errors', 'fleet_setup')]:
                merged[name] = results[name]
                merged['meta'].setdefault('merged', {})[name] = dict(
                    ((key, results['meta'][key]) for key in ('started', 'seconds', 'commit', 'smoke', 'loadavg_start')),
                    only=sorted(set(args.only or [])))
            results = merged
        with open(os.path.join(args.out, 'results.json'), 'w') as handle:
            json.dump(results, handle, indent=1, sort_keys=True)
        with open(os.path.join(args.out, 'results.md'), 'w') as handle:
            handle.write(report.markdown(results))
        # a complete full run into the repository's bench/ also refreshes the README's summary lines
        if not args.smoke and not args.only and not failed and os.path.abspath(args.out) == BENCH_DIR:
            if report.update_readme(os.path.join(ROOT, 'README.md'), results):
                print('bench: updated the summary in README.md')
        if not failed:
            shutil.rmtree(work, ignore_errors=True)
        print('bench: wrote %s/results.{json,md} in %.0f s' % (args.out, time.time() - started))
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
