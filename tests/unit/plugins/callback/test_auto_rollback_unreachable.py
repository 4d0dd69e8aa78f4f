# -*- coding: utf-8 -*-
# Copyright: Contributors to failsafe.deploy
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""An unreachable host with an open transaction is a deploy failure: alerted at once and rolled back.

Driven with the fake objects and the stand-in rollback child of test_auto_rollback.py.
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import json

from ansible_collections.failsafe.deploy.tests.unit.plugins.callback.test_auto_rollback import (  # pylint: disable=unused-import
    FakeResult, FakeStats, FakeTask, env, make_callback, reports, spool, txn,
)


def test_given_open_transactions_when_a_host_becomes_unreachable_then_every_opened_host_is_rolled_back(env):
    # pylint: disable=redefined-outer-name
    cb, display = make_callback(env)
    start = FakeTask('Open transaction', action='failsafe.deploy.deploy_state')
    for host in ('web1', 'web2'):
        cb.v2_runner_on_ok(FakeResult(host, start, txn(host)))
    task = FakeTask('Switch current', role='failsafe.deploy.activate')
    cb.v2_playbook_on_task_start(task, False)
    cb.v2_runner_on_unreachable(FakeResult('web2', task, {'unreachable': True,
                                                          'msg': 'Failed to connect to the host via ssh'}))
    alerts = spool(env)
    assert [a['event'] for a in alerts] == ['deploy_failed']
    assert alerts[0]['host'] == 'web2' and alerts[0]['unreachable'] is True
    assert alerts[0]['cause'] == 'network'

    cb.v2_playbook_on_stats(FakeStats(['web1', 'web2'], dark={'web2': 1}))
    call = json.loads((env / 'child-call.json').read_text())
    assert sorted(call['vars']['failsafe_rollback_hosts']) == ['web1', 'web2']
    assert cb.outcome == 'rolled_back'
    assert [a['event'] for a in spool(env)] == ['deploy_failed', 'rolled_back']
    incident = json.loads([p for n, p in reports(env).items() if n.endswith('.json')][0].read_text())
    assert incident['summary']['failed_hosts'] == ['web2']
    assert incident['failures'][0]['unreachable'] is True
    assert display.warnings == []
