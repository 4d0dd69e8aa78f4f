# -*- coding: utf-8 -*-
# Copyright: Contributors to failsafe.deploy
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The host's own revert alerts by itself: a real detached watchdog posts to a real HTTP receiver when it reverts,
the webhook's settings stay on the host (owner-only) only while the timer is armed, and the facts the next run
reads say which incident was alerted and whether it was delivered."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import json
import os
import stat
import time

from ansible_collections.failsafe.deploy.plugins.module_utils import _confirm
from ansible_collections.failsafe.deploy.plugins.module_utils import _engine as engine
from ansible_collections.failsafe.deploy.plugins.module_utils._journal import DeployState
from ansible_collections.failsafe.deploy.plugins.module_utils._release import ReleaseRoot
from ansible_collections.failsafe.deploy.plugins.plugin_utils._outcome import linked_incident
from ansible_collections.failsafe.deploy.plugins.plugin_utils._summary import self_revert_warning
from ansible_collections.failsafe.deploy.tests.helpers import Receiver, free_port
from ansible_collections.failsafe.deploy.tests.unit.plugins.module_utils.test_confirm import (
    confirm_dir, host, no_run, wait_for, watchdogs,
)

__all__ = ['host']  # the fixture


def activate(host, seconds, url):
    engine.open_phase(dict(host), no_run)
    with open(os.path.join(host['app_root'], 'shared', 'app.json'), 'w') as handle:
        handle.write('{"label": "two"}')
    return engine.activate_phase(dict(host, confirm_timeout=seconds,
                                      confirm_alert={'webhook_url': url, 'host': 'web-1'}), no_run)


def alert_file(host, txid):
    return os.path.join(confirm_dir(host), '%s.alert' % txid)


def holding(root, secret):
    found = []
    for folder, dummy, names in os.walk(root):
        for name in names:
            path = os.path.join(folder, name)
            if os.path.isfile(path) and not os.path.islink(path):
                with open(path, 'rb') as handle:
                    if secret.encode() in handle.read():
                        found.append(path)
    return found


def test_the_watchdogs_revert_alerts_by_itself_and_the_webhook_leaves_the_host(host):
    receiver = Receiver(path='/secret-hook-token', statuses=[503])
    try:
        res = activate(host, 2, receiver.url)
        ds = DeployState(host['state_dir'], 'app')
        txid = ds.read_journal()['txid']
        assert res['confirm']['alert'] == ['webhook']
        path = alert_file(host, txid)
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        with open(path) as handle:
            assert json.load(handle)['webhook_url'] == receiver.url
        wait_for(lambda: len(receiver.events) >= 2, 30, 'the revert alerts (once refused with 503, then again)')
        wait_for(lambda: not watchdogs(confirm_dir(host)), 10, 'the watchdog ends after its revert')
        assert ReleaseRoot(host['app_root']).read_current() == '1.0'
        first, second = receiver.events
        assert first == dict(second, time=first['time'], at=first['at']), 'the retry sends the same alert'
        assert second['event'] == 'self_reverted' and second['severity'] == 'error'
        assert second['host'] == 'web-1' and second['txid'] == txid and second['outcome'] == 'rolled_back'
        assert second['releases'] == ['2.0'] and second['previous_releases'] == ['1.0']
        assert second['verified'] is True and 'restore proven' in second['summary']
        assert second['source'] == 'failsafe.deploy.watchdog'
        facts = _confirm.read_facts(ds)
        alert = facts['alert']
        assert alert['incident_id'] == second['incident_id'] and alert['incident_id'].startswith('inc-')
        assert (alert['status'], alert['attempts'], alert['http_status']) == ('delivered', 2, 200), alert
        assert not os.path.exists(path)
        assert holding(host['state_dir'], 'secret-hook-token') == []
        # the run that reports the revert names the same incident and says it was heard
        assert linked_incident({'web-1': facts}) == alert['incident_id']
        assert 'the host alerted it itself as incident %s' % alert['incident_id'] in self_revert_warning('web-1', facts)
        assert len(receiver.events) == 2
    finally:
        receiver.close()


def test_an_alert_nobody_received_is_said_so_and_no_incident_is_linked(host):
    url = 'http://127.0.0.1:%d/secret-hook-token' % free_port()
    activate(host, 1, url)
    ds = DeployState(host['state_dir'], 'app')
    wait_for(lambda: ((_confirm.read_facts(ds) or {}).get('alert') or {}).get('status') == 'failed', 40,
             'the revert records its failed alert')
    facts = _confirm.read_facts(ds)
    alert = facts['alert']
    assert alert['attempts'] == _confirm.ALERT_ATTEMPTS and 'connection failed' in alert['error'], alert
    assert 'secret-hook-token' not in json.dumps(facts)
    assert linked_incident({'web-1': facts}) is None
    assert 'was NOT delivered' in self_revert_warning('web-1', facts)
    assert holding(host['state_dir'], 'secret-hook-token') == []


def test_the_commit_and_a_rollback_remove_the_webhook_from_the_host(host):
    receiver = Receiver()
    try:
        activate(host, 120, receiver.url)
        ds = DeployState(host['state_dir'], 'app')
        txid = ds.read_journal()['txid']
        assert os.path.exists(alert_file(host, txid))
        engine.confirmed_commit(dict(host))
        assert not os.path.exists(alert_file(host, txid)) and holding(host['state_dir'], receiver.url) == []

        # a later deploy of the same host, rolled back by the run: its webhook leaves with the watchdog
        activate(dict(host, release='1.0', run_id='run-2'), 120, receiver.url)
        txid = ds.read_journal()['txid']
        assert os.path.exists(alert_file(host, txid))
        engine.guarded_rollback(dict(host, run_id='run-2', reason='verify failed'), no_run)
        assert not os.path.exists(alert_file(host, txid)) and holding(host['state_dir'], receiver.url) == []
        time.sleep(0.5)
        assert receiver.events == [], 'only the host\'s own revert alerts'
    finally:
        receiver.close()


def test_a_late_confirmations_revert_alerts_nothing_the_run_does(host):
    receiver = Receiver()
    try:
        activate(host, 120, receiver.url)
        ds = DeployState(host['state_dir'], 'app')
        txid = ds.read_journal()['txid']
        facts = _confirm.revert(ds, txid, engine.guarded_rollback, by='the late confirmation')
        assert facts['outcome'] == 'rolled_back' and 'alert' not in facts
        assert not os.path.exists(alert_file(host, txid))
        time.sleep(0.5)
        assert receiver.events == []
    finally:
        receiver.close()


def test_post_alert_retries_what_may_pass_and_never_names_the_url():
    receiver = Receiver(path='/t0ken', statuses=[400])
    try:
        result = _confirm.post_alert(receiver.url, {'event': 'self_reverted'}, timeout=2, sleep=lambda s: None)
        assert (result['status'], result['attempts'], result['http_status']) == ('failed', 1, 400), result
    finally:
        receiver.close()
    url = 'http://127.0.0.1:%d/t0ken' % free_port()
    result = _confirm.post_alert(url, {'event': 'self_reverted'}, timeout=2, sleep=lambda s: None)
    assert (result['status'], result['attempts']) == ('failed', 3) and 't0ken' not in result['error'], result
    assert _confirm.alert_settings({'confirm_alert': None}) is None
    assert _confirm.alert_settings({'confirm_alert': {'webhook_url': ''}}) is None
    assert _confirm.alert_settings({'confirm_alert': {'webhook_url': url}})['timeout'] == _confirm.ALERT_TIMEOUT
