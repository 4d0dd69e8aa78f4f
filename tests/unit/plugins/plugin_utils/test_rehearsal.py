# -*- coding: utf-8 -*-
# Copyright: Contributors to failsafe.deploy
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The rehearsal record store (_rehearsal): a record per archive checksum, written and read back; when a record
passes (every step ok: a failed drill fails it whatever the deploys did) and the words of what is missing; a drill
report that proves the restore; the command of a step (the run's inventory and extra vars, then the step's own)."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import json
import os

import pytest

from ansible_collections.failsafe.deploy.plugins.plugin_utils import _rehearsal

SHA = 'ab' * 32


def record(**outcomes):
    steps = [{'name': name, 'outcome': outcomes.get(name, 'ok')} for name in _rehearsal.STEPS]
    return {'release': '2.0.0', 'archive_sha256': SHA, 'steps': steps}


def test_given_a_record_when_written_then_it_is_read_back_by_its_checksum(tmp_path):
    store = str(tmp_path / 'store')
    path = _rehearsal.write_record(store, record())
    assert path == os.path.join(store, SHA + '.json')
    assert oct(os.stat(path).st_mode & 0o777) == '0o600'
    back = _rehearsal.read_record(store, SHA)
    assert back['passed'] is True and back['record'] == path
    assert _rehearsal.read_record(store, 'cd' * 32) is None
    with pytest.raises(ValueError):
        _rehearsal.record_path(store, '../../etc/passwd')


@pytest.mark.parametrize('outcomes, ok', [
    ({}, True),
    ({'drill': 'failed'}, False),
    ({'restore_proven': 'failed', 'deploy': 'not run'}, False),
    ({'deploy': 'failed'}, False),
])
def test_given_step_outcomes_then_a_record_passes_only_when_every_step_is_ok(outcomes, ok):
    assert _rehearsal.passed(record(**outcomes)) is ok


def test_given_no_record_or_a_failed_one_then_the_words_name_what_is_missing(tmp_path):
    store = str(tmp_path)
    assert 'has no rehearsal record in %s' % store in _rehearsal.missing(None, store, SHA, '2.0.0')
    words = _rehearsal.missing(record(restore_proven='failed', deploy='not run'), store, SHA, '2.0.0')
    assert 'did not pass (restore_proven failed, deploy not run' in words
    assert _rehearsal.missing(record(), store, SHA, '2.0.0') is None


def test_given_a_drill_report_then_the_restore_is_proven_only_when_every_host_verified():
    good = {'outcome': 'rolled_back', 'rollback': {'hosts': {'s1': {'status': 'ok', 'verified': True}}}}
    assert _rehearsal.proven(good)
    assert not _rehearsal.proven(dict(good, outcome='rollback_failed'))
    assert not _rehearsal.proven({'outcome': 'rolled_back', 'rollback': {'hosts': {
        's1': {'status': 'ok', 'verified': True}, 's2': {'status': 'failed', 'verified': False}}}})
    assert not _rehearsal.proven({'outcome': 'rolled_back', 'rollback': {'hosts': {}}})


def test_given_the_run_arguments_then_a_step_runs_the_deploy_on_staging_with_the_step_vars_last():
    cliargs = {'inventory': ['inv.ini', 'groups.ini'], 'extra_vars': ['@prod.yml', 'release_version=2.0.0']}
    cmd = _rehearsal.child_command('ansible-playbook', 'failsafe.deploy.deploy', cliargs, 'staging',
                                   {'failsafe_force': True})
    assert cmd[:6] == ['ansible-playbook', 'failsafe.deploy.deploy', '-i', 'inv.ini', '-i', 'groups.ini']
    assert cmd[cmd.index('@prod.yml') - 1] == '-e' and 'release_version=2.0.0' in cmd
    assert cmd[cmd.index('--limit') + 1] == 'staging'
    assert json.loads(cmd[-1]) == {'failsafe_hosts': 'staging', 'failsafe_require_rehearsal': False,
                                   'failsafe_force': True}


def test_given_a_host_that_failed_unreachable_then_its_rollback_quarantines_only_a_release_shown_bad():
    from ansible_collections.failsafe.deploy.plugins.plugin_utils._incident import DeployRun
    from ansible_collections.failsafe.deploy.plugins.plugin_utils._redact import Redactor
    run = DeployRun(Redactor())
    for host in ('web1', 'web2'):
        run.observe_transaction(host, {'txid': 't-' + host, 'run_id': 'r', 'release': '2.0.0', 'status': 'open',
                                       'state_dir': '/var/lib/failsafe-deploy', 'name': 'app'})
    run.record_failure('web1', {'name': 'Switch', 'action': 'failsafe.deploy.transaction'},
                       {'unreachable': True, 'msg': 'ssh: connect to host web1 port 22: No route to host'},
                       unreachable=True)
    run.record_failure('web2', {'name': 'Check the health of the new release', 'action': 'failsafe.deploy.transaction'},
                       {'failed': True, 'msg': 'health check failed: status 503'})
    hosts = run.rollback_hosts(['web1', 'web2'])
    # the unreachable host's failure is its own or its network's: a redeploy gate is not closed by it
    assert hosts['web1']['quarantine'] == 'shown_bad'
    assert 'quarantine' not in hosts['web2']


def test_staging_names_a_group_or_a_host_of_the_inventory_and_nothing_else():
    task_vars = {'groups': {'staging': ['stage1', 'stage2'], 'empty': []}, 'hostvars': {'stage1': {}, 'prod1': {}}}
    assert _rehearsal.staging_hosts(task_vars, 'staging') == ['stage1', 'stage2']
    assert _rehearsal.staging_hosts(task_vars, 'prod1') == ['prod1']
    assert _rehearsal.staging_hosts(task_vars, 'empty') == []
    assert _rehearsal.staging_hosts(task_vars, 'nowhere') == []
