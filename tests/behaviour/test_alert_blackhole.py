"""Given every alert channel pointed at an address that never answers, when a deploy fails and is rolled back, then
alerts never hold up the rollback (it starts and takes as long as with receivers that answer), the run waits for
the channels at its end at most their total time limit (alert_wait_limit, 10 s by default) even when each channel's
own limits are far longer, the spool holds every alert, and the replay command delivers them once the receivers
answer.

The waits are measured where they happen, so that the load of a busy machine, which slows every run, does not pass
for a wait: the rollback's start and length (the incident report's figures) against the baseline run's, and the
run's end (from the rollback's last output line, stamped as it arrives, to the process's exit) against the
baseline's. Each channel is made to hold out for 30 s per attempt and 120 s in all, so that a rollback that waited
for an alert would take at least 10 s longer and a run that ignored the total limit at least 20 s: far more than the
margins below. A wait in the code is there in every run; a margin exceeded under load is measured once more, up to
three black-holed runs, and each bound must be kept in one of them.

Real ansible-playbook runs of the examples/demo setup (1.0.0 deploys, 3.0.0 fails its health check and is rolled
back), once with working receivers (the baseline) and once with black holes, in the same test. Two kinds of black
hole, both real sockets on 127.0.0.1:
- a listener that accepts every connection and never sends a byte (HTTP and SMTP clients wait for an answer);
- a listener whose accept queue is full and that never accepts, so the kernel drops every further SYN (the client
  waits in connect(), as for a host that is cut off).
The PagerDuty, Slack and Teams receivers of the replay stand in for the real services and check their documented
payload rules (tests/unit/plugins/plugin_utils/test_channels.py); the email goes to a real SMTP server (aiosmtpd with
STARTTLS and AUTH); the generic webhook and Apprise (json://) post to a real HTTP receiver.
"""
import json
import os
import re
import socket
import subprocess
import sys
import threading

import pytest

from support import ROOT, VENV_BIN, Receiver

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                'unit', 'plugins', 'plugin_utils'))

from test_channels import (  # noqa: E402 pylint: disable=wrong-import-position
    ROUTING_KEY, Receiver as ProviderReceiver,
)
from smtp_server import SMTP_PASSWORD, SMTP_USER, SmtpServer  # noqa: E402 pylint: disable=wrong-import-position

pytestmark = pytest.mark.slow

CHANNELS = ['webhook', 'pagerduty', 'slack', 'teams', 'email', 'apprise']
# Margins for a loaded 2-core machine, on top of the bounds the callback promises. A wait for a black-holed channel
# costs at least ALERT_WAIT_LIMIT (the channels hold out longer than that), more than any bound plus its margin.
ROLLBACK_BOUND = 1.0
ROLLBACK_NOISE = 4.0
ALERT_WAIT_LIMIT = 10.0  # the callback's default, not set here
END_NOISE = 3.0
RUNS = 3
# Each channel waits 30 s per attempt and may spend 120 s in all: far longer than the total limit.
HOLD_OUT = {'FAILSAFE_WEBHOOK_TIMEOUT': '30', 'FAILSAFE_WEBHOOK_TIME_LIMIT': '120', 'FAILSAFE_CHANNEL_TIMEOUT': '30',
            'FAILSAFE_CHANNEL_TIME_LIMIT': '120', 'FAILSAFE_EMAIL_TIMEOUT': '30'}


class SilentListener:
    """Accepts every connection and never answers (nor closes) it."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(('127.0.0.1', 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.held = []
        self.accepted = 0
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while True:
            try:
                conn, dummy = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            self.held.append(conn)

    def close(self):
        self.sock.close()
        for conn in self.held:
            conn.close()


class DroppingListener:
    """A listener with a full accept queue that never accepts: further SYNs are dropped by the kernel."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(('127.0.0.1', 0))
        self.sock.listen(0)
        self.port = self.sock.getsockname()[1]
        self.fill = []
        for dummy in range(2):
            client = socket.socket()
            client.settimeout(0.3)
            try:
                client.connect(('127.0.0.1', self.port))
            except OSError:
                pass
            self.fill.append(client)
        probe = socket.socket()
        probe.settimeout(0.5)
        try:
            probe.connect(('127.0.0.1', self.port))
            raise AssertionError('the accept queue is not full: a connection got through')
        except socket.timeout:
            pass
        finally:
            probe.close()

    def close(self):
        for client in self.fill:
            client.close()
        self.sock.close()


def channel_env(webhook, pd_base, slack, teams, smtp_host, smtp_port, apprise, ca_file):
    return {'FAILSAFE_WEBHOOK_URL': webhook,
            'FAILSAFE_PAGERDUTY_ROUTING_KEY': ROUTING_KEY, 'FAILSAFE_PAGERDUTY_URL': pd_base,
            'FAILSAFE_SLACK_WEBHOOK_URL': slack, 'FAILSAFE_TEAMS_WEBHOOK_URL': teams,
            'FAILSAFE_EMAIL_HOST': smtp_host, 'FAILSAFE_EMAIL_PORT': str(smtp_port),
            'FAILSAFE_EMAIL_FROM': 'deploy@example.org', 'FAILSAFE_EMAIL_TO': 'ops@example.org',
            'FAILSAFE_EMAIL_USERNAME': SMTP_USER, 'FAILSAFE_EMAIL_PASSWORD': SMTP_PASSWORD,
            'FAILSAFE_EMAIL_CA_FILE': ca_file, 'FAILSAFE_APPRISE_URLS': apprise}


def timed_deploy(d, version):
    """Deploy ``version`` (again: failsafe_force past the quarantine of a release that failed before). Returns the
    finished process and the seconds from the rollback's last output line (``rollback | ...``, stamped as it
    arrived) to the run's exit: the run's end, where it waits for the channels."""
    proc = d.deploy(version, '-e', 'failsafe_force=true', stamped=True)
    rollback_lines = [at for at, line in proc.stamped if line.startswith('rollback | ')]
    assert rollback_lines, proc.stdout[-6000:]
    return proc, proc.ended - rollback_lines[-1]


def newest_report(d):
    with open(d.incident_reports()[-1]) as f:
        return json.load(f)


def ledger(d):
    path = d.spool[:-len('.jsonl')] + '.delivery.jsonl'
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def test_given_every_channel_blackholed_when_a_deploy_fails_then_rollback_and_run_stay_bounded_and_replay_delivers(
        local_deploy, tmp_path):
    d = local_deploy
    pd, slack, teams = (ProviderReceiver(kind) for kind in ('pagerduty', 'slack', 'teams'))
    apprise_receiver = Receiver()
    smtp = SmtpServer(str(tmp_path))
    silent, dropping = SilentListener(), DroppingListener()
    apprise_url = 'json://127.0.0.1:%d/hook' % apprise_receiver.server.server_address[1]
    working = channel_env(d.receiver.url, pd.base, slack.url, teams.url, '127.0.0.1', smtp.port, apprise_url,
                          smtp.cert)
    try:
        d.env.update(working)
        good = d.deploy('1.0.0')
        assert good.returncode == 0, good.stdout[-6000:]
        base, base_end = timed_deploy(d, '3.0.0')
        assert base.returncode != 0 and 'ROLLED BACK' in base.stdout, base.stdout[-6000:]
        base_report = newest_report(d)
        assert [(a['webhook'], a['pagerduty'], a['slack'], a['teams'], a['email'], a['apprise'])
                for a in base_report['alerts']] == [('delivered',) * 6] * 2

        # every channel now points at a black hole: accepted and never answered, or never accepted at all
        hole = 'http://127.0.0.1:%d' % silent.port
        dropped = 'http://127.0.0.1:%d' % dropping.port
        d.env.update(channel_env(hole + '/hook', hole, hole + '/services/T000/B000/x', dropped + '/workflows/x',
                                 '127.0.0.1', silent.port, 'json://127.0.0.1:%d/hook' % dropping.port, smtp.cert))
        d.env.update(HOLD_OUT)
        spooled_before = len(d.spool_events())
        launch_allowed = base_report['summary']['seconds_to_rollback'] + ROLLBACK_BOUND + ROLLBACK_NOISE
        rollback_allowed = base_report['rollback']['duration'] + ROLLBACK_BOUND + ROLLBACK_NOISE
        end_allowed = base_end + ALERT_WAIT_LIMIT + END_NOISE
        runs, ends, kept = [], [], {'launch': [], 'rollback': [], 'end': []}
        while len(runs) < RUNS and not all(kept.values()):
            bad, bad_end = timed_deploy(d, '3.0.0')
            assert bad.returncode != 0 and 'ROLLED BACK' in bad.stdout, bad.stdout[-6000:]
            assert d.current() == 'releases/1.0.0'
            bad_report = newest_report(d)
            assert bad_report['incident_id'] not in [base_report['incident_id']] + [r['incident_id'] for r in runs]
            # every channel is named in a warning that says its alerts were not delivered and are in the spool:
            # those still sending when the run stopped waiting, and those that gave up before
            said = ' '.join(bad.stdout.split())
            for channel in CHANNELS:
                assert re.search(r"\b%s alert(?:\(s\))? (?:'[a-z_]+'(?:, )?)+ not delivered" % channel, said), (
                    channel, said[-3000:])
            assert 'in the spool' in said
            # and the report says the same: nothing delivered, what was still being sent said so
            assert not [(a['event'], c) for a in bad_report['alerts'] for c in CHANNELS
                        if a[c] not in ('queued', 'sending', 'failed')], bad_report['alerts']
            assert any(a[c] == 'sending' for a in bad_report['alerts'] for c in CHANNELS), bad_report['alerts']
            runs.append(bad_report)
            ends.append(bad_end)
            # the channels were still sending when the run ended: its end waited the whole total limit
            assert bad_end >= ALERT_WAIT_LIMIT - 1.0, bad_end
            figures = {'launch': bad_report['summary']['seconds_to_rollback'],
                       'rollback': bad_report['rollback']['duration'], 'end': bad_end}
            for name, allowed in (('launch', launch_allowed), ('rollback', rollback_allowed), ('end', end_allowed)):
                if figures[name] <= allowed:
                    kept[name].append(len(runs))
            print('launch %.1f -> %.1f s, rollback %.1f -> %.1f s, end %.1f -> %.1f s' % (
                base_report['summary']['seconds_to_rollback'], figures['launch'],
                base_report['rollback']['duration'], figures['rollback'], base_end, bad_end))
        assert silent.accepted >= 4 * len(runs)  # webhook, PagerDuty, Slack and SMTP connected and were left waiting

        # the bounds, each kept in one of the black-holed runs
        assert kept['launch'], (launch_allowed, [r['summary']['seconds_to_rollback'] for r in runs])
        assert kept['rollback'], (rollback_allowed, [r['rollback']['duration'] for r in runs])
        assert kept['end'], (end_allowed, ends)

        # the spool holds every alert of the black-holed runs, meant for every channel, none of them delivered
        spooled = d.spool_events()[spooled_before:]
        assert [a['event'] for a in spooled] == ['deploy_failed', 'rolled_back'] * len(runs)
        assert all(sorted(a['channels']) == sorted(CHANNELS) for a in spooled)
        ids = [a['alert_id'] for a in spooled]
        delivered = {(r['alert_id'], r['channel']) for r in ledger(d) if r['status'] == 'delivered'}
        assert not [key for key in delivered if key[0] in ids]
        for receiver in (d.receiver,):
            assert not [e for e in receiver.events if e.get('alert_id') in ids]

        # the receivers answer again: the replay delivers what each channel missed, once
        env = dict(d.env)
        env.update(working)
        env['PYTHONPATH'] = os.path.join(ROOT, '.build', 'collections')
        before = {'pd': len(pd.received), 'slack': len(slack.received), 'teams': len(teams.received),
                  'smtp': len(smtp.messages), 'apprise': len(apprise_receiver.events)}
        replay = subprocess.run([os.path.join(VENV_BIN, 'python'), '-m',
                                 'ansible_collections.failsafe.deploy.plugins.plugin_utils._replay', d.spool],
                                env=env, cwd=d.dir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                timeout=300, check=False)
        assert replay.returncode == 0, replay.stdout
        assert '%d delivered, 0 failed' % (6 * len(ids)) in replay.stdout, replay.stdout
    finally:
        for thing in (pd, slack, teams, apprise_receiver, smtp, silent, dropping):
            thing.close()
    assert [e['alert_id'] for e in d.receiver.events if e.get('alert_id') in ids] == ids
    sent = [(r['path'], r['json'].get('event_action')) for r in pd.received[before['pd']:]]
    assert sent == [('/v2/enqueue', 'trigger'), ('/v2/enqueue', 'resolve'), ('/v2/change/enqueue', None)] * len(runs)
    slack_titles = [r['json']['text'].split(':')[0] for r in slack.received[before['slack']:]]
    assert slack_titles == ['Deploy failed', 'Rolled back'] * len(runs)
    assert len(teams.received) - before['teams'] == 2 * len(runs) and pd.rejected == slack.rejected == teams.rejected == []
    assert [m['message']['Message-ID'] for m in smtp.messages[before['smtp']:]] == [
        '<%s@failsafe.deploy>' % i for i in ids]
    apprise_titles = [e['title'].split(':')[0] for e in apprise_receiver.events[before['apprise']:]]
    assert apprise_titles == ['Deploy failed', 'Rolled back'] * len(runs)
    again = subprocess.run([os.path.join(VENV_BIN, 'python'), '-m',
                            'ansible_collections.failsafe.deploy.plugins.plugin_utils._replay', '--dry-run', d.spool],
                           env=env, cwd=d.dir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           timeout=120, check=False)
    assert '0 delivered, 0 failed, 0 pending' in again.stdout, again.stdout
