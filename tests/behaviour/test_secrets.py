# -*- coding: utf-8 -*-
# Copyright: Contributors to failsafe.deploy
# SPDX-License-Identifier: GPL-3.0-or-later
"""Given canary secrets in failing results, when a deploy fails and is rolled back, then no canary is written anywhere.

Real ansible-playbook runs of the examples/demo setup (support.LocalDeploy) with the auto_rollback callback, a real
rollback and a real webhook receiver. The canaries:

- NOLOG: in the arguments and output of a failing ``no_log`` task (ansible censors its result; the task's own
  arguments reach callbacks uncensored);
- EXTRA: an extra var (``-e``) that the no_log task uses, which the rollback child is handed on its command line;
- HOOK: the token in the webhook URL path (the URL is a secret by definition);
- DECLARED: in the arguments and output of a failing command, declared secret by the operator with
  ``FAILSAFE_REDACT_VALUES`` (option ``redact_values``);
- PAIR: in the same output as ``api_token=<value>``, caught by the key pattern without being declared;
- the secrets that configure the channels: the PagerDuty routing key, the token of the Slack webhook URL, the
  signature of the Teams Workflows URL, the SMTP password and the token of an Apprise URL. The channels post to
  local receivers that stand in for PagerDuty, Slack and Teams (tests/unit/plugins/plugin_utils/test_channels.py),
  a real SMTP server (aiosmtpd with STARTTLS and AUTH) that also gets the stakeholder notices, and a real HTTP
  receiver for Apprise's ``json://``.

Two failing deploys, each rolled back: in the first the no_log task is the failure (the command failed before,
inside a rescued block); in the second the command is the failure (the no_log task failed before, rescued). So each
canary passes through both the alerted failure and a rescued one. Checked: ansible-playbook's output (ansible's own
``fatal:`` line of the command is the operator's business, every other line is checked), the host's journal, its
history and every other file of its state, the ledger, the incident reports (JSON and Markdown), the alert spool, the
rollback log, vars and result files, the delivery ledger, and every body the webhook and each channel's
receiver got (the PagerDuty events carry the routing key in their ``routing_key`` field, as the API wants, and
nowhere else).
"""

import json
import os
import sys

import pytest

from support import DEMO, Receiver, free_port
from tests.requires import require_module

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                'unit', 'plugins', 'plugin_utils'))

from test_channels import (  # noqa: E402 pylint: disable=wrong-import-position
    ROUTING_KEY, SLACK_TOKEN, TEAMS_SIG, Receiver as ProviderReceiver,
)
from smtp_server import SMTP_PASSWORD, SMTP_USER, SmtpServer  # noqa: E402 pylint: disable=wrong-import-position

pytestmark = pytest.mark.slow

NOLOG = 'CanaryNoLog8Rt4wQ'
EXTRA = 'CanaryExtra5Vb7Kp'
HOOK = 'CanaryHook3Zx9Lm'
DECLARED = 'CanaryDeclared6Nh2Qs'
PAIR = 'CanaryPair4Jd8Wy'
APPRISE = 'CanaryApprise9Wk3Rb'
CHANNEL_SECRETS = (ROUTING_KEY, SLACK_TOKEN, TEAMS_SIG, SMTP_PASSWORD, APPRISE)
CANARIES = (NOLOG, EXTRA, HOOK, DECLARED, PAIR) + CHANNEL_SECRETS
USERINFO = 'CanaryUserinfo2Fq8Dn'
QUERY = 'CanaryQuery7Tg5Hv'

NOLOG_TASK = '''\
- name: Log in to the database
  ansible.builtin.command: /bin/sh -c "echo 'login with {{ app_db_password }} and %(nolog)s refused' >&2; exit 7"
  changed_when: false
  no_log: true
''' % {'nolog': NOLOG}

COMMAND_TASK = '''\
- name: Run the data migration
  ansible.builtin.command: >-
    /bin/sh -c "echo 'migration aborted: upstream refused %(declared)s (api_token=%(pair)s)' >&2; exit 3"
  changed_when: false
''' % {'declared': DECLARED, 'pair': PAIR}


def rescued(tasks):
    body = ''.join('    ' + line + '\n' if line else '\n' for line in tasks.splitlines())
    return ('- name: Try it, rescued\n  block:\n%s  rescue:\n    - name: Note the rescued failure\n'
            '      ansible.builtin.debug:\n        msg: rescued\n' % body)


HOOKS = {
    # first run: the command fails inside a rescued block, then the no_log task fails the deploy
    'nolog-fails': rescued(COMMAND_TASK) + NOLOG_TASK,
    # second run: the no_log task fails inside a rescued block, then the command fails the deploy
    'command-fails': rescued(NOLOG_TASK) + COMMAND_TASK,
}


def files_below(*roots):
    for root in roots:
        for folder, dummy, names in os.walk(root):
            for name in names:
                yield os.path.join(folder, name)


def leaks_in_files(*roots):
    found = []
    for path in files_below(*roots):
        with open(path, 'rb') as f:
            data = f.read()
        found.extend((path, c) for c in CANARIES if c.encode() in data)
    return found


@pytest.fixture(scope='module')
def channels(module_deploy, tmp_path_factory):
    """Every channel configured with its secret, each posting to a real local receiver."""
    d = module_deploy
    receivers = dict((kind, ProviderReceiver(kind)) for kind in ('pagerduty', 'slack', 'teams'))
    receivers['apprise'] = Receiver()
    smtp = SmtpServer(str(tmp_path_factory.mktemp('smtp')))
    apprise_port = receivers['apprise'].server.server_address[1]
    d.env.update({
        'FAILSAFE_PAGERDUTY_ROUTING_KEY': ROUTING_KEY, 'FAILSAFE_PAGERDUTY_URL': receivers['pagerduty'].base,
        'FAILSAFE_SLACK_WEBHOOK_URL': receivers['slack'].url, 'FAILSAFE_TEAMS_WEBHOOK_URL': receivers['teams'].url,
        'FAILSAFE_APPRISE_URLS': 'json://127.0.0.1:%d/apprise/%s' % (apprise_port, APPRISE),
        'FAILSAFE_EMAIL_HOST': '127.0.0.1', 'FAILSAFE_EMAIL_PORT': str(smtp.port),
        'FAILSAFE_EMAIL_FROM': 'deploy@example.org', 'FAILSAFE_EMAIL_TO': 'ops@example.org',
        'FAILSAFE_STAKEHOLDER_EMAIL_TO': 'stakeholders@example.org',
        'FAILSAFE_EMAIL_USERNAME': SMTP_USER, 'FAILSAFE_EMAIL_PASSWORD': SMTP_PASSWORD,
        'FAILSAFE_EMAIL_CA_FILE': smtp.cert, 'FAILSAFE_EMAIL_TIMEOUT': '5', 'FAILSAFE_CHANNEL_TIMEOUT': '5'})
    receivers['smtp'] = smtp
    yield receivers
    for receiver in receivers.values():
        receiver.close()


@pytest.fixture(scope='module')
def runs(module_deploy, channels):
    d = module_deploy
    d.env['FAILSAFE_WEBHOOK_URL'] = '%s/%s' % (d.receiver.url, HOOK)
    d.env['FAILSAFE_REDACT_VALUES'] = DECLARED
    good = d.deploy('1.0.0', '-e', 'app_db_password=%s' % EXTRA)
    assert good.returncode == 0, good.stdout[-6000:]
    out = {}
    for name, version in (('nolog-fails', '2.0.0'), ('command-fails', '5.0.0')):
        hook = os.path.join(d.dir, '%s.yml' % name)
        with open(hook, 'w') as f:
            f.write('---\n' + HOOKS[name])
        before = set(d.incident_reports())
        proc = d.deploy(version, '-e', 'app_db_password=%s' % EXTRA, '-e', 'failsafe_activate_after_tasks=%s' % hook)
        reports = sorted(set(d.incident_reports()) - before)
        assert len(reports) == 1, proc.stdout[-6000:]
        with open(reports[0]) as f:
            out[name] = (proc, json.load(f))
    return d, out


@pytest.mark.parametrize('name', sorted(HOOKS))
def test_given_a_secret_in_a_failing_result_then_the_deploy_is_rolled_back(runs, name):
    d, out = runs
    proc, incident = out[name]
    assert proc.returncode == 2, proc.stdout[-6000:]
    assert incident['outcome'] == 'rolled_back', proc.stdout[-6000:]
    failing = {'nolog-fails': 'Log in to the database', 'command-fails': 'Run the data migration'}[name]
    rescued_task = {'nolog-fails': 'Run the data migration', 'command-fails': 'Log in to the database'}[name]
    assert [f['task'].split(' : ')[-1] for f in incident['failures']] == [failing]
    assert rescued_task in [f['task'].split(' : ')[-1] for f in incident['ignored_failures']]
    assert d.current() == 'releases/1.0.0'


def test_the_canaries_really_were_in_failing_results(runs):
    """Else the checks below would prove nothing: the command's failure carried DECLARED and PAIR (ansible's own
    fatal line shows it), the no_log task really failed with its output censored."""
    out = runs[1]
    fatal = [line for line in out['command-fails'][0].stdout.splitlines() if line.startswith('fatal: [')]
    assert any(DECLARED in line and PAIR in line for line in fatal), fatal
    nolog = out['nolog-fails'][1]['failures'][0]
    assert nolog['message'] == 'output hidden (no_log)' and 'censored' in nolog['result']
    assert out['command-fails'][1]['failures'][0]['result'].get('rc') == 3


@pytest.mark.parametrize('name', sorted(HOOKS))
def test_no_canary_in_the_output_except_ansibles_own_fatal_line_of_the_command(runs, name):
    proc = runs[1][name][0]
    for number, line in enumerate(proc.stdout.splitlines(), 1):
        allowed = (DECLARED, PAIR) if line.startswith('fatal: [') else ()
        leaked = [c for c in CANARIES if c in line and c not in allowed]
        assert not leaked, 'line %d of the output leaks %s: %s' % (number, leaked, line)


def test_no_canary_in_the_reports_spool_or_rollback_files(runs):
    d = runs[0]
    names = os.listdir(d.incidents)
    assert len(d.incident_reports()) == 2
    for kind in ('.md', '.html', '.rollback.log', '.rollback-vars.json', '.rollback-result.json'):
        assert len([n for n in names if n.endswith(kind)]) == 2, (kind, names)
    assert 'alerts.jsonl' in names
    assert leaks_in_files(d.incidents) == []


def test_no_canary_in_the_hosts_journal_history_or_state(runs):
    d = runs[0]
    state = os.path.join(d.state_dir, 'demo-app')
    assert os.path.exists(os.path.join(state, 'journal.json')) and os.path.exists(os.path.join(state, 'history.jsonl'))
    assert leaks_in_files(d.state_dir, os.path.join(d.app_root, '.failsafe')) == []


def test_no_canary_in_anything_the_webhook_receiver_got(runs):
    d = runs[0]
    assert d.receiver.kinds() == ['deploy_failed', 'rolled_back', 'deploy_failed', 'rolled_back']
    text = json.dumps(d.receiver.events)
    assert [c for c in CANARIES if c in text] == []


def test_no_canary_in_anything_the_channels_got(runs, channels):
    """PagerDuty, Slack, Teams, Apprise and email (the on-call alerts and the stakeholder notices) each got both
    failures, and none of it holds a canary: not the task's secrets, not another channel's secret, not its own."""
    pd, slack, teams = channels['pagerduty'], channels['slack'], channels['teams']
    assert pd.rejected == [] and slack.rejected == [] and teams.rejected == []
    triggers = [r['json'] for r in pd.received if r['json'].get('event_action') == 'trigger']
    assert len(triggers) == 2 and all(t['routing_key'] == ROUTING_KEY for t in triggers)
    assert len(slack.received) == 4 and len(teams.received) == 4
    assert len(channels['apprise'].events) == 4
    mails = channels['smtp'].messages
    alerts = [m for m in mails if 'ops@example.org' in m['rcpt_tos']]
    notices = [m for m in mails if 'stakeholders@example.org' in m['rcpt_tos']]
    assert len(alerts) == 4 and len(notices) == 2 + 3 + 3     # 1.0.0 started/live; two runs started/failed/restored
    # the error the operator declared secret did reach the channels, masked: the check below is not vacuous
    assert '********' in json.dumps([r['json'] for r in slack.received])
    bodies = [dict((k, v) for k, v in r['json'].items() if k != 'routing_key') for r in pd.received]
    text = json.dumps(bodies) + json.dumps([r['json'] for r in slack.received + teams.received])
    text += json.dumps(channels['apprise'].events)
    text += ''.join(m['raw'].decode('utf-8', 'replace') for m in mails)
    assert [c for c in CANARIES if c in text] == []


def test_given_a_health_url_with_credentials_when_the_rollback_fails_then_the_host_keeps_no_secret(local_deploy):
    """A failed rollback is written into the host's journal (and history) by the host itself, where the
    callback's redaction cannot reach, and the health check's error reaches ansible's output and job events
    unredacted: the health check itself must not show the URL's password or token."""
    d = local_deploy
    good = d.deploy('1.0.0')
    assert good.returncode == 0, good.stdout[-6000:]
    url = 'http://probe:%s@127.0.0.1:%d/health?token=%s' % (USERINFO, free_port(), QUERY)
    checks = json.dumps({'failsafe_verify_checks': [{'name': 'health', 'url': url, 'retries': 0, 'timeout': 2}]})
    # its health check fails, and so does the rollback's (preflight's probe of the running release would refuse
    # this broken check before anything changed: turned off here to reach the rollback)
    bad = d.deploy('2.0.0', '-e', checks, '-e', 'failsafe_preflight_check_running=false')
    assert bad.returncode == 2, bad.stdout[-6000:]
    journal = d.journal()
    assert journal['status'] == 'rollback_failed', journal
    assert 'health' in json.dumps(journal), journal   # the error was recorded: the check below is not vacuous
    found = [(path, c) for path in files_below(d.state_dir, os.path.join(d.app_root, '.failsafe'), d.incidents)
             for c in (USERINFO, QUERY) if c.encode() in open(path, 'rb').read()]
    assert found == []
    assert [e['event'] for e in d.spool_events()] == ['deploy_failed', 'rollback_failed']
    # the module's own messages mask the URL; ansible's echo of the loop item (the operator's check) is not ours
    errors = [line for line in bad.stdout.splitlines() if line.startswith(('[ERROR]', 'rollback |'))]
    assert any('health check failed' in line for line in errors), bad.stdout[-6000:]
    assert [line for line in errors if USERINFO in line or QUERY in line] == []
    assert '"error": "GET http://********@127.0.0.1' in bad.stdout and '/health?token=********' in bad.stdout


def test_under_ansible_runner_no_canary_in_job_events_or_artifacts_but_ansibles_own_failed_result(runs, tmp_path):
    """The same failing deploy run the way AWX runs it: every job event (our callback's lines arrive as events of
    their own), the job's stdout and event files, and again every file we write and every webhook body."""
    ansible_runner = require_module('ansible_runner', 'ansible-runner is missing (requirements-dev.txt)')
    d = runs[0]
    project = tmp_path / 'project'
    project.mkdir()
    (tmp_path / 'job').mkdir()
    with open(os.path.join(DEMO, 'ansible.cfg')) as f:
        (project / 'ansible.cfg').write_text(f.read())
    (project / 'deploy.yml').write_text('---\n- name: Run failsafe.deploy.deploy\n'
                                        '  ansible.builtin.import_playbook: failsafe.deploy.deploy\n')
    (project / 'hook.yml').write_text('---\n' + HOOKS['command-fails'])
    envvars = dict((k, v) for k, v in d.env.items() if k.startswith(('FAILSAFE_', 'ANSIBLE_', 'PATH')))
    envvars.pop('ANSIBLE_CONFIG')   # the project's own ansible.cfg enables the callback, as in AWX
    saved = dict((k, os.environ.pop(k)) for k in list(os.environ) if k.startswith(('FAILSAFE_', 'ANSIBLE_')))
    seen = len(d.receiver.events)
    try:
        r = ansible_runner.run(private_data_dir=str(tmp_path / 'job'), project_dir=str(project), ident='secrets',
                               playbook='deploy.yml', inventory=os.path.join(DEMO, 'inventory.yml'), envvars=envvars,
                               extravars={'release_version': '3.0.0', 'app_db_password': EXTRA,
                                          'failsafe_activate_after_tasks': str(project / 'hook.yml')},
                               quiet=True, timeout=300)
    finally:
        os.environ.update(saved)
    events = list(r.events)
    assert (r.status, r.rc) == ('failed', 2)
    assert [e.get('event') for e in d.receiver.events[seen:]] == ['deploy_failed', 'rolled_back']
    assert d.current() == 'releases/1.0.0'

    ours = 0
    for event in events:
        text = json.dumps(event)
        # ansible's own result of the failing command (and its display) shows the command: the operator's business
        allowed = (DECLARED, PAIR) if event['event'] == 'runner_on_failed' else ()
        leaked = [c for c in CANARIES if c in text and c not in allowed]
        assert not leaked, (leaked, event['event'], text[:2000])
        ours += 'failsafe auto_rollback' in (event.get('stdout') or '') or 'rollback |' in (event.get('stdout') or '')
    assert ours > 5   # our lines were among the events checked
    assert any(DECLARED in json.dumps(e) for e in events if e['event'] == 'runner_on_failed')
    stdout_path = os.path.join(r.config.artifact_dir, 'stdout')
    with open(stdout_path) as f:
        lines = f.read().splitlines()
    for line in lines:
        allowed = (DECLARED, PAIR) if line.startswith('fatal: [') else ()
        assert not [c for c in CANARIES if c in line and c not in allowed], line
    assert leaks_in_files(d.incidents, d.state_dir, os.path.join(d.app_root, '.failsafe')) == []
    assert [c for c in CANARIES if c in json.dumps(d.receiver.events)] == []
