# -*- coding: utf-8 -*-
# Copyright: Contributors to failsafe.deploy
# SPDX-License-Identifier: GPL-3.0-or-later
"""Bench parts that run the same deploys side by side under different settings, interleaved, on the same hosts of
the namespace fleet, with FleetBench's plumbing (its releases, configuration, incident reports and timings): a good
deploy, and a recovery measured as in the time-to-recover row (from the end of the failing health check to every
host back on the last verified release and healthy).

``mitogen``: Mitogen's ``mitogen_linear`` strategy beside the default strategy (``linear``).
``transport``: the SSH settings examples/ansible.cfg recommends (pipelining on, ansible's ControlPersist
multiplexing) beside ansible's default (pipelining off) and beside no multiplexing (every task a new SSH
connection)."""

import glob
import json
import os

from common import ratio, stats

# (name in the results, ANSIBLE_STRATEGY): the default first, then Mitogen's
STRATEGIES = (('default', 'linear'), ('mitogen', 'mitogen_linear'))


def strategy_plugins():
    """The directory of ansible_mitogen's strategy plugins (the mitogen package of requirements-dev.txt)."""
    import ansible_mitogen  # pylint: disable=import-outside-toplevel
    return os.path.join(os.path.dirname(os.path.abspath(ansible_mitogen.__file__)), 'plugins', 'strategy')


# (name in the results, environment over the bench's ansible.cfg): the recommended settings first. The environment
# wins over ansible.cfg; without ControlPersist in the SSH arguments ansible adds no ControlPath: no multiplexing.
TRANSPORTS = (('recommended', {}),
              ('no_pipelining', {'ANSIBLE_PIPELINING': 'False'}),
              ('no_multiplexing', {'ANSIBLE_SSH_ARGS': '-C -o ControlMaster=no'}))


class SideBySide(object):
    """The same good deploy and recovery under each of ``variants`` ((name, environment) pairs), interleaved: a row
    per host count with each variant's medians and, for every variant after the first, its ratios to the first."""

    label = 'settings'

    def __init__(self, fleet, variants, host_counts, reps):
        self.fleet = fleet  # a FleetBench whose fleet is up
        self.ctx = fleet.ctx
        self.variants = variants
        self.host_counts = host_counts
        self.reps = reps

    def _good(self, hosts):
        fb = self.fleet
        version = fb.next_good()
        res = fb.deploy(hosts, version, fb.cfg_cb)
        fb.check(res['rc'] == 0, 'deploy of %s on %d hosts under %s failed' % (version, len(hosts), fb.extra_env))
        fb.check(all(fb.host_release(h) == version for h in hosts), 'hosts not on %s' % version)
        return res

    def _recovery(self, hosts):
        fb = self.fleet
        good = fb.current
        pattern = os.path.join(fb.reports, 'inc-*Z-*[0-9a-f].json')
        before = set(glob.glob(pattern))
        res = fb._failing(hosts, fb.cfg_cb)  # pylint: disable=protected-access
        new = sorted(set(glob.glob(pattern)) - before)
        fb.check(len(new) == 1, 'expected one incident report, found %d' % len(new))
        with open(new[0]) as handle:
            incident = json.load(handle)
        fb.check(incident['outcome'] == 'rolled_back',
                 'incident outcome %s under %s' % (incident['outcome'], fb.extra_env))
        fb.check(fb._back(hosts, good), 'hosts not back on %s and healthy' % good)  # pylint: disable=protected-access
        return res, fb._split_ours(res, incident)  # pylint: disable=protected-access

    def run(self):
        rows = []
        fb = self.fleet
        first = self.variants[0][0]
        for n in self.host_counts:
            hosts = fb.fleet.names[:n]
            if fb.current is None or not fb._back(hosts, fb.current):  # pylint: disable=protected-access
                fb.extra_env = {}
                self._good(hosts)  # untimed: the hosts on a verified release first
            runs = dict((name, {'deploy': [], 'deploy_cpu': [], 'recovery': [], 'recovery_run': []})
                        for name, dummy in self.variants)
            for rep in range(self.reps):
                order = self.variants if rep % 2 == 0 else tuple(reversed(self.variants))
                for name, env in order:
                    fb.extra_env = dict(env)
                    try:
                        res = self._good(hosts)
                        runs[name]['deploy'].append(res['seconds'])
                        runs[name]['deploy_cpu'].append(res['cpu_seconds'])
                        res, split = self._recovery(hosts)
                        runs[name]['recovery'].append(split['total'])
                        runs[name]['recovery_run'].append(res['seconds'])
                    finally:
                        fb.extra_env = {}
            row = {'hosts': n, 'repeats': self.reps}
            for name, dummy in self.variants:
                row[name] = dict((key, stats(values)) for key, values in runs[name].items())
            for name, dummy in self.variants[1:]:
                row['ratios_' + name] = {'deploy': ratio(row[name]['deploy'], row[first]['deploy']),
                                         'recovery': ratio(row[name]['recovery'], row[first]['recovery'])}
            rows.append(row)
        return rows


def _strategy_env(strategy):
    if strategy == 'linear':
        return {'ANSIBLE_STRATEGY': 'linear'}
    # Mitogen counts its whole bootstrap (SSH, the interpreter, its first stage) against ansible's connection timeout
    # (10 s by default), which a loaded 2-CPU controller can overrun on a run's first connection
    return {'ANSIBLE_STRATEGY': strategy, 'ANSIBLE_STRATEGY_PLUGINS': strategy_plugins(), 'ANSIBLE_TIMEOUT': '30'}


class MitogenBench(SideBySide):
    def __init__(self, fleet):
        SideBySide.__init__(self, fleet, [(name, _strategy_env(strategy)) for name, strategy in STRATEGIES],
                            fleet.ctx.mitogen_hosts, fleet.ctx.mitogen_reps)

    def run(self):
        # the fleet's inventory sets a 3 s connection timeout as a group var, which ANSIBLE_TIMEOUT cannot override:
        # for this part it allows the 30 s Mitogen's bootstrap may need (no host is unreachable here, so no run of
        # either strategy waits on it); the other parts keep the fleet's own
        fleet = self.fleet.fleet
        before = fleet.ssh_timeout
        fleet.set_ssh_timeout(30)
        try:
            rows = SideBySide.run(self)
        finally:
            fleet.set_ssh_timeout(before)
        for row in rows:
            ratios = row.pop('ratios_mitogen')
            row['deploy_ratio'], row['recovery_ratio'] = ratios['deploy'], ratios['recovery']
        return rows


class TransportBench(SideBySide):
    def __init__(self, fleet):
        SideBySide.__init__(self, fleet, list(TRANSPORTS), fleet.ctx.transport_hosts, fleet.ctx.transport_reps)
