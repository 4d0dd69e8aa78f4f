# -*- coding: utf-8 -*-
# Copyright: Contributors to failsafe.deploy
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""One rollback request for one failure, whichever path starts the rollback: the local child, the controller's job
template and the way out printed for an operator get the same hosts, run id, incident, connection keywords and
stages (``_launcher.rollback_request``).

The same failure is played twice through the callback (fake tasks, a real Play for its connection keywords): once
rolled back by the stand-in child of test_auto_rollback.py, once by a fake Automation Controller."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import json
import shlex

from ansible import context
from ansible.inventory.manager import InventoryManager
from ansible.parsing.dataloader import DataLoader
from ansible.playbook.play import Play
from ansible.vars.manager import VariableManager

from ansible_collections.failsafe.deploy.plugins.plugin_utils import _launcher
from ansible_collections.failsafe.deploy.tests.unit.plugins.callback import test_auto_rollback
from ansible_collections.failsafe.deploy.tests.unit.plugins.callback.test_auto_rollback import (
    FakeStats, FakeTask, make_callback, txn,
)
from ansible_collections.failsafe.deploy.tests.unit.plugins.plugin_utils.test_controller import TOKEN, FakeController

# the fixture of test_auto_rollback.py: a clean FAILSAFE_* environment, a typical run's CLIARGS, the stand-in child
env = test_auto_rollback.env


class Result:
    """A TaskResult whose host is the inventory's Host."""

    def __init__(self, host, task, result):
        self.host = host
        self.task = task
        self.result = result


def fail_a_canary_wave(cb, tmp_path):
    """web1 and web2 open their transactions in a play that sets connection keywords; web1 switches the load
    balancer's traffic (lb1, a traffic layer, delegated) and fails its metric gate."""
    (tmp_path / 'hosts.ini').write_text('[web]\nweb1\nweb2\n[lb]\nlb1\n')
    loader = DataLoader()
    inventory = InventoryManager(loader=loader, sources=[str(tmp_path / 'hosts.ini')])
    variables = VariableManager(loader=loader, inventory=inventory)
    cb.v2_playbook_on_play_start(Play.load(dict(hosts='web', name='Deploy', connection='local', become=True,
                                                become_user='app'), variable_manager=variables, loader=loader))
    start = FakeTask('Open transaction', action='failsafe.deploy.transaction')
    cb.v2_playbook_on_task_start(start, False)
    for name in ('web1', 'web2'):
        cb.v2_runner_on_ok(Result(inventory.get_host(name), start, txn(name)))
    apply = FakeTask('Switch traffic', action='failsafe.deploy.transaction')
    cb.v2_playbook_on_task_start(apply, False)
    lb = {'txid': 'tx-lb1', 'run_id': 'run-7', 'name': 'traffic', 'state_dir': '/var/lib/failsafe-deploy',
          'release': None, 'status': 'open', 'inventory_host': 'lb1'}
    cb.v2_runner_on_ok(Result(inventory.get_host('web1'), apply,
                              {'changed': True, 'failsafe_transaction': lb, 'failsafe_layer_stages': ['traffic'],
                               '_ansible_delegated_vars': {'ansible_host': '10.0.0.9'}}))
    gate = FakeTask('Let the wave bake, then judge it by its metrics', action='failsafe.deploy.metric_gate')
    cb.v2_playbook_on_task_start(gate, False)
    cb.v2_runner_on_failed(Result(inventory.get_host('web1'), gate, {'msg': 'metric gate failed'}))
    cb.v2_playbook_on_stats(FakeStats(['web1', 'web2'], failures={'web1': 1}))


def same_incident(request, incident_id):
    """The request with its incident id replaced by a placeholder (each run of the failure has its own)."""
    assert request['failsafe_rollback_incident'] == incident_id
    return dict(request, failsafe_rollback_incident='<incident>')


def printed_extra_vars(command):
    """The extra vars of a printed command, read back as ansible-playbook reads ``-e``."""
    argv = shlex.split(command)
    out = {}
    for flag, value in zip(argv, argv[1:]):
        if flag not in ('-e', '--extra-vars'):
            continue
        if value.startswith('{'):
            out.update(json.loads(value))
        else:
            name, dummy, text = value.partition('=')
            out[name] = text
    return out


def test_the_child_and_the_controller_get_the_same_rollback_request_for_the_same_failure(env):
    # pylint: disable=redefined-outer-name
    child_cb = make_callback(env)[0]
    fail_a_canary_wave(child_cb, env)
    child = json.loads((env / 'child-call.json').read_text())['vars']
    (env / 'child-call.json').unlink()

    fake = FakeController(host_summaries=[{'host_name': h, 'failed': False, 'failures': 0, 'dark': 0}
                                          for h in ('web1', 'web2', 'lb1')])
    try:
        controller_cb = make_callback(env, rollback_via='controller', controller_host=fake.url,
                                      controller_token=TOKEN, controller_rollback_template='7',
                                      controller_poll_interval=0.01, rollback_timeout=20)[0]
        fail_a_canary_wave(controller_cb, env)
    finally:
        fake.close()
    launches = [r for r in fake.requests if r['method'] == 'POST' and r['path'].endswith('/launch/')]
    assert len(launches) == 1 and not (env / 'child-call.json').exists()
    controller = launches[0]['body']['extra_vars']
    assert sorted(launches[0]['body']['limit'].split(',')) == ['lb1', 'web1', 'web2']

    assert same_incident(controller, controller_cb.incident_id) == same_incident(child, child_cb.incident_id)
    # what the request holds: the stages (the load balancer's traffic before the code), the play's keywords
    assert child['failsafe_rollback_stages'] == {'lb1': ['traffic']}
    keywords = {'connection': 'local', 'become': True, 'become_user': 'app'}
    assert child['failsafe_rollback_connection'] == {'web1': keywords, 'web2': keywords, 'lb1': keywords}
    assert sorted(child['failsafe_rollback_hosts']) == ['lb1', 'web1', 'web2']
    assert child['failsafe_rollback_run_id'] == 'run-7' and child['failsafe_hosts'] == 'all'
    assert child_cb.outcome == controller_cb.outcome == 'rolled_back'


def test_the_printed_way_out_carries_the_same_rollback_request(env):
    # pylint: disable=redefined-outer-name
    cb = make_callback(env)[0]
    fail_a_canary_wave(cb, env)
    child = json.loads((env / 'child-call.json').read_text())['vars']
    scope = sorted(child['failsafe_rollback_hosts'])
    # no host says it was rolled back: the way out covers the whole scope
    printed = printed_extra_vars(_launcher.way_out(scope, {}, cb._rollback_request, context.CLIARGS))
    assert printed == child
    request = _launcher.rollback_request('run-7', child['failsafe_rollback_hosts'], cb.incident_id,
                                         connection=child['failsafe_rollback_connection'],
                                         stages={'lb1': ['traffic'], 'web1': ['code']})
    assert request == child


def test_a_request_names_stages_only_for_hosts_that_need_more_than_code():
    request = _launcher.rollback_request('r', {'a': {}, 'b': {}}, 'inc', connection={'a': {}, 'b': {'become': True}},
                                         stages={'a': ['code'], 'b': ['traffic', 'code']})
    assert request['failsafe_rollback_stages'] == {'b': ['traffic', 'code']}
    assert request['failsafe_rollback_connection'] == {'b': {'become': True}}
    alone = _launcher.rollback_request('r', {'a': {}}, 'inc', stages={'a': ['code']})
    assert 'failsafe_rollback_stages' not in alone
