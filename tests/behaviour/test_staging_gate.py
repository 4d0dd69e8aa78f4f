"""Given a namespace fleet with a staging group and a production group, when production requires a rehearsal
(failsafe_require_rehearsal), then a release that was not rehearsed is refused before any change; after
failsafe.deploy.rehearse passes on staging (its drill rolled back by the callback and the restore proven, then
deployed again with its checks) it deploys; a release whose drill failed is still refused; forcing it needs a reason, and who forced
it and why are recorded in the journal and shown by the history.

Real namespace fleet (tests/fleet), real ansible-playbook runs of failsafe.deploy.rehearse (which runs the deploy
playbook in steps, each a real ansible-playbook with the auto_rollback callback) and failsafe.deploy.deploy with the
example app; checked against the hosts' own journal, ledger and ``current`` link, the record store's files and the
drill's own incident report.
"""
import hashlib
import json
import os
import sys

import pytest

from support import ROOT, load_example_build, staging_site

if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from tests.fleet.pytest_fleet import fleet  # noqa: E402,F401  pylint: disable=wrong-import-position,unused-import

pytestmark = pytest.mark.fleet

JOURNAL = '/var/lib/failsafe-deploy/app/journal.json'
LEDGER = '/srv/app/.failsafe/ledger.json'


def sha256(path):
    with open(path, 'rb') as handle:
        return hashlib.sha256(handle.read()).hexdigest()


def read_json(path):
    with open(path, encoding='utf-8') as handle:
        return json.load(handle)


def test_given_staging_and_production_then_only_a_rehearsed_release_reaches_production(fleet, tmp_path):
    hosts = fleet(2)
    staging, production = hosts.names
    base = str(tmp_path)
    dist = os.path.join(base, 'dist')
    archives = dict(zip(('1.0.0', '2.0.0', '2.1.0'), load_example_build().build(
        dist, 0, [('1.0.0', 'good'), ('2.0.0', 'good'), ('2.1.0', 'good')])))
    store = os.path.join(base, 'rehearsals')
    env, playbook = staging_site(hosts, base, dist, store)

    def production_deploy(version, *args):
        return playbook('failsafe.deploy.deploy', '-e', 'release_version=%s' % version, '-e',
                        'failsafe_hosts=production', '-e', 'failsafe_require_rehearsal=true', *args)

    def state(host):
        return (os.readlink(hosts.host_path(host, '/srv/app/current')),
                read_json(hosts.host_path(host, JOURNAL)), read_json(hosts.host_path(host, LEDGER)),
                os.path.exists(hosts.host_path(host, '/var/lib/failsafe-deploy/app/lock.json')))

    # Given 1.0.0 on both groups
    assert playbook('failsafe.deploy.deploy', '-e', 'release_version=1.0.0').returncode == 0
    before = state(production)

    # When production is asked for 2.0.0, never rehearsed: refused before any change
    refused = production_deploy('2.0.0')
    assert refused.returncode != 0
    assert 'Refusing to deploy 2.0.0: release 2.0.0 (archive sha256 %s) has no rehearsal record in %s' % (
        sha256(archives['2.0.0']), store) in refused.stdout, refused.stdout[-4000:]
    assert state(production) == before

    # When the rehearsal of 2.0.0 runs on staging: drilled (deployed over 1.0.0, failed after its activation, rolled
    # back, restore proven), then deployed again with its checks
    rehearsal = playbook('failsafe.deploy.rehearse', '-e', 'release_version=2.0.0')
    assert rehearsal.returncode == 0, rehearsal.stdout[-6000:]
    record_path = os.path.join(store, '%s.json' % sha256(archives['2.0.0']))
    record = read_json(record_path)
    assert record['passed'] is True and record['record'] == record_path
    assert (record['release'], record['archive_sha256'], record['staging_hosts']) == (
        '2.0.0', sha256(archives['2.0.0']), [staging])
    assert record['collection_version'] and 'playbook_commit' in record
    assert [(s['name'], s['outcome']) for s in record['steps']] == [
        ('drill', 'ok'), ('restore_proven', 'ok'), ('deploy', 'ok')]
    assert all(s['duration'] >= 0 for s in record['steps'])
    drill = [s for s in record['steps'] if s['name'] == 'drill'][0]
    drill_report = read_json(os.path.join(record['work_dir'], 'drill.reports', drill['incident'] + '.json'))
    assert drill_report['outcome'] == 'rolled_back'
    assert all(h['verified'] is True for h in drill_report['rollback']['hosts'].values())
    assert list(drill_report['rollback']['hosts']) == [staging]
    # staging runs it, production was never touched by the rehearsal
    assert os.readlink(hosts.host_path(staging, '/srv/app/current')).endswith('2.0.0')
    assert read_json(hosts.host_path(staging, JOURNAL))['status'] == 'committed'
    assert state(production) == before

    # Then production takes it, and its journal names the record that let it through
    promoted = production_deploy('2.0.0')
    assert promoted.returncode == 0, promoted.stdout[-6000:]
    assert os.readlink(hosts.host_path(production, '/srv/app/current')).endswith('2.0.0')
    journal = read_json(hosts.host_path(production, JOURNAL))
    assert journal['status'] == 'committed' and journal['data']['rehearsal']['record'] == record_path
    assert journal.get('forced') is None

    # When the drill of 2.1.0 fails (its rollback cannot prove the restore: the restored release's check fails)
    failed = playbook('failsafe.deploy.rehearse', '-e', 'release_version=2.1.0', '-e',
                      '{"failsafe_rollback_checks": [{"name": "broken", "url": "http://127.0.0.1:9/none", '
                      '"retries": 0, "timeout": 1}]}')
    assert failed.returncode != 0
    bad = read_json(os.path.join(store, '%s.json' % sha256(archives['2.1.0'])))
    assert bad['passed'] is False
    assert [(s['name'], s['outcome']) for s in bad['steps']] == [
        ('drill', 'ok'), ('restore_proven', 'failed'), ('deploy', 'not run')]

    # Then production still refuses it, before any change
    before = state(production)
    still = production_deploy('2.1.0')
    assert still.returncode != 0
    assert 'the rehearsal of release 2.1.0 (archive sha256 %s) did not pass (restore_proven failed, deploy not run' \
        % sha256(archives['2.1.0']) in still.stdout, still.stdout[-4000:]
    assert state(production) == before

    # And forcing it needs a reason; with one it deploys, recorded as forced by whom and why
    no_reason = production_deploy('2.1.0', '-e', 'failsafe_force=true')
    assert no_reason.returncode != 0 and 'without a reason: set failsafe_force_reason' in no_reason.stdout
    assert state(production) == before
    forced = production_deploy('2.1.0', '-e', 'failsafe_force=true', '-e', '{"failsafe_force_reason": "hotfix CHG-4711"}')
    assert forced.returncode == 0, forced.stdout[-6000:]
    journal = read_json(hosts.host_path(production, JOURNAL))
    assert os.readlink(hosts.host_path(production, '/srv/app/current')).endswith('2.1.0')
    assert journal['forced']['reason'] == 'hotfix CHG-4711' and '@' in journal['forced']['by']
    assert journal['forced']['overrode'] == ['promotion gate: %s' % journal['data']['rehearsal']['missing']]
    out = os.path.join(base, 'history.json')
    shown = playbook('failsafe.deploy.history', '-e', 'failsafe_hosts=production', '-e',
                     'failsafe_history_file=%s' % out)
    assert shown.returncode == 0
    assert read_json(out)[production][0]['transactions'][0]['forced']['reason'] == 'hotfix CHG-4711'
    assert 'FORCED by %s: hotfix CHG-4711' % journal['forced']['by'] in shown.stdout
