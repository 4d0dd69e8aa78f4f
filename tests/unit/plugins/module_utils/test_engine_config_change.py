# -*- coding: utf-8 -*-
# Copyright: Contributors to failsafe.deploy
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The same release with another configuration is a configuration change, deployed as a transaction; with the
same configuration nothing is deployed."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import os

import pytest

from ansible_collections.failsafe.deploy.plugins.module_utils import _engine as engine
from ansible_collections.failsafe.deploy.plugins.module_utils._applied import differences, fingerprint
from ansible_collections.failsafe.deploy.plugins.module_utils._journal import DeployState
from ansible_collections.failsafe.deploy.plugins.module_utils._release import ReleaseRoot

BASE = dict(files=[{'dest': '/srv/app/shared/app.json', 'content': '{"label": "one"}'},
                   {'dest': '/etc/supervisor/conf.d/app.conf', 'content': '[program:app]\ncommand=run\n'}],
            directories=['/etc/supervisor/conf.d'], service={'manager': 'supervisor', 'name': 'app'},
            flags=[{'provider': 'flagd', 'flags': {'checkout': True}}])


def _with(**changes):
    args = dict(BASE)
    args.update(changes)
    return fingerprint(**args)


@pytest.mark.parametrize('changed, words', [
    (dict(files=[dict(BASE['files'][0], content='{"label": "two"}'), BASE['files'][1]]),
     ['file /srv/app/shared/app.json']),
    (dict(files=[BASE['files'][0], dict(BASE['files'][1], content='[program:app]\ncommand=run --fast\n')]),
     ['file /etc/supervisor/conf.d/app.conf']),
    (dict(files=[dict(BASE['files'][0], mode='0600'), BASE['files'][1]]), ['file /srv/app/shared/app.json']),
    (dict(files=BASE['files'] + [{'dest': '/srv/app/shared/new.ini', 'content': ''}]),
     ['file /srv/app/shared/new.ini added']),
    (dict(files=BASE['files'][:1]), ['file /etc/supervisor/conf.d/app.conf no longer managed']),
    (dict(directories=[]), ['directories']),
    (dict(service={'manager': 'supervisor', 'name': 'app', 'start': True}), ['service settings']),
    (dict(flags=[{'provider': 'flagd', 'flags': {'checkout': False}}]), ['feature flag settings']),
])
def test_a_change_of_what_the_deploy_applies_is_named(changed, words):
    assert differences(_with(), _with(**changed)) == words


def test_the_same_settings_given_in_another_order_do_not_differ():
    again = fingerprint(files=list(reversed(BASE['files'])), directories=list(reversed(BASE['directories'])),
                        service=dict(reversed(list(BASE['service'].items()))), flags=BASE['flags'])
    assert differences(_with(), again) == []


def test_nothing_recorded_is_not_a_change_and_no_secret_is_kept():
    assert differences(None, _with()) == []
    secret = fingerprint(files=[{'dest': '/x', 'content': 'password=hunter2'}], flags=[{'token': 'hunter2'}])
    assert 'hunter2' not in repr(secret)


@pytest.fixture
def live(tmp_path):
    """Release 1.0 deployed through every phase with a configuration file, the service unmanaged."""
    app = tmp_path / 'app'
    (app / 'shared').mkdir(parents=True)
    src = tmp_path / 'src'
    src.mkdir()
    (src / 'VERSION').write_text('1.0')
    conf = str(app / 'shared' / 'app.json')
    p = {'state_dir': str(tmp_path / 'state'), 'name': 'app', 'app_root': str(app), 'release': '1.0',
         'run_id': 'run-1', 'snapshot_paths': [str(app / 'shared')], 'service': {'manager': 'none'},
         'min_free_mb': 0, 'check_running': False, 'src': str(src), 'remote_src': True,
         'files': [{'dest': conf, 'content': '{"label": "one"}'}]}
    deploy(p)
    return p, conf


def no_run(argv):
    raise AssertionError('no command expected with manager none: %r' % (argv,))


def deploy(p):
    opened = engine.open_phase(dict(p), no_run)
    if opened['needed']:
        engine.stage_phase(dict(p))
        engine.activate_phase(dict(p), no_run)
        engine.verify_phase(dict(p))
        engine.commit_phase(dict(p))
    return opened


def test_given_a_verified_release_when_its_configuration_changes_then_it_is_deployed_as_a_transaction(live):
    p, conf = live
    ds = DeployState(p['state_dir'], 'app')
    same = deploy(dict(p, run_id='run-2'))
    assert same['needed'] is False and 'nothing to deploy' in same['msg']
    assert ds.read_journal()['run_id'] == 'run-1'
    changed = dict(p, run_id='run-3', files=[{'dest': conf, 'content': '{"label": "two"}'}])
    opened = deploy(changed)
    assert opened['needed'] is True
    assert opened['config_change'] == ['file %s' % conf]
    assert 'configuration change of release 1.0' in opened['msg']
    journal = ds.read_journal()
    assert (journal['run_id'], journal['status'], journal['release']) == ('run-3', 'committed', '1.0')
    with open(conf) as handle:
        assert handle.read() == '{"label": "two"}'
    # the new configuration is what the release is recorded with: the same run again deploys nothing
    assert deploy(dict(changed, run_id='run-4'))['needed'] is False


def test_a_configuration_change_that_fails_is_undone_and_the_release_stays_verified(live):
    p, conf = live
    changed = dict(p, run_id='run-2', files=[{'dest': conf, 'content': '{"label": "broken"}'}])
    assert engine.open_phase(dict(changed), no_run)['config_change']
    engine.stage_phase(dict(changed))
    engine.activate_phase(dict(changed), no_run)
    res = engine.rollback(dict(changed, reason='health check failed'), no_run)
    assert 'configuration change of release 1.0' in res['msg'] and 'stays verified' in res['msg']
    assert res['failsafe_rollback']['quarantined'] is False
    with open(conf) as handle:
        assert handle.read() == '{"label": "one"}'
    rr = ReleaseRoot(p['app_root'])
    assert rr.read_current() == '1.0'
    assert rr.load_ledger()['releases']['1.0']['state'] == 'verified'
    assert DeployState(p['state_dir'], 'app').read_journal()['status'] == 'rolled_back'
    # the configuration the release was committed with is unchanged: the broken one is still a change to deploy
    assert engine.open_phase(dict(changed, run_id='run-3'), no_run)['config_change']
    assert os.path.islink(os.path.join(p['app_root'], 'current'))


def test_a_forced_redeploy_of_the_running_release_that_fails_puts_back_the_state_before_it(live, tmp_path):
    """Release 2.0 runs verified after 1.0; a forced redeploy of 2.0 fails after its activation. The state before
    the redeploy is 2.0 running: the rollback restores that (the current link included in the snapshot), proves it
    and says so; it neither switches to 1.0 under a snapshot of 2.0 (which the proof then refused: a false
    ROLLBACK FAILED with the host left on 1.0) nor quarantines the release the host runs."""
    p, conf = live
    src = tmp_path / 'src2'
    src.mkdir()
    (src / 'VERSION').write_text('2.0')
    current = os.path.join(p['app_root'], 'current')
    two = dict(p, release='2.0', run_id='run-2', src=str(src), snapshot_paths=p['snapshot_paths'] + [current])
    assert deploy(two)['needed'] is True
    rr = ReleaseRoot(p['app_root'])
    assert rr.read_current() == '2.0' and rr.load_ledger()['last_verified'] == '2.0'
    again = dict(two, run_id='run-3', force=True, force_reason='repair')
    opened = engine.open_phase(dict(again), no_run)
    assert opened['needed'] is True and opened['previous_release'] == '2.0'
    engine.stage_phase(dict(again))
    engine.activate_phase(dict(again), no_run)
    res = engine.rollback(dict(again, reason='health check failed'), no_run)
    assert 'redeploy of release 2.0' in res['msg'] and 'restore proven' in res['msg'], res['msg']
    assert res['failsafe_rollback']['quarantined'] is False
    assert res['failsafe_rollback']['running_release'] == '2.0'
    assert rr.read_current() == '2.0'
    ledger = rr.load_ledger()
    assert ledger['releases']['2.0']['state'] == 'verified' and ledger['last_verified'] == '2.0'
    assert ledger['releases']['1.0']['state'] == 'verified'
    assert DeployState(p['state_dir'], 'app').read_journal()['status'] == 'rolled_back'
