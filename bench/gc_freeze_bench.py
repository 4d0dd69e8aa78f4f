# -*- coding: utf-8 -*-
# Copyright: Contributors to failsafe.deploy
# SPDX-License-Identifier: GPL-3.0-or-later
"""The auto_rollback callback's gc_freeze and payload_cache: the same deploy with the option on (the default) and
off, interleaved.

ansible-playbook forks a worker per task and host; with gc_freeze the callback collects garbage and freezes the
collector's objects before each fork, so the workers' collections skip what they inherited: the parsed playbook,
the roles with their argument specs, the variables. This part runs the demo's deploy (``examples/demo``: one local
host, a private supervisord, the ``auto_rollback`` callback enabled) of 1.0.0 and 2.0.0 in turn, each a real deploy
of a new release, with ``FAILSAFE_GC_FREEZE`` true and false in turn, and compares the CPU time (user + system of
the whole process tree), the wall time and the peak memory of the process tree.

payload_cache (``PayloadCacheBench``): the same, with ``FAILSAFE_PAYLOAD_CACHE`` true and false in turn and a store
of its own; the untimed first deploy fills it, so a run with the option on copies the transaction module's payload
instead of building it."""

import os
import subprocess
import sys

from common import ROOT, ratio, run, stats

if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
from tests.helpers import free_port  # noqa: E402  pylint: disable=wrong-import-position

DEMO = os.path.join(ROOT, 'examples', 'demo')
SIDES = (('on', 'true'), ('off', 'false'))
RELEASES = ('1.0.0', '2.0.0')


class GcFreezeBench(object):
    OPTION = 'gc_freeze'
    VARIABLE = 'FAILSAFE_GC_FREEZE'

    def __init__(self, ctx):
        self.ctx = ctx
        self.work = os.path.join(ctx.work, self.OPTION)
        self.demo = os.path.join(self.work, 'demo')
        subprocess.run(['bash', os.path.join(DEMO, 'prepare.sh'), self.demo], check=True)
        self.env = {'ANSIBLE_CONFIG': os.path.join(DEMO, 'ansible.cfg'), 'ANSIBLE_COLLECTIONS_PATH': ctx.collections,
                    'FAILSAFE_DEMO_DIR': self.demo, 'FAILSAFE_DEMO_PORT': str(free_port()),
                    'FAILSAFE_REPORT_DIR': os.path.join(self.demo, 'incidents'),
                    'FAILSAFE_SPOOL_PATH': os.path.join(self.demo, 'incidents', 'alerts.jsonl')}
        self.log = os.path.join(self.work, 'ansible.log')
        self.deploys = 0

    def deploy(self, setting):
        """A deploy of the release not in place now (1.0.0 and 2.0.0 in turn)."""
        release = RELEASES[self.deploys % 2]
        self.deploys += 1
        res = run(['ansible-playbook', '-i', os.path.join(DEMO, 'inventory.yml'), 'failsafe.deploy.deploy',
                   '-e', 'release_version=%s' % release], env=dict(self.env, **{self.VARIABLE: setting}), log=self.log)
        if res['rc'] != 0:
            raise RuntimeError('%s benchmark: the deploy of %s failed with %s=%s, see %s'
                               % (self.OPTION, release, self.VARIABLE, setting, self.log))
        return res

    def run(self):
        try:
            self.deploy('true')   # the first deploy (untimed): the supervisor and the app start
            runs = dict((label, []) for label, dummy in SIDES)
            for rep in range(self.ctx.gc_reps):
                for label, setting in (SIDES if rep % 2 == 0 else tuple(reversed(SIDES))):
                    runs[label].append(self.deploy(setting))
        finally:
            subprocess.run(['supervisorctl', '-c', os.path.join(self.demo, 'supervisor', 'supervisord.conf'), 'shutdown'],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        rows = []
        for label, setting in SIDES:
            rows.append({'side': label, 'setting': setting,
                         'wall': stats([r['seconds'] for r in runs[label]]),
                         'cpu': stats([r['cpu_seconds'] for r in runs[label]]),
                         'peak_rss_kb': stats([r['peak_rss_kb'] for r in runs[label]])})
        on, off = rows[0], rows[1]
        return {'deploy': 'examples/demo', 'hosts': 1, 'repeats': self.ctx.gc_reps, 'rows': rows,
                'cpu_ratio_on_to_off': ratio(on['cpu'], off['cpu']),
                'wall_ratio_on_to_off': ratio(on['wall'], off['wall']),
                'peak_rss_ratio_on_to_off': ratio(on['peak_rss_kb'], off['peak_rss_kb'])}


class PayloadCacheBench(GcFreezeBench):
    OPTION = 'payload_cache'
    VARIABLE = 'FAILSAFE_PAYLOAD_CACHE'

    def __init__(self, ctx):
        super(PayloadCacheBench, self).__init__(ctx)
        self.env['FAILSAFE_PAYLOAD_CACHE_DIR'] = os.path.join(self.work, 'payloads')
