"""The same release with another configuration is deployed as a transaction, never skipped; a configuration change
that fails is rolled back to the configuration before it, and the release stays verified."""
import hashlib
import json
import os

import pytest

from support import free_port, recap_changed

pytestmark = pytest.mark.slow


def config_vars(port, label):
    """Extra vars that give the demo app another configuration file (the same release)."""
    return json.dumps({'failsafe_config_files': [{
        'dest': '{{ failsafe_app_root }}/shared/config/app.json',
        'content': json.dumps({'bind': '127.0.0.1', 'port': port, 'label': label})}]})


def read(path):
    with open(path, 'rb') as f:
        return f.read()


def config_path(d):
    return os.path.join(d.app_root, 'shared', 'config', 'app.json')


def test_given_a_verified_release_when_its_configuration_changes_then_the_change_is_deployed_once(local_deploy):
    d = local_deploy
    first = d.deploy('1.0.0')
    assert first.returncode == 0, first.stdout[-6000:]
    assert d.http('/config') == (200, 'release 1.0.0')
    first_run = d.journal()['run_id']

    changed = d.deploy('1.0.0', '-e', config_vars(d.port, 'tuned'))
    assert changed.returncode == 0, changed.stdout[-6000:]
    assert recap_changed(changed.stdout)['localhost'] > 0
    assert 'configuration change of release 1.0.0' in changed.stdout
    wanted = json.dumps({'bind': '127.0.0.1', 'port': d.port, 'label': 'tuned'}).encode()
    assert hashlib.sha256(read(config_path(d))).hexdigest() == hashlib.sha256(wanted).hexdigest()
    assert d.http('/config') == (200, 'tuned')
    assert d.http('/version') == (200, '1.0.0')
    journal = d.journal()
    assert journal['status'] == 'committed' and journal['release'] == '1.0.0'
    assert journal['run_id'] != first_run
    assert d.ledger()['releases']['1.0.0']['state'] == 'verified'

    before = read(os.path.join(d.state_dir, 'demo-app', 'journal.json'))
    again = d.deploy('1.0.0', '-e', config_vars(d.port, 'tuned'))
    assert again.returncode == 0, again.stdout[-6000:]
    assert recap_changed(again.stdout) == {'localhost': 0}
    assert 'already active and verified on this host: nothing to deploy' in again.stdout
    assert read(os.path.join(d.state_dir, 'demo-app', 'journal.json')) == before
    assert d.http('/config') == (200, 'tuned')


def test_given_a_verified_release_when_a_configuration_change_breaks_its_health_then_the_old_one_is_restored(
        local_deploy):
    d = local_deploy
    first = d.deploy('1.0.0')
    assert first.returncode == 0, first.stdout[-6000:]
    old = read(config_path(d))
    # the app listens on another port than the one its health check asks: the check fails
    broken = d.deploy('1.0.0', '-e', config_vars(free_port(), 'elsewhere'))
    assert broken.returncode != 0, broken.stdout[-6000:]
    assert 'configuration change of release 1.0.0' in broken.stdout
    assert read(config_path(d)) == old
    assert d.http('/config') == (200, 'release 1.0.0')
    assert d.http('/health')[0] == 200
    journal = d.journal()
    assert journal['status'] == 'rolled_back' and journal['release'] == '1.0.0'
    ledger = d.ledger()
    assert ledger['releases']['1.0.0']['state'] == 'verified'
    assert os.readlink(os.path.join(d.app_root, 'current')).endswith('1.0.0')
