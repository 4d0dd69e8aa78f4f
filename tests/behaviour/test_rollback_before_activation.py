# -*- coding: utf-8 -*-
# Copyright: Contributors to failsafe.deploy
# SPDX-License-Identifier: GPL-3.0-or-later
"""Rollbacks of deploys that failed before their activation, on this machine (the examples/demo setup).

Given a first deploy (nothing ever deployed) that fails while its release is staged, the automatic rollback undoes
what was applied and checks no release, since there is none: the host is back to "nothing deployed", the lock is
free, and the next deploy works.

Given a host whose deploy died while its release was staged and whose app is not running (as after a reboot: nothing
starts the demo's supervisord at boot), recover.yml starts the last verified release again and checks it.
"""
import os
import subprocess

import pytest

from support import DEMO, VENV_BIN

pytestmark = pytest.mark.slow

FAILING_HOOK = '''---
- name: Fail after the release is staged
  ansible.builtin.fail:
    msg: the after-release hook fails
'''


def run(d, args, extra_env=None):
    """ansible-playbook in a session of its own (a crash point kills a whole process group, never this test's)."""
    env = dict(d.env)
    env.update(extra_env or {})
    cmd = ['ansible-playbook', '-i', os.path.join(DEMO, 'inventory.yml')] + list(args)
    proc = subprocess.run(cmd, env=env, cwd=d.dir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=600, check=False, start_new_session=True)
    with open(os.path.join(d.dir, 'runs.log'), 'a') as log:
        log.write('$ %s %s\n%s\nrc=%s\n' % (' '.join('%s=%s' % kv for kv in (extra_env or {}).items()),
                                            ' '.join(cmd), proc.stdout, proc.returncode))
    return proc


def supervisorctl(d, *args):
    return subprocess.run([os.path.join(VENV_BIN, 'supervisorctl'), '-c',
                           os.path.join(d.dir, 'supervisor', 'supervisord.conf')] + list(args),
                          capture_output=True, text=True, check=False)


def failing_hook(d):
    path = os.path.join(d.dir, 'fail-after-release.yml')
    with open(path, 'w') as handle:
        handle.write(FAILING_HOOK)
    return ['-e', 'failsafe_release_after_tasks=%s' % path]


def corrupt_archive(d):
    with open(os.path.join(d.dir, 'dist', 'app-1.0.0.tar.gz'), 'rb') as handle:
        good = handle.read()
    with open(os.path.join(d.dir, 'dist', 'app-1.0.0.tar.gz'), 'wb') as handle:
        handle.write(b'this is not a tar archive\n' * 10)
    d.restore_archive = good
    return []


@pytest.mark.parametrize('make_it_fail', [failing_hook, corrupt_archive], ids=['after-release-hook', 'bad-archive'])
def test_given_nothing_deployed_when_the_first_deploy_fails_while_staging_then_it_is_rolled_back_to_nothing(
        local_deploy, make_it_fail):
    d = local_deploy
    before = d.digest()
    assert before[os.path.join(d.app_root, 'current')] == ('absent',)
    extra = make_it_fail(d)
    failed = d.deploy('1.0.0', *extra)
    assert failed.returncode != 0
    assert 'ROLLBACK FAILED' not in failed.stdout, failed.stdout[-6000:]
    # nothing deployed is left behind: no current link, no release directory, the lock free, the journal closed
    assert d.digest() == before
    releases = os.path.join(d.app_root, 'releases')
    assert not os.path.isdir(releases) or os.listdir(releases) == []
    assert not os.path.exists(d.lock_path())
    journal = d.journal()
    assert journal['status'] == 'rolled_back' and journal['previous_release'] is None
    if os.path.exists(os.path.join(d.app_root, '.failsafe', 'ledger.json')):
        assert d.ledger()['releases'] == {} and d.ledger()['current'] is None
    assert d.receiver.kinds() == ['deploy_failed', 'rolled_back']
    # the next deploy of a good release works
    if getattr(d, 'restore_archive', None):
        with open(os.path.join(d.dir, 'dist', 'app-1.0.0.tar.gz'), 'wb') as handle:
            handle.write(d.restore_archive)
    ok = d.deploy('1.0.0')
    assert ok.returncode == 0, ok.stdout[-6000:]
    assert d.current() == 'releases/1.0.0'
    assert d.ledger()['releases']['1.0.0']['state'] == 'verified'
    assert d.journal()['status'] == 'committed'
    assert d.http('/version') == (200, '1.0.0')


@pytest.mark.parametrize('how', ['crash-while-staging', 'failed-hook-not-rolled-back'])
def test_given_a_deploy_left_open_before_activation_and_the_app_stopped_when_recovering_then_it_runs_again(
        local_deploy, how):
    d = local_deploy
    ok = d.deploy('1.0.0')
    assert ok.returncode == 0, ok.stdout[-6000:]
    before = d.digest()
    if how == 'crash-while-staging':
        # the controller dies while the release is unpacked: nothing rolls it back
        left = run(d, ['failsafe.deploy.deploy', '-e', 'release_version=2.0.0'],
                   {'FAILSAFE_CRASH_AT': 'release.staged-tmp', 'FAILSAFE_CRASH_SCOPE': 'controller'})
    else:
        left = run(d, ['failsafe.deploy.deploy', '-e', 'release_version=2.0.0'] + failing_hook(d),
                   {'FAILSAFE_AUTO_ROLLBACK_ENABLED': 'false'})
    assert left.returncode != 0
    journal = d.journal()
    assert journal['status'] == 'open' and journal['release'] == '2.0.0'
    assert 'service' not in [entry['kind'] for entry in journal['layers']]
    # as after a reboot: the app is not running
    stopped = supervisorctl(d, 'stop', 'demo-app')
    assert 'stopped' in stopped.stdout, stopped.stdout + stopped.stderr
    assert 'RUNNING' not in supervisorctl(d, 'status', 'demo-app').stdout
    proc = run(d, ['failsafe.deploy.recover'])
    assert proc.returncode == 0, proc.stdout[-6000:]
    assert 'ROLLBACK FAILED' not in proc.stdout
    journal = d.journal()
    assert journal['status'] == 'rolled_back' and journal['release'] == '2.0.0'
    assert not os.path.exists(d.lock_path())
    assert d.digest() == before
    assert d.current() == 'releases/1.0.0'
    assert 'RUNNING' in supervisorctl(d, 'status', 'demo-app').stdout
    assert d.http('/version') == (200, '1.0.0')
    # the release that never ran is not quarantined, and its staging is gone
    assert d.ledger()['releases'].get('2.0.0', {}).get('state') != 'failed'
    assert not os.path.exists(os.path.join(d.app_root, 'releases', '2.0.0'))
    # and the next deploy works
    again = d.deploy('2.0.0')
    assert again.returncode == 0, again.stdout[-6000:]
    assert d.http('/version') == (200, '2.0.0')
