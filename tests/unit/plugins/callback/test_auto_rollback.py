# -*- coding: utf-8 -*-
# Copyright: Contributors to failsafe.deploy
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The auto_rollback callback driven with fake Task/TaskResult/Host objects.

The rollback child is a small stand-in ``ansible-playbook`` script: it records how it was called and writes the
result file the way the callback's child mode does, so the parent's whole flow runs for real (subprocess, files,
alerts, report) in well under a second per test.
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import atexit
import json
import os
import sys
import textwrap
import time

import pytest
import yaml

from ansible import constants as C
from ansible import context
from ansible.utils.context_objects import CLIArgs

from ansible_collections.failsafe.deploy.plugins.callback import auto_rollback
from ansible_collections.failsafe.deploy.plugins.plugin_utils import _forks
from ansible_collections.failsafe.deploy.tests.helpers import Receiver

NAME = 'failsafe.deploy.auto_rollback'
SECRET_HOOK_TOKEN = 'Zq9SECRETHOOKTOKEN'


# --- fakes ----------------------------------------------------------------------------------------------------

class FakeDisplay:
    verbosity = 0

    def __init__(self):
        self.lines = []
        self.errors = []
        self.warnings = []

    def display(self, msg, color=None, stderr=False, screen_only=False, log_only=False, newline=True, caplevel=None):
        (self.errors if stderr else self.lines).append(msg)

    def warning(self, msg, formatted=False, **kwargs):
        self.warnings.append(msg)

    def text(self):
        return '\n'.join(self.lines)


class FakeHost:
    def __init__(self, name):
        self.name = name

    def get_name(self):
        return self.name


class FakeRole:
    def __init__(self, name):
        self._name = name

    def get_name(self):
        return self._name


class FakeBlock:
    def __init__(self, uuid, block=None, rescue=None, always=None, parent=None):
        self._uuid = uuid
        self.block = block or []
        self.rescue = rescue or []
        self.always = always or []
        self._parent = parent


class FakeTask:
    _counter = 0

    def __init__(self, name, action='ansible.builtin.command', role=None, path='/play/deploy.yml:10', no_log=False,
                 ignore_errors=False, ignore_unreachable=False, tags=None, parent=None):
        FakeTask._counter += 1
        self._uuid = 'task-%d' % FakeTask._counter
        self.name = name
        self.action = action
        self._role = FakeRole(role) if role else None
        self._path = path
        self.no_log = no_log
        self.ignore_errors = ignore_errors
        self.ignore_unreachable = ignore_unreachable
        self.tags = tags or []
        self._parent = parent

    def get_name(self):
        return self.name

    def get_path(self):
        return self._path


class FakeResult:
    def __init__(self, host, task, result):
        self.host = FakeHost(host)
        self.task = task
        self.result = result


class FakeStats:
    def __init__(self, hosts, failures=None, dark=None, rescued=None):
        self.processed = dict.fromkeys(hosts, 1)
        self.failures = failures or {}
        self.dark = dark or {}
        self.rescued = rescued or {}

    def summarize(self, host):
        return {'failures': self.failures.get(host, 0), 'unreachable': self.dark.get(host, 0),
                'rescued': self.rescued.get(host, 0)}


class FakePlaybook:
    def __init__(self, path):
        self._file_name = path


class FakePlay:
    def __init__(self, extra_vars=None):
        self._extra = extra_vars or {}

    def get_name(self):
        return 'Deploy app'

    def get_variable_manager(self):
        manager = type('VM', (), {})()
        manager.extra_vars = self._extra
        return manager


def txn(host, status='open'):
    return {'failsafe_transaction': {'txid': 'tx-%s' % host, 'run_id': 'run-7', 'name': 'app',
                                     'state_dir': '/var/lib/failsafe-deploy', 'release': 'r2',
                                     'previous_release': 'r1', 'app_root': '/srv/app', 'status': status},
            'changed': True}


FAKE_CHILD = r'''
import json, os, sys, time
args = sys.argv[1:]
vars_file = [a[1:] for a in args if a.startswith('@')][-1]
data = json.load(open(vars_file))
call = {'argv': args, 'vars': data,
        'env': {k: os.environ.get(k) for k in ('FAILSAFE_ROLLBACK_CHILD', 'FAILSAFE_ROLLBACK_RESULT',
                                               'ANSIBLE_STDOUT_CALLBACK', 'JOB_ID', 'ANSIBLE_CALLBACKS_ENABLED')},
        'stdin': sys.stdin.read()}
json.dump(call, open(os.environ['FAKE_CHILD_CALL'], 'w'))
mode = os.environ.get('FAKE_CHILD_MODE', 'ok')
print('PLAY [Rollback] fake child for %s' % ','.join(sorted(data['failsafe_rollback_hosts'])), flush=True)
if mode == 'sleep':
    time.sleep(60)
if mode != 'no_result':
    hosts = {}
    for host in data['failsafe_rollback_hosts']:
        failed = mode == 'fail:' + host
        hosts[host] = {'status': 'failed' if failed else 'ok', 'failed_tasks': [],
                       'failsafe_rollback': [] if failed else [{'target_release': 'r1',
                                                                'restored': ['/srv/app/current'],
                                                                'verified': mode != 'unverified'}]}
    json.dump({'hosts': hosts}, open(os.environ['FAILSAFE_ROLLBACK_RESULT'], 'w'))
sys.exit(2 if mode.startswith('fail:') else 0)
'''


# --- fixtures -------------------------------------------------------------------------------------------------

@pytest.fixture
def env(tmp_path, monkeypatch):
    """Clean FAILSAFE_* environment, CLIARGS of a typical run, and the stand-in ansible-playbook."""
    for key in list(os.environ):
        if key.startswith('FAILSAFE_') or key in ('JOB_ID', 'ANSIBLE_STDOUT_CALLBACK'):
            monkeypatch.delenv(key, raising=False)
    child = tmp_path / 'bin' / 'ansible-playbook'
    child.parent.mkdir()
    child.write_text('#!%s\n%s' % (sys.executable, textwrap.dedent(FAKE_CHILD)))
    child.chmod(0o755)
    monkeypatch.setenv('FAKE_CHILD_CALL', str(tmp_path / 'child-call.json'))
    # the payload cache of these callbacks: not the user's
    monkeypatch.setenv('FAILSAFE_PAYLOAD_CACHE_DIR', str(tmp_path / 'payloads'))
    monkeypatch.setenv('ANSIBLE_STDOUT_CALLBACK', 'awx_display')
    monkeypatch.setattr(context, 'CLIARGS', CLIArgs({
        'inventory': ('/inv/hosts.ini', '/inv/extra.yml'), 'extra_vars': ('release_version=2',),
        'remote_user': 'deploy', 'forks': 10, 'check': False, 'subset': None}))
    defs = yaml.safe_load(auto_rollback.DOCUMENTATION)['options']
    C.config.initialize_plugin_configuration_definitions('callback', NAME, defs)
    yield tmp_path
    # The callbacks made here must not run their interrupted-run handler when the test process exits.
    while CREATED:
        atexit.unregister(CREATED.pop()._at_exit)
    # ... nor leave their gc_freeze fork hook on in it: it belongs to an ansible-playbook process
    _forks.freeze_before_forks(False)


CREATED = []


def make_callback(tmp_path, **options):
    display = FakeDisplay()
    cb = auto_rollback.CallbackModule(display=display)
    CREATED.append(cb)
    cb._load_name = NAME
    direct = {'report_dir': str(tmp_path / 'reports'), 'ansible_playbook': str(tmp_path / 'bin' / 'ansible-playbook'),
              'rollback_playbook': 'failsafe.deploy.rollback', 'webhook_retries': 0, 'webhook_timeout': 2}
    direct.update(options)
    cb.set_options(direct=direct)
    cb.v2_playbook_on_start(FakePlaybook(str(tmp_path / 'deploy.yml')))
    cb.v2_playbook_on_play_start(FakePlay())
    return cb, display


def spool(tmp_path):
    path = tmp_path / 'reports' / 'alerts.jsonl'
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def reports(tmp_path):
    directory = tmp_path / 'reports'
    if not directory.exists():
        return {}
    return {p.name: p for p in directory.iterdir() if p.suffix in ('.json', '.md') and 'rollback' not in p.name}


def open_and_fail(cb, hosts=('web1', 'web2'), failing=('web1',), task=None):
    start = FakeTask('Open transaction', action='failsafe.deploy.deploy_state')
    cb.v2_playbook_on_task_start(start, False)
    for host in hosts:
        cb.v2_runner_on_ok(FakeResult(host, start, txn(host)))
    task = task or FakeTask('Restart app', role='failsafe.deploy.activate', path='/roles/activate/tasks/main.yml:7')
    cb.v2_playbook_on_task_start(task, False)
    for host in failing:
        cb.v2_runner_on_failed(FakeResult(host, task, {'rc': 1, 'msg': 'non-zero return code',
                                                       'stderr': 'app: port 8080 in use', 'cmd': 'systemctl'}))
    return task


# --- tests ----------------------------------------------------------------------------------------------------

def test_callback_identity():
    assert auto_rollback.CallbackModule.CALLBACK_TYPE == 'notification'
    assert auto_rollback.CallbackModule.CALLBACK_NAME == NAME
    assert auto_rollback.CallbackModule.CALLBACK_NEEDS_ENABLED is True
    assert auto_rollback.CallbackModule.CALLBACK_VERSION == 2.0


@pytest.mark.parametrize('options, frozen', [({}, True), ({'gc_freeze': False}, False), ({'enabled': False}, False)],
                         ids=['default', 'gc_freeze-false', 'callback-disabled'])
def test_gc_freeze_turns_the_fork_hook_on_by_default_and_off_when_false_or_the_callback_is_disabled(env, options,
                                                                                                    frozen):
    _forks.freeze_before_forks(not frozen)   # the other state first: set_options must change it
    make_callback(env, **options)
    assert _forks.active() is frozen


@pytest.mark.parametrize('options, kept', [({}, True), ({'payload_cache': False}, False), ({'enabled': False}, False)],
                         ids=['default', 'payload_cache-false', 'callback-disabled'])
def test_payload_cache_is_on_by_default_in_its_directory_and_off_when_false_or_the_callback_is_disabled(env, options,
                                                                                                        kept):
    cb, dummy = make_callback(env, **options)
    if kept:
        assert cb.payload_cache.store == str(env / 'payloads')
        assert (env / 'payloads').is_dir(), 'primed at playbook start: the store is made'
    else:
        assert cb.payload_cache is None and not (env / 'payloads').exists()


def test_options_come_from_environment(env, monkeypatch):
    monkeypatch.setenv('FAILSAFE_ROLLBACK_SCOPE', 'failed')
    monkeypatch.setenv('FAILSAFE_ROLLBACK_TIMEOUT', '33')
    monkeypatch.setenv('FAILSAFE_REPORT_DIR', str(env / 'elsewhere'))
    cb = auto_rollback.CallbackModule(display=FakeDisplay())
    CREATED.append(cb)
    cb._load_name = NAME
    cb.set_options()
    assert cb.rollback_scope == 'failed' and cb.rollback_timeout == 33
    assert cb.report_dir == str(env / 'elsewhere')
    assert cb.spool_path == str(env / 'elsewhere' / 'alerts.jsonl')
    assert cb.webhook_url is None and cb.alerts.webhook is None   # not configured: channel off, no warning
    assert cb.enabled and cb.defer_to_workflow is False


def test_deploy_failed_alert_at_once_and_once_per_host(env):
    cb, display = make_callback(env)
    task = open_and_fail(cb)
    alerts = spool(env)   # before the end of the run
    assert [a['event'] for a in alerts] == ['deploy_failed']
    alert = alerts[0]
    assert alert['host'] == 'web1' and alert['task'] == 'Restart app'
    assert alert['role'] == 'failsafe.deploy.activate' and alert['path'] == '/roles/activate/tasks/main.yml:7'
    assert alert['cause'] == 'script_error' and alert['severity'] == 'error'
    assert alert['incident_id'] == cb.incident_id and alert['run_id'] == 'run-7'
    cb.v2_runner_on_failed(FakeResult('web1', task, {'msg': 'again'}))
    assert len(spool(env)) == 1
    assert display.warnings == []


def test_ignored_and_out_of_scope_failures_do_not_count(env):
    cb = make_callback(env)[0]
    start = FakeTask('Open', action='failsafe.deploy.deploy_state')
    cb.v2_runner_on_ok(FakeResult('web1', start, txn('web1')))
    cb.v2_runner_on_failed(FakeResult('web1', FakeTask('probe'), {'msg': 'x'}), ignore_errors=True)
    cb.v2_runner_on_failed(FakeResult('web1', FakeTask('probe2', ignore_errors=True), {'msg': 'x'}))
    cb.v2_runner_on_unreachable(FakeResult('web1', FakeTask('probe3', ignore_unreachable=True), {'msg': 'x'}))
    cb.v2_runner_on_failed(FakeResult('db1', FakeTask('no transaction here'), {'msg': 'x'}))
    cb.v2_runner_on_ok(FakeResult('web1', start, txn('web1', 'committed')))
    cb.v2_runner_on_failed(FakeResult('web1', FakeTask('after commit'), {'msg': 'x'}))
    cb.v2_playbook_on_stats(FakeStats(['web1', 'db1'], failures={'db1': 1, 'web1': 1}))
    assert spool(env) == []
    assert reports(env) == {}
    assert not (env / 'child-call.json').exists()


def test_rescued_failure_is_not_a_deploy_failure(env):
    cb = make_callback(env)[0]
    start = FakeTask('Open', action='failsafe.deploy.deploy_state')
    cb.v2_runner_on_ok(FakeResult('web1', start, txn('web1')))
    failing = FakeTask('Try fast path')
    rescue_task = FakeTask('Slow path')
    block = FakeBlock('blk-1', block=[failing], rescue=[rescue_task])
    failing._parent = rescue_task._parent = block
    cb.v2_runner_on_failed(FakeResult('web1', failing, {'msg': 'fast path failed'}))
    assert spool(env) == []
    cb.v2_runner_on_ok(FakeResult('web1', rescue_task, {'changed': False}))
    cb.v2_playbook_on_stats(FakeStats(['web1'], rescued={'web1': 1}))
    assert spool(env) == [] and reports(env) == {}
    assert not (env / 'child-call.json').exists()


def test_failure_that_the_recap_shows_rescued_is_written_up_as_rescued(env):
    cb, display = make_callback(env)
    open_and_fail(cb, hosts=('web1',))   # not recognisably inside a block: alerted at once
    cb.v2_playbook_on_stats(FakeStats(['web1'], rescued={'web1': 1}))
    assert [a['event'] for a in spool(env)] == ['deploy_failed', 'failure_rescued']
    assert not (env / 'child-call.json').exists()
    data = json.loads(reports(env)[cb.incident_id + '.json'].read_text())
    assert data['outcome'] == 'rescued' and data['failures'] == []


def test_rollback_of_every_opened_host(env):
    cb, display = make_callback(env)
    open_and_fail(cb, hosts=('web2', 'web1', 'web3'), failing=('web1',))
    cb.v2_playbook_on_stats(FakeStats(['web1', 'web2', 'web3'], failures={'web1': 1}))

    call = json.loads((env / 'child-call.json').read_text())
    argv = call['argv']
    assert argv[0] == 'failsafe.deploy.rollback'
    assert argv[argv.index('--limit') + 1] == 'web1,web2,web3'   # failed host first, then opened order
    assert [argv[i + 1] for i, a in enumerate(argv) if a == '--inventory'] == ['/inv/hosts.ini', '/inv/extra.yml']
    assert argv[argv.index('--user') + 1] == 'deploy'
    assert 'release_version=2' in argv
    assert call['stdin'] == ''
    assert call['env']['FAILSAFE_ROLLBACK_CHILD'] == '1'
    assert call['env']['ANSIBLE_STDOUT_CALLBACK'] is None
    assert NAME in call['env']['ANSIBLE_CALLBACKS_ENABLED']
    assert call['vars']['failsafe_rollback_run_id'] == 'run-7'
    assert call['vars']['failsafe_rollback_incident'] == cb.incident_id
    assert call['vars']['failsafe_rollback_hosts']['web3'] == {
        'state_dir': '/var/lib/failsafe-deploy', 'name': 'app', 'txid': 'tx-web3', 'release': 'r2',
        'previous_release': 'r1', 'run_id': 'run-7', 'app_root': '/srv/app'}

    assert [a['event'] for a in spool(env)] == ['deploy_failed', 'rolled_back']
    final = spool(env)[-1]
    assert final['per_host'] == {'web1': 'ok', 'web2': 'ok', 'web3': 'ok'}
    assert final['summary'] == 'deploy failed on web1; rolled back web1, web2, web3 to release r1'
    json_name, md_name = cb.incident_id + '.json', cb.incident_id + '.md'
    assert sorted(reports(env)) == sorted([json_name, md_name])
    data = json.loads(reports(env)[json_name].read_text())
    assert data['outcome'] == 'rolled_back'
    assert data['summary']['failed_hosts'] == ['web1'] and data['summary']['cause'] == 'script_error'
    assert data['summary']['verification'] == 'passed on every host'
    assert data['failures'][0]['task'] == 'Restart app' and data['failures'][0]['host'] == 'web1'
    assert data['rollback']['rc'] == 0 and data['rollback']['duration'] > 0
    assert data['rollback']['hosts']['web2']['restored']['target_release'] == 'r1'
    assert 'release_version' not in json.dumps(data)   # extra vars are never recorded
    events = [e['event'] for e in data['timeline']]
    assert events.index('failure') < events.index('rollback_start') < events.index('rollback_end')
    md = reports(env)[md_name].read_text()
    assert 'ROLLED BACK' in md and 'Restart app' in md
    log = (env / 'reports' / (cb.incident_id + '.rollback.log')).read_text()
    assert 'fake child for web1,web2,web3' in log
    text = display.text()
    assert 'rollback | PLAY [Rollback] fake child' in text   # echoed
    assert 'ROLLED BACK' in text and str(env / 'reports' / json_name) in text
    assert str(env / 'reports' / md_name) in text and str(env / 'reports' / 'alerts.jsonl') in text
    html_path = env / 'reports' / (cb.incident_id + '.html')
    assert '  incident report (HTML): %s' % html_path in text.splitlines()
    assert data['files']['report_html'] == str(html_path)
    page = html_path.read_text()
    assert 'ROLLED BACK' in page and 'data-lane="web1"' in page and 'class="failure-marker"' in page
    assert 'ROLLBACK FAILED' not in text


def test_a_delegated_transaction_is_rolled_back_on_the_host_it_names(env):
    """A load balancer's transaction opened by a task delegated from web1 (the canary's traffic steps) names its host
    (inventory_host): lb1 is rolled back with its own transaction and stages, and web1 keeps its code stage."""
    cb, display = make_callback(env)
    start = FakeTask('Open transaction', action='failsafe.deploy.transaction')
    cb.v2_playbook_on_task_start(start, False)
    cb.v2_runner_on_ok(FakeResult('web1', start, txn('web1')))
    apply = FakeTask('Switch traffic', action='failsafe.deploy.transaction')
    cb.v2_playbook_on_task_start(apply, False)
    lb = {'txid': 'tx-lb1', 'run_id': 'run-7', 'name': 'traffic', 'state_dir': '/var/lib/failsafe-deploy',
          'release': None, 'status': 'open', 'inventory_host': 'lb1'}
    cb.v2_runner_on_ok(FakeResult('web1', apply, {'changed': True, 'failsafe_transaction': lb,
                                                  'failsafe_layer_stages': ['traffic'],
                                                  '_ansible_delegated_vars': {'ansible_host': '10.0.0.9'}}))
    task = FakeTask('Let the wave bake, then judge it by its metrics', action='failsafe.deploy.metric_gate')
    cb.v2_playbook_on_task_start(task, False)
    cb.v2_runner_on_failed(FakeResult('web1', task, {'msg': 'metric gate failed'}))
    cb.v2_playbook_on_stats(FakeStats(['web1'], failures={'web1': 1}))

    call = json.loads((env / 'child-call.json').read_text())
    argv = call['argv']
    assert sorted(argv[argv.index('--limit') + 1].split(',')) == ['lb1', 'web1']
    assert call['vars']['failsafe_hosts'] == 'all'
    assert call['vars']['failsafe_rollback_hosts']['lb1']['name'] == 'traffic'
    assert call['vars']['failsafe_rollback_hosts']['lb1']['txid'] == 'tx-lb1'
    assert call['vars']['failsafe_rollback_hosts']['web1']['txid'] == 'tx-web1'
    assert call['vars']['failsafe_rollback_stages'] == {'lb1': ['traffic']}


def test_rollback_scope_failed(env):
    cb, display = make_callback(env, rollback_scope='failed')
    open_and_fail(cb, hosts=('web1', 'web2'), failing=('web2',))
    cb.v2_playbook_on_stats(FakeStats(['web1', 'web2'], failures={'web2': 1}))
    call = json.loads((env / 'child-call.json').read_text())
    assert call['argv'][call['argv'].index('--limit') + 1] == 'web2'
    assert list(call['vars']['failsafe_rollback_hosts']) == ['web2']
    # The host left out stays on the new release: never silently.
    data = json.loads(reports(env)[cb.incident_id + '.json'].read_text())
    assert data['summary']['left_by_scope'] == ['web1']
    assert '| MIXED RELEASES: left on the new release by the scope | web1 |' in reports(env)[cb.incident_id + '.md'].read_text()
    assert 'MIXED RELEASES: web1 left on release' in spool(env)[-1]['summary']
    assert any('MIXED RELEASES: web1' in w for w in display.warnings)


def test_rollback_scope_opened_leaves_no_host_out(env):
    cb = make_callback(env)[0]
    open_and_fail(cb, hosts=('web1', 'web2'), failing=('web2',))
    cb.v2_playbook_on_stats(FakeStats(['web1', 'web2'], failures={'web2': 1}))
    data = json.loads(reports(env)[cb.incident_id + '.json'].read_text())
    assert data['summary']['left_by_scope'] == [] and 'MIXED' not in spool(env)[-1]['summary']


@pytest.mark.parametrize('mode, options, reason', [
    ('fail:web2', {}, 'rollback playbook exited 2'),
    ('no_result', {}, 'left no result file'),
    ('unverified', {}, 'verification failed on web1, web2'),
    ('sleep', {'rollback_timeout': 1}, 'did not finish within 1 s'),
])
def test_anything_but_a_clean_rollback_is_rollback_failed(env, monkeypatch, mode, options, reason):
    monkeypatch.setenv('FAKE_CHILD_MODE', mode)
    cb, display = make_callback(env, **options)
    open_and_fail(cb)
    cb.v2_playbook_on_stats(FakeStats(['web1', 'web2'], failures={'web1': 1}))
    alerts = spool(env)
    assert [a['event'] for a in alerts] == ['deploy_failed', 'rollback_failed']
    assert alerts[-1]['severity'] == 'critical' and reason in alerts[-1]['reason']
    data = json.loads(reports(env)[cb.incident_id + '.json'].read_text())
    assert data['outcome'] == 'rollback_failed' and reason in data['summary']['reason']
    assert '!!! ROLLBACK FAILED: incident %s' % cb.incident_id in display.text()
    assert reports(env)[cb.incident_id + '.md'].read_text().startswith(
        '# Incident %s: ROLLBACK FAILED' % cb.incident_id)


def test_no_log_results_are_censored(env):
    cb = make_callback(env)[0]
    task = FakeTask('Set DB password', no_log=True)
    open_and_fail(cb, task=task)
    cb.v2_runner_on_failed(FakeResult('web2', task, {'msg': 'login hunter2hunter2 rejected', '_ansible_no_log': True}))
    cb.v2_playbook_on_stats(FakeStats(['web1', 'web2'], failures={'web1': 1, 'web2': 1}))
    blob = reports(env)[cb.incident_id + '.json'].read_text() + (env / 'reports' / 'alerts.jsonl').read_text()
    assert 'hunter2hunter2' not in blob and 'port 8080 in use' not in blob
    data = json.loads(reports(env)[cb.incident_id + '.json'].read_text())
    assert all(f['message'] == 'output hidden (no_log)' for f in data['failures'])
    assert all('censored' in f['result'] for f in data['failures'])


def test_webhook_gets_alerts_in_order_and_its_url_never_leaks(env):
    receiver = Receiver('/hooks/%s' % SECRET_HOOK_TOKEN)
    try:
        cb, display = make_callback(env, webhook_url=receiver.url, redact_values=['S3cretValue'])
        task = FakeTask('Notify %s' % receiver.url)
        open_and_fail(cb, task=task)
        cb.v2_runner_on_failed(FakeResult('web2', task, {'msg': 'POST %s failed (S3cretValue)' % receiver.url}))
        cb.v2_playbook_on_stats(FakeStats(['web1', 'web2'], failures={'web1': 1, 'web2': 1}))
    finally:
        receiver.close()
    assert [a['event'] for a in receiver.events] == ['deploy_failed', 'deploy_failed', 'rolled_back']
    assert [a['event'] for a in receiver.events] == [a['event'] for a in spool(env)]
    everything = json.dumps(receiver.events) + display.text() + '\n'.join(display.warnings)
    for path in (env / 'reports').iterdir():
        everything += path.read_text()
    assert SECRET_HOOK_TOKEN not in everything and 'S3cretValue' not in everything
    data = json.loads(reports(env)[cb.incident_id + '.json'].read_text())
    assert [a['webhook'] for a in data['alerts']] == ['delivered'] * 3


def test_unreachable_webhook_warns_without_the_url(env):
    import socket
    sock = socket.socket()
    sock.bind(('127.0.0.1', 0))
    url = 'http://127.0.0.1:%d/hooks/%s' % (sock.getsockname()[1], SECRET_HOOK_TOKEN)
    sock.close()   # nothing listens: connection refused
    cb, display = make_callback(env, webhook_url=url)
    open_and_fail(cb)
    cb.v2_playbook_on_stats(FakeStats(['web1', 'web2'], failures={'web1': 1}))
    assert any('not delivered' in w for w in display.warnings)
    assert SECRET_HOOK_TOKEN not in '\n'.join(display.warnings)
    assert [a['event'] for a in spool(env)] == ['deploy_failed', 'rolled_back']   # the spool still has them


def test_child_mode_writes_the_result_and_never_recurses(env, monkeypatch):
    result_path = env / 'child-result.json'
    monkeypatch.setenv('FAILSAFE_ROLLBACK_CHILD', '1')
    monkeypatch.setenv('FAILSAFE_ROLLBACK_RESULT', str(result_path))
    cb = make_callback(env)[0]
    assert cb.child_mode
    open_and_fail(cb)   # even a failing host with an open transaction starts nothing here
    restore = FakeTask('Restore', action='failsafe.deploy.snapshot')
    cb.v2_runner_on_ok(FakeResult('web2', restore, {'failsafe_rollback': {'restored': ['/etc/app.conf'],
                                                                          'password': 'pw'}}))
    cb.v2_playbook_on_stats(FakeStats(['web1', 'web2'], failures={'web1': 1}))
    data = json.loads(result_path.read_text())
    assert data['hosts']['web1']['status'] == 'failed'
    assert data['hosts']['web1']['failed_tasks'][0]['task'] == 'Restart app'
    # when its rollback call came back: the parent's timeline places the host's rollback there
    assert abs(data['hosts']['web2'].pop('done_at') - time.time()) < 60
    assert data['hosts']['web2'] == {'status': 'ok', 'failed_tasks': [],
                                     'failsafe_rollback': [{'restored': ['/etc/app.conf'], 'password': '********'}]}
    assert not (env / 'child-call.json').exists()
    assert spool(env) == [] and reports(env) == {}


def test_disabled_callback_does_nothing(env):
    cb, display = make_callback(env, enabled=False)
    open_and_fail(cb)
    cb.v2_playbook_on_stats(FakeStats(['web1', 'web2'], failures={'web1': 1}))
    assert spool(env) == [] and reports(env) == {} and display.lines == []
    assert not (env / 'child-call.json').exists()


@pytest.mark.parametrize('how', ['env', 'extra_var'])
def test_defer_to_workflow_reports_without_starting_the_child(env, monkeypatch, how):
    if how == 'env':
        monkeypatch.setenv('JOB_ID', '42')
    cb, display = make_callback(env, defer_to_workflow=True)
    if how == 'extra_var':
        cb.v2_playbook_on_play_start(FakePlay({'awx_job_id': 42, 'db_password': 'nope'}))
    open_and_fail(cb)
    cb.v2_playbook_on_stats(FakeStats(['web1', 'web2'], failures={'web1': 1}))
    assert not (env / 'child-call.json').exists()
    assert [a['event'] for a in spool(env)] == ['deploy_failed', 'rollback_deferred']
    data = json.loads(reports(env)[cb.incident_id + '.json'].read_text())
    assert data['outcome'] == 'deferred' and 'nope' not in json.dumps(data)


def test_check_mode_does_not_roll_back(env, monkeypatch):
    monkeypatch.setattr(context, 'CLIARGS', CLIArgs({'check': True}))
    cb = make_callback(env)[0]
    open_and_fail(cb)
    cb.v2_playbook_on_stats(FakeStats(['web1', 'web2'], failures={'web1': 1}))
    assert not (env / 'child-call.json').exists()
    assert json.loads(reports(env)[cb.incident_id + '.json'].read_text())['outcome'] == 'skipped_check_mode'


def test_relative_rollback_playbook_is_found_beside_the_playbook(env, monkeypatch):
    (env / 'rollback.yml').write_text('[]')
    monkeypatch.chdir(env / 'bin')
    cb = make_callback(env, rollback_playbook='rollback.yml')[0]
    open_and_fail(cb)
    cb.v2_playbook_on_stats(FakeStats(['web1', 'web2'], failures={'web1': 1}))
    call = json.loads((env / 'child-call.json').read_text())
    assert call['argv'][0] == str(env / 'rollback.yml')


def test_callback_never_raises(env):
    cb, display = make_callback(env)
    cb.v2_runner_on_failed(object())
    cb.v2_runner_on_ok(FakeResult('web1', None, None))
    cb.v2_playbook_on_task_start(None, False)
    assert display.warnings and all('ignored' in w for w in display.warnings)


def test_at_exit_without_recap_reports_rollback_not_started(env):
    cb = make_callback(env, rollback_on_interrupt=False)[0]
    open_and_fail(cb)
    cb._at_exit()   # what atexit runs when ansible-playbook is interrupted before the recap
    assert [a['event'] for a in spool(env)] == ['deploy_failed', 'rollback_failed']
    assert spool(env)[-1]['outcome'] == 'not_started'
    data = json.loads(reports(env)[cb.incident_id + '.json'].read_text())
    assert data['outcome'] == 'not_started'
    cb._at_exit()   # only once
    assert len(spool(env)) == 2


def test_at_exit_after_an_interrupt_rolls_back_the_open_transactions(env):
    cb = make_callback(env)[0]
    start = FakeTask('Open transaction', action='failsafe.deploy.deploy_state')
    for host in ('web1', 'web2'):
        cb.v2_runner_on_ok(FakeResult(host, start, txn(host)))
    cb._signals.fired = 'SIGTERM'   # what the armed handler records before the run unwinds
    cb._at_exit()
    call = json.loads((env / 'child-call.json').read_text())
    assert call['argv'][call['argv'].index('--limit') + 1] == 'web1,web2'
    assert call['vars']['failsafe_rollback_run_id'] == 'run-7'
    assert [a['event'] for a in spool(env)][0] == 'deploy_interrupted'
    data = json.loads(reports(env)[cb.incident_id + '.json'].read_text())
    assert data['summary']['reason'] == 'deploy interrupted (SIGTERM)'
    assert os.environ['FAILSAFE_CONTROLLER_PID'] == str(os.getpid())


@pytest.mark.parametrize('final, outcome, event', [
    ('successful', 'rolled_back', 'rolled_back'),
    ('failed', 'rollback_failed', 'rollback_failed'),
])
def test_rollback_through_the_controller_reports_its_outcome(env, final, outcome, event):
    """rollback_via=controller launches the rollback job template (a local fake Controller answers) and the
    outcome follows the job's final status, never 'skipped'."""
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'plugin_utils'))
    try:
        from test_controller import TOKEN, FakeController  # pylint: disable=import-error
    finally:
        sys.path.pop(0)
    fake = FakeController(statuses=('pending', 'running', final),
                          host_summaries=[{'host_name': 'web1', 'failed': final != 'successful', 'failures': 0,
                                           'dark': 0}, {'host_name': 'web2', 'failed': False, 'failures': 0,
                                                        'dark': 0}])
    try:
        cb, display = make_callback(env, rollback_via='controller', controller_host=fake.url,
                                    controller_token=TOKEN, controller_rollback_template='7',
                                    controller_poll_interval=0.01, rollback_timeout=20)
        open_and_fail(cb)
        cb.v2_playbook_on_stats(FakeStats(['web1', 'web2'], failures={'web1': 1}))
    finally:
        fake.close()
    launches = [r for r in fake.requests if r['method'] == 'POST' and r['path'].endswith('/launch/')]
    assert len(launches) == 1 and launches[0]['auth'] == 'Bearer %s' % TOKEN
    assert launches[0]['body']['extra_vars']['failsafe_rollback_incident'] == cb.incident_id
    assert not (env / 'child-call.json').exists()   # no local child
    assert cb.outcome == outcome
    assert [a['event'] for a in spool(env)] == ['deploy_failed', event]
    assert TOKEN not in display.text()
    assert TOKEN not in reports(env)[cb.incident_id + '.json'].read_text()
