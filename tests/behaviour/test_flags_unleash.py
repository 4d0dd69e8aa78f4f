"""The flags layer on a real Unleash server (unleash-server 7.5.x on Node 20, a private PostgreSQL 15 cluster): a deploy
that turns a feature on in an environment and then fails has it back off after the automatic rollback, read back
through the admin API and through the client API that Unleash SDKs poll. The API token is a secret option: never in
the journal, given back to the rollback in failsafe_rollback_layer_secrets.

Real ansible-playbook runs of failsafe.deploy.deploy against this machine (the examples/demo setup); release 3.0.0
fails its health check. The layer alone, through the transaction engine's apply phase and rollback (the calls the
transaction module makes), puts back features switched either way.
"""
import json
import os

import pytest

from ansible_collections.failsafe.deploy.plugins.module_utils import _engine as engine
from ansible_collections.failsafe.deploy.plugins.module_utils._journal import DeployState
from ansible_collections.failsafe.deploy.plugins.module_utils._layers import _run

from unleash_server import ADMIN_TOKEN, UnleashServer

pytestmark = pytest.mark.slow

FEATURE = 'new-checkout'


@pytest.fixture(scope='module')
def unleash():
    server = UnleashServer()
    yield server
    server.stop()


def test_a_deploy_that_turns_an_unleash_feature_on_and_fails_has_it_back_off(unleash, local_deploy):
    d = local_deploy
    unleash.call('POST', '/api/admin/projects/default/features', {'name': FEATURE})
    assert unleash.enabled(FEATURE) is False
    store = {'backend': 'unleash', 'url': unleash.url, 'environment': 'development', 'token': ADMIN_TOKEN,
             'flags': {FEATURE: {'enabled': True}}}
    key = 'flags:%s/default/development' % unleash.url
    vars_file = os.path.join(d.dir, 'unleash-vars.json')
    with open(vars_file, 'w') as handle:
        json.dump({'failsafe_flags': [store], 'failsafe_rollback_layer_secrets': {key: {'token': ADMIN_TOKEN}}},
                  handle)
    assert d.deploy('1.0.0').returncode == 0
    failed = d.deploy('3.0.0', '-e', '@' + vars_file)
    assert failed.returncode != 0
    assert unleash.enabled(FEATURE) is False
    assert unleash.client_enabled(FEATURE, False) is False
    # the deploy did turn it on, then the rollback off: the server's own event log says so, in that order
    events = unleash.call('GET', '/api/admin/events/%s' % FEATURE)['events']
    switched = [e['type'] for e in sorted(events, key=lambda e: e['id'])
                if e['type'] in ('feature-environment-enabled', 'feature-environment-disabled')]
    assert switched == ['feature-environment-enabled', 'feature-environment-disabled'], events
    journal = d.journal()
    assert journal['status'] == 'rolled_back'
    assert [e.get('key') for e in journal['layers'] if e['kind'] == 'flags'] == [key]
    with open(os.path.join(d.state_dir, 'demo-app', 'journal.json')) as handle:
        assert ADMIN_TOKEN not in handle.read()
    assert ADMIN_TOKEN not in failed.stdout


def test_a_feature_unleash_does_not_have_fails_before_anything_changes(unleash, local_deploy):
    d = local_deploy
    vars_file = os.path.join(d.dir, 'unleash-vars.json')
    with open(vars_file, 'w') as handle:
        json.dump({'failsafe_flags': [{'backend': 'unleash', 'url': unleash.url, 'environment': 'development',
                                       'token': ADMIN_TOKEN, 'flags': {'no-such-feature': {'enabled': True}}}]},
                  handle)
    assert d.deploy('1.0.0').returncode == 0
    proc = d.deploy('2.0.0', '-e', '@' + vars_file)
    assert proc.returncode != 0
    assert "Unleash has no feature 'no-such-feature' in project 'default'" in proc.stdout
    assert d.current() == 'releases/1.0.0'
    assert d.journal()['status'] == 'committed' and '2.0.0' not in d.ledger()['releases']
    # a wrong token is a clear error too
    with open(vars_file, 'w') as handle:
        json.dump({'failsafe_flags': [{'backend': 'unleash', 'url': unleash.url, 'environment': 'development',
                                       'token': 'wrong-token-7f3e', 'flags': {FEATURE: {'enabled': True}}}]}, handle)
    proc = d.deploy('2.0.0', '-e', '@' + vars_file)
    assert proc.returncode != 0 and '(check the API token)' in proc.stdout
    assert 'wrong-token-7f3e' not in proc.stdout


def test_the_layer_alone_switches_features_and_its_undo_puts_each_back_as_it_was(unleash, tmp_path):
    """One feature off and one on before the deploy; the layer switches both the other way, the rollback puts both
    back, read through the admin API and through the client API."""
    was_off, was_on = 'layer-was-off', 'layer-was-on'
    for name in (was_off, was_on):
        unleash.call('POST', '/api/admin/projects/default/features', {'name': name})
    unleash.call('POST', '/api/admin/projects/default/features/%s/environments/development/on' % was_on)
    assert (unleash.enabled(was_off), unleash.enabled(was_on)) == (False, True)
    p = {'state_dir': str(tmp_path / 'state'), 'name': 'flags', 'run_id': 'run-1', 'owner': 'ops@ctl',
         'controller': 'ctl', 'pid': 1, 'ttl': 600, 'recover': True, 'service': {'manager': 'none'}}
    engine.open_phase(p, _run)
    spec = {'kind': 'flags', 'backend': 'unleash', 'url': unleash.url, 'environment': 'development',
            'token': ADMIN_TOKEN, 'flags': {was_off: {'enabled': True}, was_on: {'enabled': False}}}
    res = engine.apply_phase(dict(p, layer=spec), _run)
    assert res['changed'] and res['failsafe_layer_stages'] == ['flags']
    assert (unleash.enabled(was_off), unleash.enabled(was_on)) == (True, False)
    assert (unleash.client_enabled(was_off, True), unleash.client_enabled(was_on, False)) == (True, False)
    out = engine.rollback(dict(p, layer_secrets={'flags': {'token': ADMIN_TOKEN}}), _run)
    assert out['failsafe_rollback']['verified']
    assert (unleash.enabled(was_off), unleash.enabled(was_on)) == (False, True)
    assert (unleash.client_enabled(was_off, False), unleash.client_enabled(was_on, True)) == (False, True)
    ds = DeployState(p['state_dir'], 'flags')
    assert ds.read_journal()['status'] == 'rolled_back'
    with open(ds.journal_path) as handle:
        assert ADMIN_TOKEN not in handle.read()
