# -*- coding: utf-8 -*-
# Copyright: Contributors to failsafe.deploy
# SPDX-License-Identifier: GPL-3.0-or-later
"""Bench part ``mitogen``: a good deploy and a recovery under Mitogen's ``mitogen_linear`` strategy beside the default
strategy (``linear``), interleaved, on the same hosts of the namespace fleet, with FleetBench's plumbing (its
releases, configuration, incident reports and timings). Recovery is measured as in the time-to-recover row: from the
end of the failing health check to every host back on the last verified release and healthy."""

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


class MitogenBench(object):
    def __init__(self, fleet):
        self.fleet = fleet  # a FleetBench whose fleet is up
        self.ctx = fleet.ctx

    def _env(self, strategy):
        if strategy == 'linear':
            return {'ANSIBLE_STRATEGY': 'linear'}
        return {'ANSIBLE_STRATEGY': strategy, 'ANSIBLE_STRATEGY_PLUGINS': strategy_plugins()}

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
        for n in self.ctx.mitogen_hosts:
            hosts = fb.fleet.names[:n]
            if fb.current is None or not fb._back(hosts, fb.current):  # pylint: disable=protected-access
                fb.extra_env = {}
                self._good(hosts)  # untimed: the hosts on a verified release first
            runs = dict((name, {'deploy': [], 'deploy_cpu': [], 'recovery': [], 'recovery_run': []})
                        for name, dummy in STRATEGIES)
            for rep in range(self.ctx.mitogen_reps):
                order = STRATEGIES if rep % 2 == 0 else tuple(reversed(STRATEGIES))
                for name, strategy in order:
                    fb.extra_env = self._env(strategy)
                    try:
                        res = self._good(hosts)
                        runs[name]['deploy'].append(res['seconds'])
                        runs[name]['deploy_cpu'].append(res['cpu_seconds'])
                        res, split = self._recovery(hosts)
                        runs[name]['recovery'].append(split['total'])
                        runs[name]['recovery_run'].append(res['seconds'])
                    finally:
                        fb.extra_env = {}
            row = {'hosts': n, 'repeats': self.ctx.mitogen_reps}
            for name, dummy in STRATEGIES:
                row[name] = dict((key, stats(values)) for key, values in runs[name].items())
            row['deploy_ratio'] = ratio(row['mitogen']['deploy'], row['default']['deploy'])
            row['recovery_ratio'] = ratio(row['mitogen']['recovery'], row['default']['recovery'])
            rows.append(row)
        return rows
