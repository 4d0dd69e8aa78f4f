"""Given a release that failed in production (shown bad after its activation, rolled back by the callback), when it is
deployed again, then the same archive is refused before any change; a changed archive of it is refused until it has
passed a rehearsal in staging, and then deploys; a release whose failure was the deploy script's deploys again
unchanged once a root-cause note (failsafe_rca) is attached, which the journal and the history record.

Real namespace fleet (tests/fleet) with a staging and a production group, real ansible-playbook runs of
failsafe.deploy.deploy and failsafe.deploy.rehearse with the example app and the auto_rollback callback; checked
against the hosts' journal, ledger and ``current`` link and the archives' own sha256. (A self-revert for lack of
confirmation leaves the release deployable: tests/behaviour/test_commit_confirmed.py.)
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
DRILL = os.path.join(ROOT, 'roles', 'verify', 'tasks', 'drill.yml')


def sha256(path):
    with open(path, 'rb') as handle:
        return hashlib.sha256(handle.read()).hexdigest()


def read_json(path):
    with open(path, encoding='utf-8') as handle:
        return json.load(handle)


def test_given_a_release_that_failed_in_production_then_it_deploys_again_only_changed_and_rehearsed_or_with_an_rca(
        fleet, tmp_path):
    hosts = fleet(2)
    staging, production = hosts.names
    base = str(tmp_path)
    dist = os.path.join(base, 'dist')
    fixed = os.path.join(base, 'fixed')
    build = load_example_build()
    build.build(dist, 0, [('1.0.0', 'good'), ('2.0.0', 'unhealthy'), ('3.0.0', 'good')])
    fixed_archive = build.build(fixed, 0, [('2.0.0', 'good')])[0]
    bad_sha, fixed_sha = sha256(os.path.join(dist, 'app-2.0.0.tar.gz')), sha256(fixed_archive)
    assert bad_sha != fixed_sha
    store = os.path.join(base, 'rehearsals')
    env, playbook = staging_site(hosts, base, dist, store)

    def prod_deploy(version, *args):
        return playbook('failsafe.deploy.deploy', '-e', 'release_version=%s' % version, '-e',
                        'failsafe_hosts=production', *args)

    def state():
        return (os.readlink(hosts.host_path(production, '/srv/app/current')),
                read_json(hosts.host_path(production, JOURNAL)), read_json(hosts.host_path(production, LEDGER)))

    assert playbook('failsafe.deploy.deploy', '-e', 'release_version=1.0.0').returncode == 0
    # Given 2.0.0 failed its health check in production and was rolled back
    failed = prod_deploy('2.0.0')
    assert failed.returncode != 0 and 'ROLLED BACK' in failed.stdout, failed.stdout[-4000:]
    entry = state()[2]['releases']['2.0.0']
    assert entry['state'] == 'failed' and entry['failed_build']['archive_sha256'] == bad_sha

    # When the same archive is deployed again: refused before any change, naming it
    before = state()
    again = prod_deploy('2.0.0')
    assert again.returncode != 0
    assert 'archive sha256 %s, the same archive as this deploy' % bad_sha in again.stdout, again.stdout[-4000:]
    assert state() == before

    # When a changed archive of it comes, not rehearsed: still refused
    changed = ('-e', 'failsafe_release_archive=%s' % fixed_archive)
    unrehearsed = prod_deploy('2.0.0', *changed)
    assert unrehearsed.returncode != 0 and 'is quarantined' in unrehearsed.stdout
    assert state() == before

    # Then once the changed archive passed its rehearsal in staging, production takes it
    rehearsal = playbook('failsafe.deploy.rehearse', '-e', 'release_version=2.0.0', *changed)
    assert rehearsal.returncode == 0, rehearsal.stdout[-6000:]
    assert read_json(os.path.join(store, fixed_sha + '.json'))['passed'] is True
    assert state() == before
    redeployed = prod_deploy('2.0.0', *changed)
    assert redeployed.returncode == 0, redeployed.stdout[-6000:]
    current, journal, ledger = state()
    assert current.endswith('2.0.0') and journal['status'] == 'committed'
    assert journal['build']['archive_sha256'] == fixed_sha
    assert journal['data']['redeploy'] == {'by': 'rehearsal', 'record': os.path.join(store, fixed_sha + '.json'),
                                           'failed_archive_sha256': bad_sha, 'archive_sha256': fixed_sha}
    assert ledger['releases']['2.0.0']['state'] == 'verified'

    # Given 3.0.0 failed in production because of the deploy script (a task that fails after the activation)
    script_failed = prod_deploy('3.0.0', '-e', 'failsafe_verify_before_tasks=%s' % DRILL)
    assert script_failed.returncode != 0 and 'ROLLED BACK' in script_failed.stdout
    before = state()
    assert before[2]['releases']['3.0.0']['state'] == 'failed'
    assert prod_deploy('3.0.0').returncode != 0 and state() == before
    # When the script is fixed and a root-cause note attached, it deploys unchanged, the note recorded
    rca = 'https://tickets.example.invalid/RCA-7'
    with_rca = prod_deploy('3.0.0', '-e', 'failsafe_rca=%s' % rca)
    assert with_rca.returncode == 0, with_rca.stdout[-6000:]
    current, journal, ledger = state()
    assert current.endswith('3.0.0') and journal['status'] == 'committed' and journal['rca'] == rca
    assert journal['data']['redeploy'] == {'by': 'rca', 'rca': rca}
    assert journal.get('forced') is None
    out = os.path.join(base, 'history.json')
    shown = playbook('failsafe.deploy.history', '-e', 'failsafe_hosts=production', '-e',
                     'failsafe_history_file=%s' % out)
    assert shown.returncode == 0
    assert read_json(out)[production][0]['transactions'][0]['rca'] == rca
    assert 'RCA %s' % rca in shown.stdout
