# -*- coding: utf-8 -*-
# Copyright: Contributors to failsafe.deploy
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The HTML incident report: self-contained, escaped, a timeline with a lane per host, the failure marked, the
rollback band, alerts; the cause, the layers undone and their verification, the dependency probes.
test_html_chromium.py renders the same report in a real browser."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import copy
import os
import re
from html.parser import HTMLParser

import pytest

from ansible_collections.failsafe.deploy.plugins.plugin_utils import _html
from ansible_collections.failsafe.deploy.plugins.plugin_utils._html import lanes, render_html
from ansible_collections.failsafe.deploy.plugins.plugin_utils._incident import write_report

T0 = 1700000000.0
TASK = 'Restart | app'
MESSAGE = 'exit 1 <boom> & "quotes"'


def ev(dt, event, host=None, task=None, **detail):
    entry = {'t': T0 + dt, 'at': '2023-11-14T22:13:%06.3fZ' % (20 + dt), 'event': event}
    if host:
        entry['host'] = host
    if task:
        entry['task'] = task
    entry.update(detail)
    return entry


def incident(outcome='rolled_back'):
    """Three hosts; web2 fails 'Restart | app', every host is rolled back (web3's restore fails when the outcome
    is rollback_failed); two alerts."""
    timeline = [ev(0, 'playbook_start'), ev(0.1, 'task_start', task='Open the transaction')]
    for n, host in enumerate(('web1', 'web2', 'web3')):
        timeline.append(ev(0.3 + n * 0.1, 'result', host, 'Open the transaction', status='changed'))
        timeline.append(ev(0.35 + n * 0.1, 'transaction_opened', host, txid='tx-' + host, status='open',
                           release='r2'))
    timeline.append(ev(1.0, 'task_start', task=TASK))
    timeline.append(ev(1.8, 'result', 'web1', TASK, status='changed'))
    timeline.append(ev(2.2, 'failure', 'web2', TASK, cause='script_error', in_scope=True, message=MESSAGE))
    timeline.append(ev(2.4, 'result', 'web3', TASK, status='ok'))
    timeline.append(ev(2.5, 'alert', 'web2', alert='deploy_failed', spool='written', webhook='delivered'))
    timeline.append(ev(2.6, 'rollback_start', hosts=['web1', 'web2', 'web3'], playbook='failsafe.deploy.rollback'))
    timeline.append(ev(5.6, 'rollback_end', rc=0 if outcome == 'rolled_back' else 2, duration=3.0))
    failed = outcome != 'rolled_back'
    hosts = {}
    for host in ('web1', 'web2', 'web3'):
        bad = failed and host == 'web3'
        timeline.append(ev(5.6, 'rollback_host', host, status='failed' if bad else 'ok', verified=not bad))
        hosts[host] = {
            'status': 'failed' if bad else 'ok', 'verified': not bad,
            'failed_tasks': [{'task': 'Roll back', 'message': 'disk <full>'}] if bad else [],
            'restored': {
                'target_release': 'r1', 'failed_release': 'r2', 'quarantined': True, 'verified': not bad,
                'txid': 'tx-' + host, 'restored': ['/srv/app/current', '/srv/app/shared/config/app.json'],
                'layers': [{'kind': 'files', 'undone': True}, {'kind': 'release', 'undone': True},
                           {'kind': 'service', 'undone': not bad, 'action': 'restarted'}],
                'checks': [{'name': 'health', 'type': 'http', 'ok': not bad, 'attempts': 1, 'elapsed': 0.07,
                            'expected': 'GET /health answering 200', 'error': 'status 503' if bad else None,
                            'observed': 'status %d' % (503 if bad else 200)}],
                'timings': {'undo': 1.5, 'checks': 0.07, 'prove': 0.01},
            }}
    timeline.append(ev(5.7, 'alert', alert='rollback_failed' if failed else 'rolled_back', spool='written',
                       webhook='delivered'))
    return {
        'schema': 1,
        'incident_id': 'inc-20231114T221320Z-0badc0de',
        'outcome': outcome,
        'summary': {'outcome': outcome, 'reason': 'rollback playbook exited 2' if failed else None,
                    'releases': ['r2'], 'previous_releases': ['r1'], 'run_id': 'run-42', 'cause': 'script_error',
                    'likely_cause': 'Likely cause: the check <b>itself</b>' if failed else None,
                    'failed_hosts': ['web2'], 'rollback_scope': 'opened', 'scope_hosts': ['web2', 'web1', 'web3'],
                    'detected_at': '2023-11-14T22:13:22.200Z', 'detection_seconds': 1.2,
                    'seconds_to_rollback': 0.4, 'verification': 'FAILED on web3' if failed else 'passed on every host'},
        'failures': [{'host': 'web2', 'task': TASK, 'role': 'failsafe.deploy.activate',
                      'path': '/p/roles/activate/tasks/main.yml:12', 'cause': 'script_error', 'evidence': 'rc=1',
                      'message': MESSAGE, 'at': '2023-11-14T22:13:22.200Z', 'time': T0 + 2.2,
                      'result': {'rc': 1, 'checks': [{'name': 'health', 'ok': False, 'expected': 'answering 200',
                                                      'observed': 'status 503', 'error': 'status 503'}]}}],
        'rollback': {'playbook': 'failsafe.deploy.rollback', 'started': T0 + 2.6, 'ended': T0 + 5.6,
                     'started_at': '2023-11-14T22:13:22.600Z', 'ended_at': '2023-11-14T22:13:25.600Z',
                     'duration': 3.0, 'rc': 2 if failed else 0, 'hosts': hosts},
        'alerts': [{'event': 'deploy_failed', 'at': 'x', 'spool': 'written', 'webhook': 'delivered'},
                   {'event': 'rollback_failed' if failed else 'rolled_back', 'at': 'y', 'spool': 'written',
                    'webhook': 'delivered'}],
        'timeline': timeline,
    }


class Collector(HTMLParser):
    """Parses the page strictly enough to catch broken markup: every element and its attributes, and the text."""

    VOID = frozenset(('meta', 'br', 'img', 'input', 'link', 'hr'))

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.elements = []
        self.text = []
        self.stack = []

    def handle_starttag(self, tag, attrs):
        self.elements.append((tag, dict(attrs)))
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        self.elements.append((tag, dict(attrs)))

    def handle_endtag(self, tag):
        assert self.stack and self.stack[-1] == tag, 'unbalanced </%s> after %s' % (tag, self.stack[-3:])
        self.stack.pop()

    def handle_data(self, data):
        self.text.append(data)

    def find(self, cls=None, tag=None):
        return [(t, a) for t, a in self.elements if (tag is None or t == tag)
                and (cls is None or cls in (a.get('class') or '').split())]


def parse(page):
    collector = Collector()
    collector.feed(page)
    collector.close()
    assert collector.stack == [], 'unclosed elements: %s' % collector.stack
    return collector


def test_a_rolled_back_incident_has_lanes_bars_failure_band_and_alerts():
    page = render_html(incident())
    doc = parse(page)
    assert page.startswith('<!DOCTYPE html>')
    assert [a['data-lane'] for dummy, a in doc.find('lane')] == ['web1', 'web2', 'web3', 'controller']
    markers = doc.find('failure-marker')
    assert len(markers) == 1 and markers[0][1]['data-host'] == 'web2' and markers[0][1]['id'] == 'failure-marker-1'
    # the marker's title names host, task and message (the parser unescapes it)
    titles = re.findall(r'<g class="failure-marker"[^>]*><title>([^<]*)</title>', page)
    assert titles == ['FAILED on web2: Restart | app \u2014 exit 1 &lt;boom&gt; &amp; &quot;quotes&quot;']
    assert len(doc.find('rollback-phase')) == 1 and 'id="rollback-band"' in page
    assert len(doc.find('alert-marker')) == 2
    assert [a['data-host'] for dummy, a in doc.find('rollback-host-marker')] == ['web1', 'web2', 'web3']
    # a bar per host result: 3 opens and web1's and web3's restarts; the failure is a failed bar as well
    bars = doc.find('bar')
    assert len(bars) == 6 and len(doc.find('status-failed', tag='rect')) == 1
    assert 'ROLLED BACK' in ''.join(doc.text)


def test_bars_run_from_the_task_start_to_the_hosts_result():
    bars = _html._bars(incident()['timeline'])
    restart = [(h, round(s - T0, 2), round(e - T0, 2), st) for h, s, e, task, st in bars if task == TASK]
    assert restart == [('web1', 1.0, 1.8, 'changed'), ('web2', 1.0, 2.2, 'failed'), ('web3', 1.0, 2.4, 'ok')]


def test_rollback_failed_is_prominent_with_cause_layers_and_checks():
    page = render_html(incident('rollback_failed'))
    doc = parse(page)
    banner = [a for t, a in doc.elements if a.get('id') == 'outcome'][0]
    assert 'outcome-rollback_failed' in banner['class']
    assert re.search(r'<div class="banner outcome-rollback_failed" id="outcome" role="alert">ROLLBACK FAILED<small>',
                     page)
    assert 'Likely cause: the check &lt;b&gt;itself&lt;/b&gt;' in page
    # layers undone per host, web3's service not undone
    web3 = page[page.index('<div class="rollback-host" data-host="web3">'):]
    web3 = web3[:web3.index('</div>')]
    assert '<td>service</td><td><span class="no">NO</span></td><td>restarted</td>' in web3
    assert '<td>files</td><td><span class="yes">yes</span></td>' in web3
    assert 'disk &lt;full&gt;' in web3
    # verification checks with expected and observed
    assert '<td>GET /health answering 200</td><td>status 503</td><td>status 503</td>' in web3
    assert [a['data-host'] for dummy, a in doc.find('rollback-host-marker')
            if 'status-failed' in a['class'].split()] == ['web3']
    assert 'None configured.' in page


def test_every_value_is_escaped():
    evil = '<script>alert(1)</script>"\'&'
    data = incident('rollback_failed')
    data['incident_id'] = evil
    data['failures'][0]['task'] = evil
    data['failures'][0]['message'] = evil
    data['summary']['cause'] = evil
    data['outcome'] = evil
    data['rollback']['hosts'][evil] = {'status': evil, 'restored': {'layers': [{'kind': evil, 'undone': evil}]}}
    data['timeline'].append(ev(3, 'failure', evil, evil, message=evil))
    data['timeline'].append(ev(3, 'alert', alert=evil))
    data['dependency_probes'] = [{'name': evil, 'ok': False}]
    page = render_html(data)
    assert '<script' not in page and 'alert(1)</script>' not in page
    assert page.count('&lt;script&gt;alert(1)&lt;/script&gt;') > 10
    doc = parse(page)
    assert not doc.find(tag='script')
    # the lane of the oddly named host exists; class names taken from values are reduced to safe tokens
    assert evil in [a['data-lane'] for dummy, a in doc.find('lane')]
    for dummy, attrs in doc.elements:
        assert re.match(r'^[a-z0-9_ -]*$', attrs.get('class') or ''), attrs['class']


def test_self_contained_no_script_no_outside_resource():
    page = render_html(incident())
    doc = parse(page)
    csp = [a['content'] for t, a in doc.find(tag='meta') if a.get('http-equiv') == 'Content-Security-Policy']
    assert csp == ["default-src 'none'; style-src 'unsafe-inline'; img-src data:"]
    assert not doc.find(tag='script') and not doc.find(tag='link') and not doc.find(tag='img')
    assert not [a for t, a in doc.elements if 'src' in a or 'href' in a]
    assert 'url(' not in page and '@import' not in page


@pytest.mark.parametrize('change', ['no_rollback', 'no_failures', 'empty'])
def test_an_incident_without_rollback_or_failures_still_renders(change):
    data = incident()
    if change == 'no_rollback':
        data['outcome'] = 'not_started'
        data['summary']['reason'] = 'the run ended before the rollback could start'
        data['rollback'] = {'scope_mode': 'opened', 'hosts': {}}
        data['timeline'] = [e for e in data['timeline'] if not e['event'].startswith('rollback')]
    elif change == 'no_failures':
        data['outcome'] = 'rescued'
        data['failures'] = []
        data['timeline'] = [e for e in data['timeline'] if e['event'] != 'failure']
    else:
        data = {'incident_id': 'inc-x', 'outcome': None}
    page = render_html(data)
    doc = parse(page)
    lanes_drawn = [a['data-lane'] for dummy, a in doc.find('lane')]
    if change == 'empty':
        assert lanes_drawn == ['controller'] and 'No counted failure.' in page
        assert 'No host was rolled back.' in page and 'No alert was sent.' in page
    elif change == 'no_rollback':
        assert not doc.find('rollback-phase') and not doc.find('rollback-host-marker')
        assert 'Not started: the run ended before the rollback could start' in page
        assert 'ROLLBACK NOT STARTED' in page and 'outcome-not_started' in page
        assert lanes_drawn == ['web1', 'web2', 'web3', 'controller']
    else:
        assert not doc.find('failure-marker') and 'No counted failure.' in page
        assert lanes_drawn == ['web1', 'web2', 'web3', 'controller']


def test_lanes_follow_first_appearance_and_include_failed_and_rolled_back_hosts():
    data = {'timeline': [ev(0, 'result', 'b', 'x'), ev(1, 'alert', 'z', alert='a'), ev(2, 'result', 'a', 'x')],
            'failures': [{'host': 'c'}], 'rollback': {'hosts': {'e': {}, 'd': {}}}}
    assert lanes(data) == ['b', 'a', 'c', 'd', 'e', 'controller']


def test_dependency_probes_are_shown_when_present():
    data = incident()
    data['dependency_probes'] = [{'name': 'db', 'target': 'db1:5432', 'ok': True, 'latency': 0.004},
                                 {'name': 'cache', 'target': 'redis:6379', 'ok': False, 'error': 'refused'}]
    page = render_html(data)
    section = page[page.index('<section id="dependency-probes">'):]
    section = section[:section.index('</section>')]
    assert 'None configured' not in section
    assert '<td>db</td><td>db1:5432</td><td><span class="yes">yes</span></td>' in section
    assert '<td>cache</td><td>redis:6379</td><td><span class="no">NO</span></td>' in section
    assert '<td>refused</td>' in section


def test_write_report_writes_the_html_beside_json_and_markdown(tmp_path):
    data = incident()
    json_path, md_path = write_report(data, str(tmp_path))
    html_path = data['files']['report_html']
    assert html_path == json_path[:-len('.json')] + '.html'
    assert sorted(os.listdir(str(tmp_path))) == sorted(os.path.basename(p) for p in (json_path, md_path, html_path))
    assert oct(os.stat(html_path).st_mode & 0o777) == '0o600'
    with open(html_path) as handle:
        page = handle.read()
    assert 'class="failure-marker"' in page and html_path in page   # the files section names itself


def test_a_fault_in_drawing_leaves_json_markdown_and_an_html_page_that_says_so(tmp_path, monkeypatch):
    def broken(incident):
        raise ValueError('cannot draw <this>')
    monkeypatch.setattr(_html, 'render_html', broken)
    data = copy.deepcopy(incident('rollback_failed'))
    json_path, md_path = write_report(data, str(tmp_path))
    assert os.path.getsize(json_path) > 0 and os.path.getsize(md_path) > 0
    with open(data['files']['report_html']) as handle:
        page = handle.read()
    assert 'ROLLBACK FAILED' in page and 'ValueError: cannot draw &lt;this&gt;' in page and json_path in page


def test_mixed_releases_row_only_when_the_scope_left_hosts_out():
    data = incident()
    assert 'MIXED RELEASES' not in render_html(data)
    data['summary']['left_by_scope'] = ['web3']
    assert '<tr><th>MIXED RELEASES: left on the new release by the scope</th><td>web3</td></tr>' in render_html(data)
