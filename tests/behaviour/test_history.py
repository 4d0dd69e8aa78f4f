"""Given deploys that committed and one that failed and was rolled back on real SSH hosts, when the history playbook
runs, then it lists per host each deployment's releases, transactions (newest first), outcomes and the incident,
and says when it last worked.

Real namespace fleet (tests/fleet), real ansible-playbook runs of failsafe.deploy.deploy with the example app
(tests/fleet/app-vars.yml), the auto_rollback callback and its real rollback, then failsafe.deploy.history; its
answer is checked against the hosts' own journal and ledger files and the controller's incident report.
"""
import json
import os
import re
import subprocess
import sys

import pytest

from support import ROOT, fleet_env, load_example_build

if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from tests.fleet.pytest_fleet import fleet  # noqa: E402,F401  pylint: disable=wrong-import-position,unused-import

pytestmark = pytest.mark.fleet

APP_VARS = os.path.join(ROOT, 'tests', 'fleet', 'app-vars.yml')


def test_given_two_commits_and_a_rollback_on_two_hosts_then_history_lists_them_and_when_it_last_worked(fleet, tmp_path):
    hosts = fleet(2)
    base = str(tmp_path)
    dist = os.path.join(base, 'dist')
    load_example_build().build(dist, 0, [('1.0.0', 'good'), ('2.0.0', 'good'), ('3.0.0', 'unhealthy')])
    env = fleet_env(hosts, base, dist)
    env['FAILSAFE_REPORT_DIR'] = os.path.join(base, 'incidents')
    env['ANSIBLE_CALLBACKS_ENABLED'] = 'failsafe.deploy.auto_rollback'

    def playbook(name, *args):
        argv = ['ansible-playbook', '-i', hosts.inventory_path, name, '-e', '@' + APP_VARS] + list(args)
        proc = subprocess.run(argv, env=env, cwd=base, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, timeout=900, check=False)
        with open(os.path.join(base, 'runs.log'), 'a', encoding='utf-8') as log:
            log.write('$ %s\n%s\nrc=%s\n' % (' '.join(argv), proc.stdout, proc.returncode))
        return proc

    for version in ('1.0.0', '2.0.0'):
        proc = playbook('failsafe.deploy.deploy', '-e', 'release_version=%s' % version)
        assert proc.returncode == 0, proc.stdout[-6000:]
    bad = playbook('failsafe.deploy.deploy', '-e', 'release_version=3.0.0')
    assert bad.returncode != 0 and 'ROLLED BACK' in bad.stdout, bad.stdout[-6000:]
    reports = sorted(n for n in os.listdir(env['FAILSAFE_REPORT_DIR']) if re.match(r'^inc-[^.]+\.json$', n))
    assert len(reports) == 1
    incident = reports[0][:-len('.json')]

    out = os.path.join(base, 'history.json')
    proc = playbook('failsafe.deploy.history', '-e', 'failsafe_history_file=%s' % out)
    assert proc.returncode == 0, proc.stdout[-6000:]
    with open(out, encoding='utf-8') as handle:
        history = json.load(handle)
    assert sorted(history) == sorted(hosts.names)
    for host in hosts.names:
        assert [d['name'] for d in history[host]] == ['app']
        app = history[host][0]
        # newest first: the rollback of 3.0.0, then the two commits
        assert [(t['release'], t['previous_release'], t['status']) for t in app['transactions']] == [
            ('3.0.0', '2.0.0', 'rolled_back'), ('2.0.0', '1.0.0', 'committed'), ('1.0.0', None, 'committed')]
        assert app['transactions'][0]['incident'] == incident
        assert app['incidents'] == [{'incident': incident, 'txid': app['transactions'][0]['txid'], 'release': '3.0.0',
                                     'status': 'rolled_back', 'at': app['transactions'][0]['closed_iso']}]
        assert app['last_success']['release'] == '2.0.0' and app['current_release'] == '2.0.0'
        assert app['counts'] == {'committed': 2, 'rolled_back': 1}
        assert dict((r['release'], r['state']) for r in app['releases'])['3.0.0'] == 'failed'
        # checked against the host's own files
        with open(hosts.host_path(host, '/var/lib/failsafe-deploy/app/journal.json'), encoding='utf-8') as handle:
            journal = json.load(handle)
        assert journal['txid'] == app['transactions'][0]['txid'] and journal['status'] == 'rolled_back'
        with open(hosts.host_path(host, '/srv/app/.failsafe/ledger.json'), encoding='utf-8') as handle:
            assert json.load(handle)['current'] == app['current_release']
        assert os.readlink(hosts.host_path(host, '/srv/app/current')).endswith('2.0.0')
        line = '%s app: current 2.0.0, last success 2.0.0 at %s' % (host, app['last_success']['closed_iso'])
        assert line in proc.stdout, proc.stdout[-4000:]
    assert ' 3.0.0 (2.0.0) rolled_back %s' % incident in proc.stdout

    # one release only
    only = playbook('failsafe.deploy.history', '-e', 'failsafe_history_release=2.0.0', '-e',
                    'failsafe_history_file=%s' % out)
    assert only.returncode == 0, only.stdout[-4000:]
    with open(out, encoding='utf-8') as handle:
        filtered = json.load(handle)
    assert all([t['release'] for t in filtered[h][0]['transactions']] == ['2.0.0'] for h in hosts.names)
