# -*- coding: utf-8 -*-
# Copyright: Contributors to failsafe.deploy
# SPDX-License-Identifier: GPL-3.0-or-later
"""Traffic: blue-green and switch-back behind a real load balancer (Debian's HAProxy and nginx, started here with
their own configuration and ephemeral ports), under a steady load, against a plain rolling deploy in the same run.

For each load balancer, on this machine (ansible_connection local), one app host with two slots (blue, green):

1. ``playbooks/blue_green.yml`` deploys 1.0.0 (blue live), then, with a bounded client sending GET /version through
   the load balancer (one connection per request, no keep-alive), 2.0.0 to green: failed requests counted.
2. ``playbooks/switch_back.yml`` sends traffic back to blue: failed requests, and the time from the decision (the
   command starts) to traffic fully back (the first of 20 answers in a row from 1.0.0).
3. The same switch-back as the load balancer host runs it, the traffic layer called directly (what the module does
   once started): from the decision to the layer done, and to traffic fully back, as observed by the client.
4. Baseline: both slots take traffic, and ``playbooks/deploy.yml`` deploys 2.1.0 to them one at a time
   (``failsafe_serial=1``), restarting each in place behind the load balancer: failed requests counted.
"""

import os
import subprocess
import sys
import time

from common import ROOT, stats

sys.path.insert(0, os.path.join(ROOT, 'tests', 'behaviour'))
import lb  # noqa: E402  pylint: disable=wrong-import-position

SWITCH_BACK_TARGET = 1.0
DRIVERS = ('haproxy', 'nginx')


def _layer_spec(site, ready):
    """The traffic layer of ``site``'s load balancer with the ``ready`` slots taking traffic, the others drained."""
    servers = [{'name': slot, 'address': '127.0.0.1:%d' % port, 'weight': None,
                'state': 'ready' if slot in ready else 'drain'} for slot, port in sorted(site.ports.items())]
    if site.driver == 'haproxy':
        return {'kind': 'traffic', 'driver': 'haproxy', 'socket': site.lb.socket, 'backend': 'app',
                'state_file': site.lb.state_file, 'config': site.lb.config, 'servers': servers}
    return {'kind': 'traffic', 'driver': 'nginx', 'path': site.lb.include, 'upstream': 'app', 'conf': site.lb.conf,
            'prefix': site.lb.dir, 'pid_file': site.lb.pid_file, 'servers': servers}


def _set(site, ready):
    """The traffic layer's apply, as the transaction module runs it on the load balancer host (from the frozen copy
    of the collection: run.py puts it first on sys.path)."""
    from ansible_collections.failsafe.deploy.plugins.module_utils._layers import _run
    from ansible_collections.failsafe.deploy.plugins.module_utils.kinds.traffic import TrafficLayer
    spec = _layer_spec(site, ready)
    return TrafficLayer(spec, _run).apply(spec, None)


def _failed_between(load, start, end):
    with load.lock:
        return sum(1 for t, v in load.timeline if start <= t <= end and v is None), \
            sum(1 for t, v in load.timeline if start <= t <= end)


def _ok(proc, what):
    if proc.returncode != 0:
        raise RuntimeError('%s failed (rc %s):\n%s' % (what, proc.returncode, proc.stdout[-3000:]))


class TrafficBench(object):
    def __init__(self, ctx):
        self.ctx = ctx
        self.work = os.path.join(ctx.work, 'traffic')
        os.makedirs(self.work, exist_ok=True)
        self.repeats = getattr(ctx, 'traffic_repeats', 1)
        if ctx.collections not in sys.path:
            sys.path.insert(0, ctx.collections)

    def run(self):
        why = lb.ensure_prereqs()
        if why:
            raise RuntimeError(why)
        out = {'keep_alive': False, 'target_switch_back_s': SWITCH_BACK_TARGET, 'drivers': {}}
        # a smoke run measures one load balancer: the code is the same for both
        for driver in getattr(self.ctx, 'traffic_drivers', None) or DRIVERS:
            out['drivers'][driver] = self.one(driver)
        out['met'] = all(d['switch_back_layer_traffic']['median'] < SWITCH_BACK_TARGET
                         for d in out['drivers'].values())
        return out

    def one(self, driver):
        site = lb.BlueGreenSite(os.path.join(self.work, driver), driver, collections=self.ctx.collections)
        subprocess.run([sys.executable, os.path.join(ROOT, 'examples', 'app', 'build.py'), '--out',
                        os.path.join(site.dir, 'dist'), '--release', '2.1.0=good'], check=True,
                       stdout=subprocess.DEVNULL)
        res = {'requests': 0}
        try:
            _ok(site.blue_green('1.0.0'), 'blue-green deploy of 1.0.0')
            load = lb.Load(site.port).start()
            try:
                t0 = time.time()
                _ok(site.blue_green('2.0.0'), 'blue-green deploy of 2.0.0')
                res['bluegreen_deploy_s'] = round(time.time() - t0, 2)
                res['bluegreen_failed'], res['bluegreen_requests'] = _failed_between(load, t0, time.time())

                playbook, layer_done, layer_traffic, failed_back = [], [], [], 0
                for rep in range(self.repeats):
                    if rep:
                        # forward again, untimed, so that each repeat switches back from the new slot
                        _ok(site.blue_green('2.0.0'), 'blue-green deploy again')
                    t0 = time.time()
                    _ok(site.switch_back(), 'switch_back.yml')
                    playbook.append(load.wait_only('1.0.0', since=t0, timeout=30))
                    failed_back += _failed_between(load, t0, time.time())[0]
                    # the same switch-back as the load balancer host runs it: forward (untimed), then back
                    _set(site, ['green'])
                    load.wait_only('2.0.0', since=time.time(), timeout=30)
                    t0 = time.time()
                    _set(site, ['blue'])
                    layer_done.append(time.time() - t0)
                    layer_traffic.append(load.wait_only('1.0.0', since=t0, timeout=30))
                    failed_back += _failed_between(load, t0, time.time())[0]
                res['switch_back_playbook_traffic'] = stats(playbook)
                res['switch_back_layer'] = stats(layer_done)
                res['switch_back_layer_traffic'] = stats(layer_traffic)
                res['switch_back_failed'] = failed_back

                # baseline: a plain rolling deploy, both slots in the load balancer, one restarted at a time
                _set(site, ['blue', 'green'])
                time.sleep(1)
                t0 = time.time()
                _ok(site.playbook('deploy', '-e', 'release_version=2.1.0', '-e', 'failsafe_hosts=slots',
                                  '-e', 'failsafe_serial=1'), 'rolling deploy of 2.1.0')
                res['rolling_deploy_s'] = round(time.time() - t0, 2)
                time.sleep(0.5)
                res['rolling_failed'], res['rolling_requests'] = _failed_between(load, t0, time.time())
                res['rolling_served_new'] = site.slot_version('blue')[1] == '2.1.0' \
                    and site.slot_version('green')[1] == '2.1.0'
            finally:
                load.stop()
            res['requests'] = load.total
            res['failed_total'] = len(load.failures)
            res['failure_samples'] = [list(f) for f in load.failures[:5]]
        finally:
            site.stop()
        return res
