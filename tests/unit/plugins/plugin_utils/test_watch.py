# -*- coding: utf-8 -*-
# Copyright: Contributors to failsafe.deploy
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The watch window's decisions: which alert rolls back which deploy, once, and what is refused."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import json
import multiprocessing
import os

import pytest

from ansible_collections.failsafe.deploy.plugins.plugin_utils import _watch

HOSTS = {'web-1': {'state_dir': '/var/lib/failsafe-deploy', 'name': 'web'}}


def body(service='web', alertname='HighErrorRate', status='firing', expr=None):
    labels = {'alertname': alertname}
    if service is not None:
        labels['service'] = service
    alert = {'status': status, 'labels': labels, 'startsAt': '2026-01-01T00:00:00Z'}
    if expr is not None:
        alert['generatorURL'] = 'http://prometheus:9090/graph?g0.expr=%s&g0.tab=1' % expr.replace(' ', '+')
    return {'version': '4', 'status': status, 'groupKey': 'k', 'alerts': [alert]}


def ids():
    counter = iter(range(1000))
    return lambda: 'inc-%d' % next(counter)


@pytest.fixture
def window(tmp_path):
    return _watch.open_window(str(tmp_path), 'web', 'run-1', '2.0.0', HOSTS, 600, alerts=['HighErrorRate'],
                              queries=['rate(errors_total[1m])  > 0'], now=1000.0)


@pytest.mark.parametrize('payload, words', [
    ([1, 2], 'a JSON object was expected, got list'),
    ('text', 'a JSON object was expected, got str'),
    ({'hello': 'world'}, 'it has no "alerts" list'),
    ({'alerts': []}, 'it has no "alerts" list'),
    ({'alerts': [{'status': 'firing'}]}, 'alert 0 has no "labels" object'),
    ({'alerts': [{'labels': {'alertname': 3}}]}, 'alert 0 has a non-text alertname'),
])
def test_a_body_that_is_not_alertmanagers_is_refused_saying_why(tmp_path, window, payload, words):
    with pytest.raises(_watch.Refused) as error:
        _watch.decide(str(tmp_path), payload, ids(), now=1001.0)
    assert 'not an Alertmanager notification' in str(error.value) and words in str(error.value)
    assert not [n for n in os.listdir(str(tmp_path)) if n.endswith('.claim')]


def test_an_alert_inside_the_window_claims_the_deploy_once(tmp_path, window):
    first = _watch.decide(str(tmp_path), body(), ids(), now=1001.0)
    assert [d['decision'] for d in first] == ['rollback'] and first[0]['incident_id'] == 'inc-0'
    assert 'HighErrorRate' in first[0]['message'] and 'run-1' in first[0]['message']
    with open(_watch.claim_path(str(tmp_path), 'web', 'run-1')) as handle:
        claim = json.load(handle)
    assert claim['incident_id'] == 'inc-0' and claim['alert'].startswith('HighErrorRate')
    again = _watch.decide(str(tmp_path), body(alertname='HighErrorRate'), ids(), now=1002.0)
    assert [d['decision'] for d in again] == ['duplicate'] and again[0]['incident_id'] == 'inc-0'


def test_after_the_window_an_alert_only_notifies(tmp_path, window):
    found = _watch.decide(str(tmp_path), body(), ids(), now=1601.0)
    assert [d['decision'] for d in found] == ['after_window'] and 'NOT rolled back' in found[0]['message']
    assert not os.path.exists(_watch.claim_path(str(tmp_path), 'web', 'run-1'))


def test_unknown_services_and_alerts_without_one_are_refused(tmp_path, window):
    found = _watch.decide(str(tmp_path), body(service='billing'), ids(), now=1001.0)
    assert [d['decision'] for d in found] == ['refused']
    assert "no deploy of service 'billing' is watched here" in found[0]['message']
    found = _watch.decide(str(tmp_path), body(service=None), ids(), now=1001.0)
    assert [d['decision'] for d in found] == ['refused'] and 'names no service' in found[0]['message']
    assert not os.path.exists(_watch.claim_path(str(tmp_path), 'web', 'run-1'))


def test_the_window_counts_its_alerts_by_name_or_by_the_rules_expression(tmp_path, window):
    other = _watch.decide(str(tmp_path), body(alertname='DiskFull'), ids(), now=1001.0)
    assert [d['decision'] for d in other] == ['not_watched']
    by_query = _watch.decide(str(tmp_path), body(alertname='Other', expr='rate(errors_total[1m]) > 0'), ids(),
                             now=1001.0)
    assert [d['decision'] for d in by_query] == ['rollback']


def test_a_resolved_notification_does_nothing(tmp_path, window):
    found = _watch.decide(str(tmp_path), body(status='resolved'), ids(), now=1001.0)
    assert [d['decision'] for d in found] == ['resolved']


def test_a_newer_deploy_replaces_the_window_and_can_be_claimed_again(tmp_path, window):
    assert _watch.decide(str(tmp_path), body(), ids(), now=1001.0)[0]['decision'] == 'rollback'
    _watch.open_window(str(tmp_path), 'web', 'run-2', '2.0.1', HOSTS, 600, now=1100.0)
    found = _watch.decide(str(tmp_path), body(alertname='Anything'), ids(), now=1101.0)
    assert [d['decision'] for d in found] == ['rollback'] and found[0]['window']['run_id'] == 'run-2'


def _claim_in_process(directory, index, results):
    window = _watch.read_window(directory, 'web')
    results.put((index, _watch.claim(directory, window, body()['alerts'][0], 'inc-%d' % index)))


def test_of_a_hundred_processes_claiming_at_once_exactly_one_wins(tmp_path, window):
    """An alert storm: 100 processes claim the same deploy at the same moment; one claim file, one winner."""
    context = multiprocessing.get_context('fork')
    results = context.Queue()
    start = context.Event()

    def racer(index):
        start.wait(30)
        _claim_in_process(str(tmp_path), index, results)

    procs = [context.Process(target=racer, args=(i,)) for i in range(100)]
    for proc in procs:
        proc.start()
    start.set()
    outcomes = [results.get(timeout=60) for dummy in procs]
    for proc in procs:
        proc.join(30)
    winners = [index for index, won in outcomes if won]
    assert len(outcomes) == 100 and len(winners) == 1, winners
    with open(_watch.claim_path(str(tmp_path), 'web', 'run-1')) as handle:
        assert json.load(handle)['incident_id'] == 'inc-%d' % winners[0]


def test_the_incident_says_the_watch_triggered_it_and_which_alert(tmp_path, window):
    decision = _watch.decide(str(tmp_path), body(), ids(), now=1001.0)[0]
    incident = _watch.incident_report(decision, {'rc': 0, 'hosts': {'web-1': {'status': 'ok', 'verified': True}},
                                                 'reason': None, 'log': '/x.log', 'duration': 2.5})
    path = _watch.write_incident(str(tmp_path / 'reports'), incident)
    with open(path) as handle:
        data = json.load(handle)
    assert data['trigger'] == 'watch' and data['outcome'] == 'rolled_back'
    assert data['watch']['alert'].startswith('HighErrorRate') and data['watch']['run_id'] == 'run-1'
    with open(path[:-5] + '.md') as handle:
        text = handle.read()
    assert 'ROLLED BACK by the watch' in text and '- Alert: `HighErrorRate' in text and '| web-1 | ok | yes |' in text
