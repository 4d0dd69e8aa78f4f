# -*- coding: utf-8 -*-
# Copyright: Contributors to failsafe.deploy
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Run tracking (transactions, failures, scope), the timeline and the JSON/Markdown incident report."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import json
import os
import re

import pytest

from ansible_collections.failsafe.deploy.plugins.plugin_utils._incident import (
    DeployRun, Timeline, new_incident_id, render_markdown, report_paths, rolled_back_summary, utc_iso, write_report)
from ansible_collections.failsafe.deploy.plugins.plugin_utils._html import render_html
from ansible_collections.failsafe.deploy.plugins.plugin_utils._redact import Redactor


class Clock:
    def __init__(self, start=1700000000.0):
        self.now = start

    def __call__(self):
        self.now += 0.5
        return self.now


def txn(host, status='open', release='r2'):
    return {'txid': 'tx-%s' % host, 'run_id': 'run-42', 'name': 'app', 'state_dir': '/var/lib/failsafe-deploy',
            'release': release, 'previous_release': 'r1', 'app_root': '/srv/app', 'status': status}


TASK = {'name': 'Restart app', 'role': 'failsafe.deploy.activate', 'path': '/p/roles/activate/tasks/main.yml:12',
        'action': 'ansible.builtin.command', 'tags': [], 'uuid': 'u-1'}
FAILED = {'rc': 1, 'msg': 'non-zero return code', 'stderr': 'boom', 'cmd': ['systemctl', 'restart', 'app']}


@pytest.fixture
def run():
    return DeployRun(Redactor(['https://hook.test/SECRET']), clock=Clock())


def test_ids_and_times():
    ident = new_incident_id(1700000000)
    assert re.match(r'^inc-20231114T221320Z-[0-9a-f]{8}$', ident)
    assert new_incident_id(1700000000) != ident
    assert utc_iso(1700000000.25) == '2023-11-14T22:13:20.250Z'


def test_transactions_opened_and_closed(run):
    assert run.observe_transaction('web1', txn('web1')) == 'opened'
    assert run.observe_transaction('web1', txn('web1')) == 'updated'   # a step of the same transaction
    assert run.observe_transaction('web2', txn('web2')) == 'opened'
    assert run.observe_transaction('web2', txn('web2', 'committed')) == 'closed'
    assert run.has_open_transaction('web1') and not run.has_open_transaction('web2')
    assert run.opened_order == ['web1', 'web2']
    assert run.run_id == 'run-42' and run.releases == ['r2'] and run.previous_releases == ['r1']
    events = [e['event'] for e in run.timeline.entries]
    assert events == ['transaction_opened', 'transaction_opened', 'transaction_closed']
    assert run.observe_transaction('web3', 'not a dict') is None


def test_failure_without_open_transaction_is_not_in_scope(run):
    run.observe_transaction('web2', txn('web2'))
    run.observe_transaction('web2', txn('web2', 'committed'))
    failure = run.record_failure('web1', TASK, FAILED)
    assert not failure['in_scope']
    failure = run.record_failure('web2', TASK, FAILED)   # committed: closed
    assert not failure['in_scope']
    assert not run.needs_rollback()


@pytest.mark.parametrize('mode, expected', [('opened', ['web2', 'web1', 'web3']), ('failed', ['web2'])])
def test_scope_opened_vs_failed(run, mode, expected):
    for host in ('web1', 'web2', 'web3'):
        run.observe_transaction(host, txn(host))
    run.observe_transaction('web3', txn('web3', 'committed'))   # committed hosts are rolled back too (opened)
    failure = run.record_failure('web2', TASK, FAILED)
    assert failure['in_scope'] and failure['first_for_host'] and failure['cause'] == 'script_error'
    assert run.needs_rollback()
    assert run.scope(mode) == expected
    hosts = run.rollback_hosts(run.scope(mode))
    assert hosts['web2'] == {'state_dir': '/var/lib/failsafe-deploy', 'name': 'app', 'txid': 'tx-web2',
                             'release': 'r2', 'previous_release': 'r1', 'run_id': 'run-42', 'app_root': '/srv/app'}


def test_scope_rejects_unknown_mode(run):
    with pytest.raises(ValueError):
        run.scope('everything')


def test_only_the_first_failure_of_a_host_is_first(run):
    run.observe_transaction('web1', txn('web1'))
    assert run.record_failure('web1', TASK, FAILED)['first_for_host']
    assert not run.record_failure('web1', TASK, FAILED)['first_for_host']
    assert run.failed_hosts == ['web1']


def test_unreachable_counts_and_is_network(run):
    run.observe_transaction('web1', txn('web1'))
    failure = run.record_failure('web1', TASK, {'msg': 'Failed to connect to the host via ssh: timed out'},
                                 unreachable=True, guards=['b1'])
    assert failure['cause'] == 'network' and failure['unreachable']
    assert not failure['rescued']   # an unreachable host is never rescued
    assert run.needs_rollback()


def test_rescuable_failure_does_not_count(run):
    run.observe_transaction('web1', txn('web1'))
    failure = run.record_failure('web1', TASK, FAILED, guards=['block-1'], blocks=['block-1'])
    assert failure['rescued'] and not failure['first_for_host']
    assert not run.needs_rollback()
    # a later real failure of the same host is the first counted one
    assert run.record_failure('web1', TASK, FAILED)['first_for_host']
    assert run.needs_rollback()


def test_rescue_section_running_marks_only_failures_of_its_block(run):
    run.observe_transaction('web1', txn('web1'))
    run.record_failure('web1', TASK, FAILED, blocks=['other'])
    run.record_failure('web1', TASK, FAILED, blocks=['block-1', 'outer'])
    assert len(run.mark_rescued('web1', 'rescue ran', block_uuid='block-1')) == 1
    assert len(run.counted_failures) == 1
    assert run.needs_rollback()


def test_recap_reconciles_rescued_hosts(run):
    for host in ('web1', 'web2'):
        run.observe_transaction(host, txn(host))
        run.record_failure(host, TASK, FAILED)
    # web1: the recap counts no failure but a rescue; web2 really failed
    run.reconcile(failures={'web2': 1}, dark={}, rescued={'web1': 1, 'web2': 1})
    assert run.failed_hosts == ['web2']
    assert any(e['event'] == 'failure_rescued' and e['host'] == 'web1' for e in run.timeline.entries)


def test_censored_failure_keeps_no_output(run):
    run.observe_transaction('web1', txn('web1'))
    result = {'msg': 'login with hunter2 failed', 'rc': 1, 'censored': 'hidden'}
    failure = run.record_failure('web1', TASK, result, censored=True)
    assert 'hunter2' not in json.dumps(failure)
    assert failure['message'] == 'output hidden (no_log)'
    assert failure['result']['rc'] == 1


def test_failure_result_is_redacted_and_bounded(run):
    run.observe_transaction('web1', txn('web1'))
    result = {'msg': 'POST https://hook.test/SECRET failed', 'stdout': 'x' * 20000, 'password': 'pw',
              'invocation': {'module_args': {'password': 'pw'}}}
    failure = run.record_failure('web1', TASK, result)
    blob = json.dumps(failure)
    assert 'SECRET' not in blob and '"pw"' not in blob and 'invocation' not in blob
    assert len(failure['result']['stdout']) < 5000


def test_timeline_is_bounded_but_keeps_important_events():
    timeline = Timeline(limit=3, clock=Clock())
    for n in range(10):
        timeline.add('result', host='h%d' % n, status='ok')
    timeline.add('failure', host='h1', cause='health')
    timeline.add('result', host='h1', status='failed')
    assert timeline.dropped == 7
    assert [e['event'] for e in timeline.entries][-2:] == ['failure', 'result']
    assert all('at' in e and 't' in e for e in timeline.entries)


def _incident(run, outcome='rolled_back'):
    return {
        'incident_id': 'inc-20231114T221320Z-0badc0de',
        'outcome': outcome,
        'summary': {'reason': None if outcome == 'rolled_back' else 'rollback playbook exited 2',
                    'releases': ['r2'], 'previous_releases': ['r1'], 'run_id': 'run-42', 'cause': 'script_error',
                    'failed_hosts': ['web1'], 'rollback_scope': 'opened', 'scope_hosts': ['web1', 'web2'],
                    'detected_at': '2023-11-14T22:13:21.000Z', 'detection_seconds': 0.75,
                    'seconds_to_rollback': 0.1, 'verification': 'passed on every host'},
        'failures': run.counted_failures,
        'rollback': {'started_at': '2023-11-14T22:13:22.000Z', 'duration': 3.5, 'rc': 0,
                     'hosts': {'web1': {'status': 'ok', 'restored': {'target_release': 'r1'}, 'verified': True,
                                        'failed_tasks': []},
                               'web2': {'status': 'failed', 'restored': None, 'verified': None,
                                        'failed_tasks': [{'task': 'Switch | back'}]}}},
        'alerts': [{'event': 'deploy_failed', 'at': 'x', 'spool': 'written', 'webhook': 'delivered'}],
        'timeline': run.timeline.to_list(),
    }


def test_report_json_and_markdown(run, tmp_path):
    run.observe_transaction('web1', txn('web1'))
    run.record_failure('web1', dict(TASK, name='Restart | app'), FAILED)
    incident = _incident(run)
    json_path, md_path = write_report(incident, str(tmp_path / 'reports'))
    assert (json_path, md_path) == report_paths(str(tmp_path / 'reports'), incident['incident_id'])
    data = json.loads(open(json_path).read())
    assert data['outcome'] == 'rolled_back'
    assert data['failures'][0]['task'] == 'Restart | app'
    assert data['failures'][0]['host'] == 'web1'
    assert data['failures'][0]['cause'] == 'script_error'
    assert data['failures'][0]['path'] == '/p/roles/activate/tasks/main.yml:12'
    assert data['files']['report_markdown'] == md_path
    md = open(md_path).read()
    assert md.startswith('# Incident inc-20231114T221320Z-0badc0de: ROLLED BACK')
    assert '| web1 | Restart \\| app | failsafe.deploy.activate | /p/roles/activate/tasks/main.yml:12 | ' \
           'script_error |' in md
    assert '| Rollback duration | 3.50 s |' in md
    assert '| Detection time | 0.75 s after the failing task started |' in md
    assert '| web1 | ok | r1 | - | - | - | yes | - |' in md
    assert '| web2 | failed | - | - | - | - | - | Switch \\| back |' in md
    assert '## Timeline' in md and 'transaction_opened' in md
    # atomic writes leave no temp files and private modes
    assert sorted(os.listdir(str(tmp_path / 'reports'))) == sorted([os.path.basename(json_path),
                                                                   os.path.basename(md_path),
                                                                   os.path.basename(data['files']['report_html'])])
    assert oct(os.stat(json_path).st_mode & 0o777) == '0o600'


def test_markdown_of_a_failed_rollback_is_loud(run):
    run.observe_transaction('web1', txn('web1'))
    run.record_failure('web1', TASK, FAILED)
    md = render_markdown(_incident(run, outcome='rollback_failed'))
    assert md.startswith('# Incident inc-20231114T221320Z-0badc0de: ROLLBACK FAILED')
    assert '**ROLLBACK FAILED.**' in md
    assert 'rollback playbook exited 2' in md


OPEN_TASK = dict(TASK, name='Open the deploy transaction', role='failsafe.deploy.preflight',
                 action='failsafe.deploy.transaction', uuid='u-open')


def test_an_open_refused_on_one_host_counts_once_another_host_opened_and_rolls_that_host_back(run):
    # web1 refuses (or dies inside) the open call while web2 and web3, in the same task, open theirs: the deploy
    # failed, and the hosts that opened must be rolled back, not left open with their locks.
    failure = run.record_failure('web1', OPEN_TASK, {'msg': 'Release r2 is quarantined'}, open_failed=True)
    assert not failure['in_scope'] and not run.needs_rollback()   # nobody opened yet
    run.observe_transaction('web2', txn('web2'))
    run.observe_transaction('web3', txn('web3'))
    assert run.needs_rollback()
    assert run.failed_hosts == ['web1']
    assert run.scope('opened') == ['web1', 'web2', 'web3']


def test_an_open_refused_when_no_host_opened_changes_nothing(run):
    run.record_failure('web1', OPEN_TASK, {'msg': 'Release r2 is quarantined'}, open_failed=True)
    assert not run.needs_rollback() and run.counted_failures == []


def test_a_check_failing_the_same_way_before_and_after_the_rollback_is_named_as_the_likely_cause():
    from ansible_collections.failsafe.deploy.plugins.plugin_utils._incident import broken_check_hint
    deploy = ("health check failed: check 'health' failed after 2 attempt(s): GET http://127.0.0.1:1/health: "
              "Connection refused (expected GET http://127.0.0.1:1/health answering 200; got latency 0.001s)")
    rollback = ("ROLLBACK FAILED at check the health of the restored release: check 'health' failed after 2 "
                "attempt(s): GET http://127.0.0.1:1/health: Connection refused (expected GET ... answering 200)")
    other = rollback.replace('Connection refused', 'status 503 not in status_code [200]')
    failures = [{'host': 'web1', 'message': deploy}]
    same = {'web1': {'failed_tasks': [{'message': rollback}]}}
    hint = broken_check_hint(failures, same)
    assert "'health'" in hint and 'failed the same way' in hint and 'Connection refused' in hint
    # a different error after the rollback says something about the restored release: no hint
    assert broken_check_hint(failures, {'web1': {'failed_tasks': [{'message': other}]}}) is None
    assert broken_check_hint(failures, {}) is None


def test_a_host_without_a_transaction_on_record_gets_an_empty_rollback_entry(run):
    run.observe_transaction('web2', txn('web2'))
    run.record_failure('web1', OPEN_TASK, {'msg': 'MODULE FAILURE'}, open_failed=True)
    hosts = run.rollback_hosts(run.scope('opened'))
    # no None values: the rollback role falls back to the play's own state_dir and name for web1
    assert hosts['web1'] == {}
    assert hosts['web2']['state_dir'] == '/var/lib/failsafe-deploy' and hosts['web2']['name'] == 'app'


def test_report_shows_the_metric_gate_queries_values_and_thresholds(run, tmp_path):
    gate = {'verdict': 'fail', 'reason': 'error_rate: 3 of 3 measurement(s) failed (limit 0)',
            'prometheus_url': 'http://prom:9090', 'canary_instances': ['10.0.0.11:8080'],
            'baseline_instances': ['10.0.0.12:8080'],
            'analyses': [
                {'kind': 'threshold', 'name': 'error_rate', 'query': 'sum(rate(app_errors_total[5s]))',
                 'values': [0.25, 0.2512345678, None], 'thresholds': {'min': None, 'max': 0.05, 'failure_limit': 0},
                 'no_data_policy': 'fail', 'verdict': 'fail', 'reason': '3 of 3 measurement(s) failed'},
                {'kind': 'canary', 'verdict': 'fail', 'score': 0.0, 'reason': 'critical metric(s) failed: errors',
                 'thresholds': {'pass_score': 95, 'marginal_score': 75},
                 'metrics': [{'name': 'errors', 'canary_query': 'c_q', 'baseline_query': 'b_q', 'status': 'fail',
                              'direction': 'increase', 'critical': True, 'weight': 1.0, 'p_value': 0.001,
                              'thresholds': {'tolerance': 0.25, 'confidence': 0.98},
                              'canary': {'values': [3.0] * 40, 'median': 3.0},
                              'baseline': {'values': [0.0] * 5, 'median': 0.0},
                              'reason': 'canary above the baseline'}]}]}
    run.observe_transaction('web1', txn('web1'))
    run.record_failure('web1', dict(TASK, name='Judge the wave', action='failsafe.deploy.metric_gate'),
                       {'failed': True, 'msg': 'metric gate failed: ' + gate['reason'], 'failsafe_metric_gate': gate})
    failure = run.counted_failures[0]
    assert failure['cause'] == 'health' and failure['evidence'] == 'metric gate failed'
    rows = failure['metric_gate']['rows']
    assert [r['metric'] for r in rows] == ['error_rate', 'errors', 'canary score']
    assert rows[0]['values'] == [0.25, 0.251235, None]
    assert len(rows[1]['values']['canary']) == 31 and rows[1]['values']['canary'][-1] == '... 10 more'
    json_path, md_path = write_report(_incident(run), str(tmp_path / 'reports'))
    md = open(md_path).read()
    assert '## Metric gates' in md
    assert '| error_rate | threshold | `sum(rate(app_errors_total[5s]))` | [0.25, 0.251235, null] | ' \
           '{"failure_limit": 0, "max": 0.05, "min": null} | fail |' in md
    assert 'canary: c_q; baseline: b_q' in md and '"critical": true' in md
    html = open(json.loads(open(json_path).read())['files']['report_html']).read()
    assert 'Metric gate Judge the wave on web1: fail' in html
    assert 'sum(rate(app_errors_total[5s]))' in html and '&quot;max&quot;: 0.05' in html


def _section(md, title):
    return md.split('\n%s\n' % title, 1)[1].split('\n#', 1)[0]


def test_markdown_fills_the_reason_and_likely_cause_from_the_first_failure(run):
    run.observe_transaction('web1', txn('web1'))
    run.record_failure('web1', TASK, FAILED)
    incident = _incident(run)
    assert incident['summary']['reason'] is None and 'likely_cause' not in incident['summary']
    md = render_markdown(incident)
    reason = re.search(r'^\| Reason \| (.*) \|$', md, re.M).group(1)
    likely = re.search(r'^\| Likely cause \| (.*) \|$', md, re.M).group(1)
    assert reason == "task 'Restart app' failed on web1: non-zero return code"
    assert likely.startswith('script_error: a command or script of the deploy failed')
    # the HTML report says the same
    page = render_html(incident)
    assert "task &#x27;Restart app&#x27; failed on web1" in page or "task 'Restart app' failed on web1" in page
    assert 'id="likely-cause"' in page
    # a cause the run itself found wins over the class's meaning
    incident['summary']['likely_cause'] = 'Likely cause: the health check itself.'
    assert '| Likely cause | Likely cause: the health check itself. |' in render_markdown(incident)


def test_markdown_per_host_rollback_is_a_table_not_raw_json(run):
    run.observe_transaction('web1', txn('web1'))
    run.record_failure('web1', TASK, FAILED)
    incident = _incident(run)
    incident['rollback']['hosts']['web1']['restored'] = {
        'target_release': 'r1', 'failed_release': 'r2', 'quarantined': True, 'txid': 'tx-web1', 'verified': True,
        'layers': [{'kind': 'files', 'undone': True}, {'kind': 'release', 'undone': True},
                   {'kind': 'service', 'undone': True, 'action': 'restarted'}, {'kind': 'traffic', 'undone': False}],
        'restored': ['/srv/app/current', '/srv/app/shared/config/app.json', '/etc/supervisor/conf.d/app.conf'],
        'checks': [{'name': 'health', 'ok': True, 'body': '{"status": "ok"}' * 40}],
        'timings': {'undo': 1.2, 'checks': 0.1}}
    per_host = _section(render_markdown(incident), '### Per host')
    assert ('| Host | Result | Back to release | Failed release | Layers undone | Paths restored | Verified |'
            in per_host)
    assert '| web1 | ok | r1 | r2 | files, release, service | 3 | yes | - |' in per_host
    assert '{' not in per_host and '/srv/app' not in per_host and len(per_host) < 600
    incident['rollback']['hosts']['web1']['verified'] = False
    assert '| web1 | ok | r1 | r2 | files, release, service | 3 | NO | - |' in render_markdown(incident)


def test_markdown_timeline_folds_task_starts_and_skipped_steps():
    clock = Clock()
    timeline = Timeline(clock=clock)
    timeline.add('playbook_start', playbook='deploy.yml')
    for name, status in [('Open the transaction', 'changed')] + [('Hook %d' % i, 'skipped') for i in range(12)] \
            + [('Switch', 'changed')] + [('Later hook %d' % i, 'skipped') for i in range(3)]:
        timeline.add('task_start', task=name, path='/p/main.yml:1', role='failsafe.deploy.migrate')
        timeline.add('result', host='web1', task=name, status=status)
    timeline.add('task_start', task='Never answered', path='/p/main.yml:9')
    incident = {'incident_id': 'inc-x', 'outcome': 'rolled_back', 'summary': {}, 'rollback': {},
                'timeline': timeline.to_list()}
    rows = [line for line in _section(render_markdown(incident), '## Timeline').splitlines()
            if line.startswith('| 20')]
    assert len(incident['timeline']) == 36
    assert len(rows) == 6, '\n'.join(rows)
    assert [r.split(' | ')[2] for r in rows] == ['playbook_start', 'result', 'skipped', 'result', 'skipped',
                                                 'task_start']
    assert '| 12 steps skipped | Hook 0; Hook 1;' in rows[2] and '| 3 steps skipped |' in rows[4]
    assert 'Never answered' in rows[5]   # a task that never answered keeps its start
    assert '32 of 36 events are folded' in render_markdown(incident)


def test_markdown_timeline_folds_each_hosts_skipped_steps_though_other_hosts_interleave():
    # as a fleet's deploy records them: each task answers on every host in turn, some skipped on some hosts
    clock = Clock()
    timeline = Timeline(clock=clock)
    timeline.add('play_start', play='Deploy')
    steps = [('Check the flags', {'web1': 'skipped', 'web2': 'skipped', 'flags': 'ok'}),
             ('Check the database', {'web1': 'skipped', 'web2': 'ok', 'flags': 'skipped'}),
             ('Say it is in place', {'web1': 'skipped', 'web2': 'skipped', 'flags': 'skipped'}),
             ('Switch', {'web1': 'changed', 'web2': 'changed', 'flags': 'changed'}),
             ('Run the after hook', {'web1': 'skipped', 'web2': 'skipped', 'flags': 'skipped'})]
    for name, statuses in steps:
        timeline.add('task_start', task=name, path='/p/main.yml:1')
        for host, status in statuses.items():
            timeline.add('result', host=host, task=name, status=status)
    timeline.add('play_start', play='Roll back')
    timeline.add('result', host='web1', task='Run the before-rollback hook', status='skipped')
    incident = {'incident_id': 'inc-x', 'outcome': 'rolled_back', 'summary': {}, 'rollback': {},
                'timeline': timeline.to_list()}
    rows = [line[2:-2].split(' | ') for line in _section(render_markdown(incident), '## Timeline').splitlines()
            if line.startswith('| 20')]
    assert not [r for r in rows if r[2] == 'result' and 'status=skipped' in r[5]]
    skipped = [(r[3], r[4], r[5]) for r in rows if r[2] == 'skipped']
    # web1 had nothing but skipped steps until the switch; web2's own ok cut its run; the play's start cuts all
    assert skipped == [('web1', '3 steps skipped', 'Check the flags; Check the database; Say it is in place'),
                       ('web2', '1 step skipped', 'Check the flags'),
                       ('flags', '2 steps skipped', 'Check the database; Say it is in place'),
                       ('web2', '1 step skipped', 'Say it is in place'),
                       ('web1', '1 step skipped', 'Run the after hook'), ('web2', '1 step skipped', 'Run the after hook'),
                       ('flags', '1 step skipped', 'Run the after hook'),
                       ('web1', '1 step skipped', 'Run the before-rollback hook')]
    # each host's row keeps the time of its first skipped step, so the order of the other rows stays as it was
    assert [r[2] for r in rows] == ['play_start', 'skipped', 'skipped', 'result', 'result', 'skipped', 'skipped',
                                    'result', 'result', 'result', 'skipped', 'skipped', 'skipped', 'play_start',
                                    'skipped']


def test_the_rolled_back_summary_names_the_release_each_host_went_back_to():
    hosts = {'web1': {'status': 'ok', 'restored': {'target_release': '1.4.1'}},
             'web2': {'status': 'ok', 'restored': {'target_release': '1.4.1'}},
             'web3': {'status': 'ok', 'restored': {'target_release': '1.3.0'}},
             'web4': {'status': 'ok', 'restored': None}}
    assert rolled_back_summary('deploy failed on web1', ['web1', 'web2'], hosts) == \
        'deploy failed on web1; rolled back web1, web2 to release 1.4.1'
    assert rolled_back_summary('deploy failed on web1', ['web1', 'web2', 'web3', 'web4'], hosts) == (
        'deploy failed on web1; rolled back web3 to release 1.3.0; web1, web2 to release 1.4.1; '
        'web4 (no release to go back to recorded)')
