# -*- coding: utf-8 -*-
# Copyright: Contributors to failsafe.deploy
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The rollback child reaches each host as the play that opened its transaction did (connection, remote_user,
become, become_method, become_user): the callback hands those play keywords to the child per host.

Real ansible Play, inventory and variable manager objects; the stand-in rollback child of test_auto_rollback.py.
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import json

from ansible.inventory.manager import InventoryManager
from ansible.parsing.dataloader import DataLoader
from ansible.playbook.play import Play
from ansible.template import trust_as_template
from ansible.vars.manager import VariableManager

from ansible_collections.failsafe.deploy.tests.unit.plugins.callback.test_auto_rollback import (  # pylint: disable=unused-import
    FakeStats, FakeTask, env, make_callback, txn,
)


class Result:
    """A TaskResult whose host is the inventory's Host (templated keywords are resolved with its variables)."""

    def __init__(self, host, task, result):
        self.host = host
        self.task = task
        self.result = result


def inventory(tmp_path):
    path = tmp_path / 'hosts.ini'
    path.write_text('[web]\nweb1 ansible_host=192.0.2.1 deploy_user=alice\nweb2 ansible_host=192.0.2.2 deploy_user=bob\n'
                    'web3 ansible_host=192.0.2.3\n')
    loader = DataLoader()
    manager = InventoryManager(loader=loader, sources=[str(path)])
    return loader, manager, VariableManager(loader=loader, inventory=manager)


def play(loader, variables, **keywords):
    # Loaded from a playbook file, a keyword's string is trusted as a template; from Python it must be marked so.
    keywords = dict((k, trust_as_template(v) if isinstance(v, str) else v) for k, v in keywords.items())
    return Play.load(dict(keywords, hosts='all', name='Deploy'), variable_manager=variables, loader=loader)


def open_in(cb, hosts, inv):
    start = FakeTask('Open transaction', action='failsafe.deploy.deploy_state')
    cb.v2_playbook_on_task_start(start, False)
    for name in hosts:
        cb.v2_runner_on_ok(Result(inv.get_host(name), start, txn(name)))


def fail(cb, host, inv):
    task = FakeTask('Check health', role='failsafe.deploy.verify')
    cb.v2_playbook_on_task_start(task, False)
    cb.v2_runner_on_failed(Result(inv.get_host(host), task, {'msg': 'health check failed'}))


def test_given_a_local_become_play_when_it_fails_then_the_child_gets_its_keywords_per_host(env):
    # pylint: disable=redefined-outer-name
    loader, inv, variables = inventory(env)
    cb, display = make_callback(env)
    cb.v2_playbook_on_play_start(play(loader, variables, connection='local', become=True, become_method='su',
                                      remote_user='{{ deploy_user }}'))
    open_in(cb, ('web1', 'web2'), inv)
    cb.v2_playbook_on_play_start(play(loader, variables))   # a later play that sets no keyword
    open_in(cb, ('web3',), inv)
    fail(cb, 'web1', inv)
    cb.v2_playbook_on_stats(FakeStats(['web1', 'web2', 'web3'], failures={'web1': 1}))

    call = json.loads((env / 'child-call.json').read_text())
    assert call['vars']['failsafe_rollback_connection'] == {
        'web1': {'connection': 'local', 'become': True, 'become_method': 'su', 'remote_user': 'alice'},
        'web2': {'connection': 'local', 'become': True, 'become_method': 'su', 'remote_user': 'bob'},
    }
    assert sorted(call['vars']['failsafe_rollback_hosts']) == ['web1', 'web2', 'web3']
    vars_file = [a[1:] for a in call['argv'] if a.startswith('@')][-1]
    assert json.loads(open(vars_file).read())['failsafe_rollback_connection']['web2']['remote_user'] == 'bob'
    assert cb.outcome == 'rolled_back'
    assert display.warnings == []


def test_given_a_play_without_connection_keywords_then_the_child_gets_none(env):
    # pylint: disable=redefined-outer-name
    loader, inv, variables = inventory(env)
    cb = make_callback(env)[0]
    cb.v2_playbook_on_play_start(play(loader, variables, gather_facts=False))
    open_in(cb, ('web1',), inv)
    fail(cb, 'web1', inv)
    cb.v2_playbook_on_stats(FakeStats(['web1'], failures={'web1': 1}))
    call = json.loads((env / 'child-call.json').read_text())
    assert call['vars']['failsafe_rollback_connection'] == {}


def test_given_a_keyword_template_that_does_not_resolve_then_it_is_left_out_with_a_warning(env):
    # pylint: disable=redefined-outer-name
    loader, inv, variables = inventory(env)
    cb, display = make_callback(env)
    cb.v2_playbook_on_play_start(play(loader, variables, connection='local', become_user='{{ no_such_var }}'))
    open_in(cb, ('web3',), inv)
    fail(cb, 'web3', inv)
    cb.v2_playbook_on_stats(FakeStats(['web3'], failures={'web3': 1}))
    call = json.loads((env / 'child-call.json').read_text())
    assert call['vars']['failsafe_rollback_connection'] == {'web3': {'connection': 'local'}}
    assert any('become_user' in w and 'web3' in w for w in display.warnings), display.warnings
    assert not any('error while handling' in w for w in display.warnings)


def test_given_a_keyword_value_not_trusted_as_a_template_then_it_is_never_passed_on_raw(env):
    # pylint: disable=redefined-outer-name
    loader, inv, variables = inventory(env)
    cb, display = make_callback(env)
    untrusted = Play.load({'hosts': 'all', 'connection': 'local', 'remote_user': '{{ deploy_user }}'},
                          variable_manager=variables, loader=loader)
    cb.v2_playbook_on_play_start(untrusted)
    open_in(cb, ('web1',), inv)
    fail(cb, 'web1', inv)
    cb.v2_playbook_on_stats(FakeStats(['web1'], failures={'web1': 1}))
    call = json.loads((env / 'child-call.json').read_text())
    assert call['vars']['failsafe_rollback_connection'] == {'web1': {'connection': 'local'}}
    assert any('remote_user' in w for w in display.warnings), display.warnings
