"""Given a play that sets its own connection keywords, when its deploy fails, then the automatic rollback reaches the
host the same way and restores every captured path.

A rollback playbook is a play of its own: unless told, it reaches a host as the inventory and the command line say,
not as the failed play did. Real ansible-playbook runs against this machine (the examples/demo setup), one with a
play-level `connection: local` on a host whose inventory entry means SSH (to a closed port on loopback, so a
rollback over SSH fails at once), one with a play-level `become: true` through `su`.
"""
import json
import os

import pytest
import yaml

from support import DEMO, ROOT, free_port

pytestmark = pytest.mark.slow

HERE = os.path.dirname(os.path.abspath(__file__))


def write_playbook(d, name, keywords, pre_tasks=None):
    """playbooks/deploy.yml with ``keywords`` added to its play (and ``pre_tasks``), in the site directory."""
    with open(os.path.join(ROOT, 'playbooks', 'deploy.yml')) as f:
        plays = yaml.safe_load(f)
    plays[0].update(keywords)
    if pre_tasks:
        plays[0]['pre_tasks'] = pre_tasks
    path = os.path.join(d.dir, name)
    with open(path, 'w') as f:
        yaml.safe_dump(plays, f, sort_keys=False)
    return path


def write_inventory(d, hosts):
    """The demo inventory with its hosts replaced by ``hosts``."""
    with open(os.path.join(DEMO, 'inventory.yml')) as f:
        inventory = yaml.safe_load(f)
    inventory['all']['hosts'] = hosts
    # The demo names its hook file relative to the inventory's own directory.
    inventory['all']['vars']['failsafe_activate_before_tasks'] = os.path.join(DEMO, 'release-changes.yml')
    path = os.path.join(d.dir, 'inventory.yml')
    with open(path, 'w') as f:
        yaml.safe_dump(inventory, f, sort_keys=False)
    return path


def the_incident(d):
    reports = d.incident_reports()
    assert len(reports) == 1, reports
    with open(reports[0]) as f:
        return json.load(f)


def assert_rolled_back(d, before, failed):
    assert failed.returncode != 0
    assert 'ROLLBACK FAILED' not in failed.stdout, failed.stdout[-6000:]
    incident = the_incident(d)
    assert incident['outcome'] == 'rolled_back', incident['summary']
    assert d.receiver.kinds() == ['deploy_failed', 'rolled_back']
    assert d.digest() == before
    assert d.current() == 'releases/1.0.0'
    assert d.journal()['status'] == 'rolled_back'
    assert not os.path.exists(d.lock_path())
    assert d.http('/version') == (200, '1.0.0')
    return incident


def rollback_vars(incident):
    with open(incident['files']['rollback_vars']) as f:
        return json.load(f)


def test_given_a_play_with_connection_local_when_its_deploy_fails_then_the_rollback_runs_locally_too(local_deploy):
    d = local_deploy
    # Without the play's keyword, this host is reached over SSH: to a port on loopback where nothing listens.
    inventory = write_inventory(d, {'web': {'ansible_host': '127.0.0.1', 'ansible_port': free_port(),
                                            'ansible_python_interpreter': '{{ ansible_playbook_python }}'}})
    playbook = write_playbook(d, 'deploy-local.yml', {'connection': 'local'})
    ok = d.playbook(playbook, '-e', 'release_version=1.0.0', '--timeout', '5', inventory=inventory)
    assert ok.returncode == 0, ok.stdout[-6000:]
    before = d.digest()

    failed = d.playbook(playbook, '-e', 'release_version=3.0.0', '--timeout', '5', inventory=inventory)

    incident = assert_rolled_back(d, before, failed)
    assert incident['rollback']['hosts']['web']['status'] == 'ok'
    assert rollback_vars(incident)['failsafe_rollback_connection'] == {'web': {'connection': 'local'}}


def test_given_a_play_with_become_when_its_deploy_fails_then_the_rollback_becomes_the_same_way(local_deploy):
    d = local_deploy
    # As root, ansible skips a become to the same user unless told not to: then every task of a become play runs
    # through su, and the witness hook can see it in its process ancestry. sudo is not needed (nor installed here).
    d.env['ANSIBLE_BECOME_ALLOW_SAME_USER'] = 'true'
    witness = os.path.join(d.dir, 'witness.log')
    hook = os.path.join(HERE, 'fault_hooks', 'become_witness.yml')
    playbook = write_playbook(d, 'deploy-become.yml', {'become': True, 'become_method': 'su', 'become_user': 'root'},
                              pre_tasks=[{'name': 'Witness how the deploy runs',
                                          'ansible.builtin.include_tasks': hook}])
    args = ('-e', 'failsafe_witness_file=%s' % witness, '-e', 'failsafe_rollback_before_tasks=%s' % hook)
    ok = d.playbook(playbook, '-e', 'release_version=1.0.0', *args)
    assert ok.returncode == 0, ok.stdout[-6000:]
    before = d.digest()

    failed = d.playbook(playbook, '-e', 'release_version=3.0.0', *args)

    incident = assert_rolled_back(d, before, failed)
    with open(witness) as f:
        lines = [line.split(':', 1) for line in f.read().splitlines()]
    phases = [phase for phase, dummy in lines]
    assert phases == ['deploy', 'deploy', 'rollback'], lines
    for phase, chain in lines:
        assert 'su' in chain.split(), (phase, chain)   # the deploy's tasks run through su, so must the rollback's
    assert rollback_vars(incident)['failsafe_rollback_connection'] == {
        'localhost': {'become': True, 'become_method': 'su', 'become_user': 'root'}}
