"""Deploys run through ansible_runner.run the way AWX runs a job, against this machine (the examples/demo setup).

As in AWX: runner forces its awx_display stdout callback, the auto_rollback callback is enabled only by the
project's ansible.cfg (a copy of examples/demo/ansible.cfg at the project root), and the inventory is given only on
the command line. A secret webhook URL (token in its path, pointing at a real receiver) and a secret extra var used
by a no_log task must appear in no job event, stdout, incident report, spool or rollback log.

Runs, in order on one host: 2.0.0 (good), 3.0.0 (health fails: the callback rolls back to 2.0.0), 4.0.0 with
defer_to_workflow inside a "job" (the callback leaves the rollback to the workflow) followed by the failure node
(rollback.yml given the deploy's set_stats artifacts as extra vars), and 1.0.0 failing right after preflight with
a rollback that cannot run (ROLLBACK FAILED; the host is left as it is). scripts/deploy_outcome.py is checked against the real incident reports of each run.
"""
import glob
import json
import os
import shutil
import subprocess
import sys

import pytest

from support import DEMO, ROOT, assert_no_ignored_callback_errors
from tests.requires import require_module

pytestmark = pytest.mark.slow

HOOK_TOKEN = 'wHk-T0ken-9f8e7d6c5b4a'
DB_SECRET = 'db-S3cret-p4ssw0rd-771'

SECRET_TASKS = '''\
- name: Hand the database password to the app
  ansible.builtin.command: echo "db password is {{ app_db_password }}"
  changed_when: false
  no_log: true
'''


class AwxProject:
    """A private_data_dir whose project holds the playbooks and the demo's ansible.cfg, as an AWX project would."""

    def __init__(self, deploy, base):
        self.runner = require_module('ansible_runner', 'ansible-runner is missing (requirements-dev.txt)')
        self.d = deploy
        self.base = str(base)
        self.project = os.path.join(self.base, 'project')
        os.makedirs(self.project)
        shutil.copy(os.path.join(DEMO, 'ansible.cfg'), os.path.join(self.project, 'ansible.cfg'))
        for name in ('deploy', 'rollback'):
            with open(os.path.join(self.project, name + '.yml'), 'w') as f:
                f.write('---\n- name: Run failsafe.deploy.%s\n  ansible.builtin.import_playbook: failsafe.deploy.%s\n'
                        % (name, name))
        with open(os.path.join(self.project, 'secret-tasks.yml'), 'w') as f:
            f.write(SECRET_TASKS)
        with open(os.path.join(self.project, 'failing-tasks.yml'), 'w') as f:
            f.write(SECRET_TASKS + '- name: Fail after the transaction opened\n  ansible.builtin.fail:\n'
                    '    msg: injected failure\n')
        self.hook_url = '%s/%s' % (deploy.receiver.url, HOOK_TOKEN)
        self.results = []

    def run(self, playbook, name, extravars=None, **env):
        envvars = dict((k, v) for k, v in self.d.env.items() if k.startswith(('FAILSAFE_', 'ANSIBLE_', 'PATH')))
        envvars.pop('ANSIBLE_CONFIG')   # the project's own ansible.cfg enables the callback
        envvars.update({'FAILSAFE_WEBHOOK_URL': self.hook_url,
                        'FAILSAFE_REPORT_DIR': os.path.join(self.base, 'incidents-' + name),
                        'FAILSAFE_SPOOL_PATH': os.path.join(self.base, 'incidents-' + name, 'alerts.jsonl')})
        envvars.update(env)
        os.makedirs(os.path.join(self.base, 'job-' + name))
        ansible_runner = self.runner
        saved = dict((k, os.environ.pop(k)) for k in list(os.environ) if k.startswith(('FAILSAFE_', 'ANSIBLE_')))
        try:
            # one private_data_dir per job (runner keeps the envvars of a private_data_dir), one shared project
            r = ansible_runner.run(private_data_dir=os.path.join(self.base, 'job-' + name), project_dir=self.project,
                                   ident=name, playbook=playbook,
                                   inventory=os.path.join(DEMO, 'inventory.yml'), envvars=envvars,
                                   extravars=dict({'app_db_password': DB_SECRET,
                                                   'failsafe_preflight_after_tasks':
                                                       os.path.join(self.project, 'secret-tasks.yml')},
                                                  **(extravars or {})),
                                   quiet=True, timeout=300)
        finally:
            os.environ.update(saved)
        r.events_list = list(r.events)
        r.report_dir = envvars['FAILSAFE_REPORT_DIR']
        assert_no_ignored_callback_errors(r.events_list, where='job events of %s' % name)
        self.results.append(r)
        return r

    def outcome(self, r):
        proc = subprocess.run([sys.executable, os.path.join(ROOT, 'scripts', 'deploy_outcome.py'),
                               '--report-dir', r.report_dir, '--rc', str(r.rc)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=30, check=False)
        values = dict(line.split('=', 1) for line in proc.stdout.splitlines())
        return proc.returncode, values


def incident(report_dir):
    reports = [p for p in glob.glob(os.path.join(report_dir, 'inc-*.json')) if '.rollback' not in p]
    assert len(reports) == 1, reports
    with open(reports[0]) as f:
        return json.load(f)


def kinds(r):
    return [e['event'] for e in r.events_list]


def playbook_kinds(r):
    """The job's events from the playbook's start on. Whatever the interpreter printed before the playbook started
    (a dependency's warning on stderr, as a new cryptography release prints at every start of ansible-core 2.19)
    reaches the job as ``verbose`` events first: it says nothing about the deploy, so it is judged apart."""
    events = kinds(r)
    assert events.count('playbook_on_start') == 1, events[:10]
    start = events.index('playbook_on_start')
    assert set(events[:start]) <= {'verbose'}, events[:start]
    return events[start:]


# A warning printed by the interpreter before ansible-playbook starts its playbook, as a dependency's deprecation
# warning is: the good job runs with it, so the event checks below are shown to hold when the job's first event
# is such a line rather than the playbook's start.
EARLY_WARNING = 'a dependency of ansible-playbook deprecates something'
SITECUSTOMIZE = """\
import os
import sys
import warnings
if os.path.basename(sys.argv[0] if sys.argv else '') == 'ansible-playbook':
    warnings.warn(%r, UserWarning)
""" % EARLY_WARNING


def failed_tasks(r):
    return [e['event_data'].get('task') for e in r.events_list if e['event'] == 'runner_on_failed'
            and not e['event_data'].get('ignore_errors')]


def stats(r):
    found = [e for e in r.events_list if e['event'] == 'playbook_on_stats']
    assert len(found) == 1
    return found[0]['event_data']


def stdout_of(r):
    return ''.join(e.get('stdout') or '' for e in r.events_list)


@pytest.fixture(scope='module')
def awx(module_deploy, tmp_path_factory):
    project = AwxProject(module_deploy, tmp_path_factory.mktemp('awx'))
    warner = tmp_path_factory.mktemp('early-warning')
    (warner / 'sitecustomize.py').write_text(SITECUSTOMIZE)
    good = project.run('deploy.yml', 'good', {'release_version': '2.0.0'}, PYTHONPATH=str(warner))
    good.journal = module_deploy.journal()
    good.digest = module_deploy.digest()
    bad = project.run('deploy.yml', 'bad', {'release_version': '3.0.0'})
    return project, good, bad


def test_good_deploy_succeeds_and_publishes_the_transaction_as_artifacts(awx):
    project, good = awx[0], awx[1]
    assert (good.status, good.rc) == ('successful', 0), stdout_of(good)[-4000:]
    # the interpreter's warning came first, and is not taken for part of the deploy
    assert kinds(good)[0] == 'verbose' and EARLY_WARNING in good.events_list[0].get('stdout', '')
    events = playbook_kinds(good)
    assert events[0] == 'playbook_on_start' and events.count('playbook_on_stats') == 1
    assert 'playbook_on_play_start' in events and 'runner_on_failed' not in events
    ok_tasks = [e['event_data'].get('task') for e in good.events_list if e['event'] == 'runner_on_ok']
    assert 'Open the deploy transaction' in ok_tasks and 'Check the health of the new release' in ok_tasks
    data = stats(good)
    assert data['failures'] == {} and data['ok'].get('localhost')
    artifacts = data['artifact_data']
    assert artifacts['failsafe_deploy_release'] == '2.0.0'
    assert artifacts['failsafe_deploy_previous_releases'] == {'localhost': None}
    assert artifacts['failsafe_rollback_run_id'] == good.journal['run_id']
    assert good.journal['status'] == 'committed'
    assert project.outcome(good) == (0, {'outcome': 'deployed', 'label': 'DEPLOYED', 'exit_code': '0',
                                         'incident_id': '', 'report': '', 'report_markdown': ''})


def test_failing_deploy_is_rolled_back_to_the_previous_verified_release(awx):
    project, bad = awx[0], awx[2]
    d = project.d
    assert (bad.status, bad.rc) == ('failed', 2)
    assert failed_tasks(bad) == ['Check the health of the new release']
    data = stats(bad)
    assert list(data['failures']) == ['localhost']
    assert data['artifact_data']['failsafe_deploy_release'] == '3.0.0'
    assert data['artifact_data']['failsafe_deploy_previous_releases'] == {'localhost': '2.0.0'}
    out = stdout_of(bad)
    assert 'failsafe auto_rollback: ROLLED BACK' in out and 'rollback | PLAY RECAP' in out

    assert d.digest() == awx[1].digest   # current and the release it serves, shared/, the program file
    assert d.current() == 'releases/2.0.0'
    assert not os.path.exists(d.lock_path())
    journal = d.journal()
    assert (journal['release'], journal['status']) == ('3.0.0', 'rolled_back')
    assert journal['run_id'] == data['artifact_data']['failsafe_rollback_run_id']
    assert d.ledger()['releases']['3.0.0']['state'] == 'failed'
    assert d.http('/version') == (200, '2.0.0')
    assert json.loads(d.http('/health')[1])['status'] == 'ok'

    report = incident(bad.report_dir)
    assert report['outcome'] == 'rolled_back' and report['rollback']['rc'] == 0
    assert [(f['host'], f['task'].split(' : ')[-1]) for f in report['failures']] == [
        ('localhost', 'Check the health of the new release')]
    assert d.receiver.kinds()[-2:] == ['deploy_failed', 'rolled_back']   # the secret URL was used
    code, values = project.outcome(bad)
    assert (code, values['outcome'], values['incident_id']) == (1, 'rolled_back', report['incident_id'])
    assert values['report'].endswith(report['incident_id'] + '.json') and os.path.exists(values['report_markdown'])


def test_deferred_to_the_workflow_then_the_failure_node_rolls_back_with_the_artifacts(awx):
    project = awx[0]
    d = project.d
    before = d.digest()
    deferred = project.run('deploy.yml', 'deferred', {'release_version': '4.0.0', 'awx_job_id': 4711},
                           FAILSAFE_DEFER_TO_WORKFLOW='true')
    assert (deferred.status, deferred.rc) == ('failed', 2)
    report = incident(deferred.report_dir)
    assert report['outcome'] == 'deferred' and 'rollback_log' not in report['files']
    assert d.journal()['status'] == 'open' and d.journal()['release'] == '4.0.0'   # left to the workflow
    assert d.digest() != before   # the failed deploy changed what the failure node must restore
    code, values = project.outcome(deferred)
    assert (code, values['outcome']) == (2, 'rollback_failed')   # nothing rolled back yet: a pipeline must not pass

    artifacts = stats(deferred)['artifact_data']
    assert artifacts['failsafe_deploy_previous_releases'] == {'localhost': '2.0.0'}
    node = project.run('rollback.yml', 'failure-node', dict(artifacts))
    assert (node.status, node.rc) == ('successful', 0), stdout_of(node)[-4000:]
    undone = [e['event_data'] for e in node.events_list if e['event'] == 'runner_on_ok'
              and e['event_data'].get('task') == 'Undo the transaction, check health and prove the restore']
    assert undone and undone[0]['res']['failsafe_rollback']['verified'] is True
    assert undone[0]['res']['failsafe_rollback']['target_release'] == '2.0.0'
    journal = d.journal()
    assert (journal['release'], journal['status'], journal['run_id']) == (
        '4.0.0', 'rolled_back', artifacts['failsafe_rollback_run_id'])
    assert d.current() == 'releases/2.0.0' and d.http('/version') == (200, '2.0.0')
    assert d.digest() == before
    assert not os.path.exists(d.lock_path())


def test_a_rollback_that_cannot_run_is_reported_as_rollback_failed(awx):
    project = awx[0]
    # fails right after preflight opened the transaction (cheap), and the rollback playbook does not exist
    broken = project.run('deploy.yml', 'broken', {'release_version': '1.0.0', 'failsafe_preflight_after_tasks':
                                                  os.path.join(project.project, 'failing-tasks.yml')},
                         FAILSAFE_ROLLBACK_PLAYBOOK=os.path.join(project.project, 'missing.yml'))
    assert (broken.status, broken.rc) == ('failed', 2)
    report = incident(broken.report_dir)
    assert report['outcome'] == 'rollback_failed'
    assert 'ROLLBACK FAILED' in stdout_of(broken)
    code, values = project.outcome(broken)
    assert (code, values['outcome'], values['label']) == (2, 'rollback_failed', 'ROLLBACK FAILED')


def test_no_secret_in_any_event_report_spool_or_log(awx):
    project = awx[0]
    assert len(project.results) >= 2
    checked = 0
    for r in project.results:
        for event in r.events_list:
            text = json.dumps(event)
            assert HOOK_TOKEN not in text and DB_SECRET not in text, (r.config.ident, event['event'])
            checked += 1
        for path in glob.glob(os.path.join(r.config.artifact_dir, 'job_events', '*.json')) + [
                os.path.join(r.config.artifact_dir, 'stdout')]:
            with open(path) as f:
                text = f.read()
            assert HOOK_TOKEN not in text and DB_SECRET not in text, path
        for path in glob.glob(os.path.join(r.report_dir, '*')):
            with open(path) as f:
                text = f.read()
            assert HOOK_TOKEN not in text and DB_SECRET not in text, path
    assert checked > 100
    # the no_log task really ran with the secret, and the webhook really got the alerts
    names = [e['event_data'].get('task') for r in project.results for e in r.events_list
             if e['event'] == 'runner_on_ok']
    assert 'Hand the database password to the app' in names
    assert 'rolled_back' in project.d.receiver.kinds()
    logs = glob.glob(os.path.join(project.base, 'incidents-*', '*.rollback.log'))
    spools = glob.glob(os.path.join(project.base, 'incidents-*', 'alerts.jsonl'))
    assert logs and spools
