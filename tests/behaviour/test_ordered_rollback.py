"""The rollback of every layer in order, across hosts: flags, then (traffic, when a host has it) code and
configuration, then (the database, when a host has it), each stage undone and verified on every host before the next.

Real ansible-playbook runs against this machine with three inventory hosts (connection local, each with its own state
directory): a flag host whose part of the deploy is a flagd flag file (a transaction of layers only), a host whose
part is a configuration file (a layers-only transaction with a snapshot, undone in the code stage) and an app host
deployed with the real example app under supervisord. The app's release 3.0.0 fails its health check; the
auto_rollback callback runs failsafe.deploy.rollback, one play per stage. A before-rollback hook on every host notes
what the flag file holds when that host's rollback begins: the code stage must see the flags already put back.

When the flags undo fails (the flag file was corrupted), the later stages are not attempted: the app stays on the
failed release with its transaction open, and the outcome is ROLLBACK FAILED naming the flags layer.
"""
import json
import os
import shutil

import pytest
import yaml

from support import DEMO

pytestmark = pytest.mark.slow

FLAG = 'new-checkout'
BEFORE = {'flags': {FLAG: {'state': 'ENABLED', 'variants': {'on': True, 'off': False}, 'defaultVariant': 'off'}}}
HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.fixture
def layered(local_deploy):
    d = local_deploy
    site = d.dir
    d.flag_file = os.path.join(site, 'flags', 'app.flagd.json')
    d.config_file = os.path.join(site, 'lb', 'backend.conf')
    d.order_log = os.path.join(site, 'rollback-order.log')
    os.makedirs(os.path.dirname(d.flag_file))
    os.makedirs(os.path.dirname(d.config_file))
    with open(d.flag_file, 'w') as handle:
        json.dump(BEFORE, handle)
    with open(d.config_file, 'w') as handle:
        handle.write('backend old\n')
    with open(os.path.join(DEMO, 'inventory.yml')) as handle:
        demo = yaml.safe_load(handle)
    shutil.copy(os.path.join(DEMO, 'release-changes.yml'), os.path.join(site, 'release-changes.yml'))
    local = {'ansible_connection': 'local', 'ansible_python_interpreter': '{{ ansible_playbook_python }}'}
    hook = {'failsafe_rollback_before_tasks': os.path.join(HERE, 'fault_hooks', 'record_rollback_start.yml'),
            'failsafe_test_flag_file': d.flag_file, 'failsafe_test_config_file': d.config_file,
            'failsafe_test_order_log': d.order_log}
    inventory = {'all': {'vars': hook, 'children': {
        'app': {'hosts': {'apphost': dict(local, **demo['all']['vars'])}},
        'flags': {'hosts': {'flaghost': dict(local, failsafe_name='flags', failsafe_state_dir=os.path.join(
            site, 'flag-state'), failsafe_service_manager='none',
            failsafe_flags=[{'path': d.flag_file, 'flags': {FLAG: {'enabled': True}}}])}},
        'config': {'hosts': {'cfghost': dict(local, failsafe_name='lb', failsafe_state_dir=os.path.join(
            site, 'lb-state'), failsafe_service_manager='none', failsafe_test_snapshot_paths=[d.config_file])}},
    }}}
    d.inventory = os.path.join(site, 'inventory.yml')
    with open(d.inventory, 'w') as handle:
        yaml.safe_dump(inventory, handle)
    return d


def reset(d):
    """Between the deploys, the flag and the configuration go back to their first state by hand, so that the failing
    deploy changes both and a rollback that left either alone cannot pass."""
    with open(d.flag_file, 'w') as handle:
        json.dump(BEFORE, handle)
    with open(d.config_file, 'w') as handle:
        handle.write('backend old\n')


def deploy(d, version, *args):
    return d.playbook(os.path.join(HERE, 'playbooks', 'layers_across_hosts.yml'), '-e',
                      'release_version=%s' % version, *args, inventory=d.inventory)


def journal(d, state, name):
    with open(os.path.join(d.dir, state, name, 'journal.json')) as handle:
        return json.load(handle)


def order_lines(d):
    with open(d.order_log) as handle:
        return [line.split(' ', 2) for line in handle.read().splitlines()]


def flag_now(d):
    with open(d.flag_file) as handle:
        return handle.read()


def test_flags_are_undone_and_verified_on_their_host_before_the_code_stage_starts_anywhere(layered):
    d = layered
    ok = deploy(d, '1.0.0')
    assert ok.returncode == 0, ok.stdout[-6000:]
    # the first deploy turned the flag on and committed; the state before the failing deploy is that one
    on = json.loads(flag_now(d))
    assert on['flags'][FLAG]['defaultVariant'] == 'on'
    reset(d)
    failed = deploy(d, '3.0.0')
    assert failed.returncode != 0
    assert json.loads(flag_now(d)) == BEFORE
    with open(d.config_file) as handle:
        assert handle.read() == 'backend old\n'
    assert d.current() == 'releases/1.0.0'
    for state, name in (('flag-state', 'flags'), ('lb-state', 'lb'), ('state', 'demo-app')):
        assert journal(d, state, name)['status'] == 'rolled_back', (state, journal(d, state, name))
    lines = order_lines(d)
    hosts = [host for dummy, host, dummy2 in lines]
    assert sorted(hosts) == ['apphost', 'cfghost', 'flaghost'], lines
    first = dict((host, (float(t), rest)) for t, host, rest in lines)
    # the flag host began first, with the flag still on; every code-stage host began after, with it back off
    assert '"defaultVariant":"on"' in first['flaghost'][1]
    for host in ('apphost', 'cfghost'):
        assert first[host][0] > first['flaghost'][0]
        assert '"defaultVariant":"off"' in first[host][1], lines
    report = json.load(open(d.incident_reports()[-1]))
    assert report['outcome'] == 'rolled_back'


def test_a_failed_flags_undo_stops_the_later_stages_with_rollback_failed_naming_the_layer(layered):
    d = layered
    ok = deploy(d, '1.0.0')
    assert ok.returncode == 0, ok.stdout[-6000:]
    reset(d)
    failed = deploy(d, '3.0.0', '-e', 'failsafe_test_break_flags=true')
    assert failed.returncode != 0
    assert 'ROLLBACK FAILED' in failed.stdout
    # the flags undo failed and said which layer; the code stage was not attempted anywhere
    flags_journal = journal(d, 'flag-state', 'flags')
    assert flags_journal['status'] == 'rollback_failed'
    assert 'flags:%s' % d.flag_file in json.dumps(flags_journal['outcome'])
    assert d.current() == 'releases/3.0.0'
    assert journal(d, 'state', 'demo-app')['status'] == 'open'
    with open(d.config_file) as handle:
        assert handle.read() == 'backend new\n'
    assert journal(d, 'lb-state', 'lb')['status'] == 'open'
    assert [host for dummy, host, dummy2 in order_lines(d)] == ['flaghost']
    report = json.load(open(d.incident_reports()[-1]))
    assert report['outcome'] == 'rollback_failed'
    assert 'flags:%s' % d.flag_file in json.dumps(report['rollback'])
    log = open(report['files']['rollback_log']).read()
    assert 'not undoing the code stage on apphost' in log and 'not undoing the code stage on cfghost' in log
