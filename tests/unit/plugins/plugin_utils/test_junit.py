# -*- coding: utf-8 -*-
# Copyright: Contributors to failsafe.deploy
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The JUnit XML of an incident: one case per host and phase from the timeline, the failed case from the failures."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import xml.etree.ElementTree as ET

from ansible_collections.failsafe.deploy.plugins.plugin_utils._junit import render_junit, write_junit


def timeline():
    events = []
    for role, hosts in (('failsafe.deploy.preflight', {'web1': 'ok', 'web2': 'ok'}),
                        ('failsafe.deploy.activate', {'web1': 'changed', 'web2': 'changed'}),
                        ('failsafe.deploy.verify', {'web1': 'ok', 'web2': 'failed'})):
        events.append({'event': 'task_start', 'task': 'a task', 'role': role})
        events.extend({'event': 'result', 'host': h, 'task': 'a task', 'status': s} for h, s in sorted(hosts.items()))
    return events


def incident():
    return {
        'incident_id': 'inc-1', 'outcome': 'rolled_back',
        'summary': {'outcome_label': 'ROLLED BACK', 'releases': ['3.0.0'], 'cause': 'health'},
        'failures': [{'host': 'web2', 'task': 'failsafe.deploy.verify : Check the health <of> "it"',
                      'role': 'failsafe.deploy.verify', 'path': '/x/verify/tasks/main.yml:16', 'cause': 'health',
                      'evidence': 'health check failed', 'message': 'status 503 & \x01 body', 'rescued': False}],
        'timeline': timeline(),
        'rollback': {'hosts': {'web1': {'status': 'ok', 'verified': True},
                               'web2': {'status': 'failed', 'verified': False, 'error': 'restart failed'}}},
        'files': {'report_json': '/r/inc-1.json'},
    }


def cases(xml):
    root = ET.fromstring(xml.encode('utf-8'))
    return root, [(c.get('classname'), c.get('name'), c.find('failure')) for c in root.iter('testcase')]


def test_one_case_per_host_and_phase_and_rollback_and_the_failure_names_cause_and_evidence():
    root, found = cases(render_junit(incident()))
    assert [(h, p, f is not None) for h, p, f in found] == [
        ('web1', 'preflight', False), ('web1', 'activate', False), ('web1', 'verify', False),
        ('web2', 'preflight', False), ('web2', 'activate', False), ('web2', 'verify', True),
        ('web1', 'rollback', False), ('web2', 'rollback', True)]
    failure = found[5][2]
    assert failure.get('type') == 'health'
    assert failure.get('message') == 'web2: verify failed (health, health check failed)'
    assert 'evidence: health check failed' in failure.text and 'at: /x/verify/tasks/main.yml:16' in failure.text
    assert 'Check the health <of> "it"' in failure.text and 'status 503 & ? body' in failure.text
    assert 'restart failed' in found[7][2].text
    suite = root.find('testsuite')
    assert (suite.get('tests'), suite.get('failures')) == ('8', '2')
    props = dict((p.get('name'), p.get('value')) for p in suite.iter('property'))
    assert props['outcome'] == 'rolled_back' and props['incident_id'] == 'inc-1' and props['cause'] == 'health'


def test_a_deploy_without_an_incident_has_passing_cases_only(tmp_path):
    path = write_junit(str(tmp_path / 'out' / 'junit.xml'),
                       {'outcome': 'committed', 'timeline': timeline()[:6], 'summary': {'releases': ['2.0.0']}})
    with open(path, encoding='utf-8') as handle:
        root, found = cases(handle.read())
    assert list(found) == [
        ('web1', 'preflight', None), ('web1', 'activate', None), ('web2', 'preflight', None), ('web2', 'activate', None)]
    assert root.get('name') == 'failsafe.deploy 2.0.0: DEPLOYED'


def test_a_failure_outside_any_timeline_phase_still_gets_its_case():
    data = incident()
    data['timeline'] = []
    data['rollback'] = {}
    data['failures'][0]['role'] = None
    root, found = cases(render_junit(data))
    assert [(h, p, f is not None) for h, p, f in found] == [('web2', 'play', True)]
