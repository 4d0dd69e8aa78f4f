# -*- coding: utf-8 -*-
# Copyright: Contributors to failsafe.deploy
# SPDX-License-Identifier: GPL-3.0-or-later
"""The watch window after a deploy: an alert inside it rolls the deploy back, once.

Real parts, started once for the file: the demo site (examples/demo in a private directory, a real supervisord, the
real example app, real ansible-playbook runs of failsafe.deploy.deploy with the auto_rollback callback), Debian's
Prometheus scraping the app's metrics every second with an alert rule over its error counter, Debian's Alertmanager
whose webhook receiver is the collection's rulebook (extensions/eda/rulebooks/watch.yml) run by the real
ansible-rulebook, and an HTTP receiver as the deploy's webhook (the notifications).

- release 5.0.0 passes its checks (its /health is fine), commits with a watch window, then its error rate rises:
  Prometheus fires, Alertmanager posts, the rulebook rolls it back: the host serves 1.0.0 again, 5.0.0 is
  quarantined, and the incident report says the watch triggered it and names the alert;
- an alert after the window is not acted on (the host unchanged) and only notifies;
- 100 notifications posted within a second to the rulebook's webhook roll the deploy back exactly once (one
  rolled_back entry in the host's history, one claim, one incident); a later, different alert for it does nothing;
- a body that is not Alertmanager's and an alert for an unknown service are refused with a clear message: the host
  and its history unchanged.
"""
import json
import os
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request

import pytest

from prometheus_server import BINARY as PROMETHEUS, ensure_prometheus
from support import DEMO, ROOT, LocalDeploy, Receiver
from test_local_commit_confirmed import serves, wait_for
from tests.requires import require

pytestmark = pytest.mark.slow

# Ports of their own (19300-19399 is this file's range).
PROMETHEUS_PORT, ALERTMANAGER_PORT, RULEBOOK_PORT, APP_PORT, RECEIVER_PORT = 19331, 19332, 19333, 19334, 19335
ALERTMANAGER = '/usr/bin/prometheus-alertmanager'
JAVA_HOME = '/usr/lib/jvm/java-17-openjdk-amd64'
ALERT = 'DemoAppErrors'
# From the first failing request to the host back on the previous release: a scrape (1 s), the rule (1 s), the
# Alertmanager group wait (1 s), the rulebook's playbook and the rollback (a few seconds, more on a loaded machine).
ROLLED_BACK_WITHIN = 180

PROMETHEUS_CONFIG = """global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files: ['%(rules)s']
alerting:
  alertmanagers:
    - static_configs:
        - targets: ['127.0.0.1:%(alertmanager)d']
scrape_configs:
  - job_name: demo-app
    scrape_timeout: 900ms
    static_configs:
      - targets: ['127.0.0.1:%(app)d']
"""
RULES = """groups:
  - name: demo-app
    rules:
      - alert: %s
        expr: increase(app_errors_total[15s]) > 0
        for: 0s
        labels:
          service: demo-app
""" % ALERT
ALERTMANAGER_CONFIG = """route:
  receiver: eda
  group_by: [alertname, service]
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: eda
    webhook_configs:
      - url: http://127.0.0.1:%d/alerts
        send_resolved: false
""" % RULEBOOK_PORT


def _start(cmd, log_path, env=None, cwd=None):
    log = open(log_path, 'a', encoding='utf-8')  # pylint: disable=consider-using-with
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=cwd,
                            start_new_session=True)
    log.close()
    return proc


def _stop(proc):
    if proc is not None and proc.poll() is None:
        os.killpg(proc.pid, 15)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait(timeout=20)


def _ready(url):
    try:
        with urllib.request.urlopen(url, timeout=2) as answer:
            return answer.status == 200
    except OSError:
        return False


def _listening(port):
    try:
        with socket.create_connection(('127.0.0.1', port), timeout=1):
            return True
    except OSError:
        return False


class Watch:
    """The demo site, Prometheus, Alertmanager and the rulebook, started once for the file."""

    def __init__(self, base):
        self.base = base
        self.receiver = Receiver(port=RECEIVER_PORT)
        self.site = LocalDeploy(os.path.join(base, 'site'), self.receiver)
        self.site.port = APP_PORT
        self.watch_dir = os.path.join(base, 'watch')
        self.site.env.update({'FAILSAFE_DEMO_PORT': str(APP_PORT), 'FAILSAFE_WATCH_DIR': self.watch_dir,
                              'JAVA_HOME': JAVA_HOME})
        self.procs = []
        self.rulebook_log = os.path.join(base, 'rulebook.log')
        self.rulebook_up = False

    def start(self):
        base = self.base
        rules = os.path.join(base, 'rules.yml')
        with open(rules, 'w') as handle:
            handle.write(RULES)
        with open(os.path.join(base, 'prometheus.yml'), 'w') as handle:
            handle.write(PROMETHEUS_CONFIG % {'rules': rules, 'alertmanager': ALERTMANAGER_PORT, 'app': APP_PORT})
        with open(os.path.join(base, 'alertmanager.yml'), 'w') as handle:
            handle.write(ALERTMANAGER_CONFIG)
        with open(os.path.join(base, 'rulebook-vars.yml'), 'w') as handle:
            handle.write('failsafe_watch_host: 127.0.0.1\nfailsafe_watch_port: %d\n' % RULEBOOK_PORT)
        self.procs.append(_start(
            [ALERTMANAGER, '--config.file', os.path.join(base, 'alertmanager.yml'),
             '--storage.path', os.path.join(base, 'alertmanager-data'),
             '--web.listen-address', '127.0.0.1:%d' % ALERTMANAGER_PORT, '--cluster.listen-address='],
            os.path.join(base, 'alertmanager.log')))
        self.procs.append(_start(
            [PROMETHEUS, '--config.file', os.path.join(base, 'prometheus.yml'),
             '--storage.tsdb.path', os.path.join(base, 'prometheus-data'),
             '--web.listen-address', '127.0.0.1:%d' % PROMETHEUS_PORT, '--storage.tsdb.retention.time', '1d'],
            os.path.join(base, 'prometheus.log')))
        self.procs.append(_start(
            ['ansible-rulebook', '--rulebook', 'failsafe.deploy.watch', '-i', os.path.join(DEMO, 'inventory.yml'),
             '--vars', os.path.join(base, 'rulebook-vars.yml')],
            self.rulebook_log, env=self.site.env, cwd=self.site.dir))
        for what, ready in (('alertmanager', lambda: _ready('http://127.0.0.1:%d/-/ready' % ALERTMANAGER_PORT)),
                            ('prometheus', lambda: _ready('http://127.0.0.1:%d/-/ready' % PROMETHEUS_PORT))):
            assert wait_for(ready, 120, step=0.5), '%s did not come up; see %s' % (what, base)
            self.check_running()
        return self

    def check_running(self):
        for proc in self.procs:
            assert proc.poll() is None, 'a server exited (rc %s); see the logs in %s' % (proc.returncode, self.base)

    def rulebook_ready(self):
        """Waits for the rulebook's webhook: ansible-rulebook starts a JVM, up to a minute on a busy machine (it
        boots while the first deploy runs)."""
        if not self.rulebook_up:
            assert wait_for(lambda: _listening(RULEBOOK_PORT), 120, step=0.5), \
                'ansible-rulebook did not come up; see %s' % self.rulebook_log
            self.check_running()
            self.rulebook_up = True

    def stop(self):
        for proc in reversed(self.procs):
            _stop(proc)
        self.site.stop()
        self.receiver.close()

    # what the watch wrote ------------------------------------------------------------------------------------
    def decisions(self):
        path = os.path.join(self.watch_dir, 'watch.log')
        if not os.path.exists(path):
            return []
        with open(path) as handle:
            return [json.loads(line) for line in handle if line.strip()]

    def claims(self):
        return sorted(n for n in os.listdir(self.watch_dir) if n.endswith('.claim')) \
            if os.path.isdir(self.watch_dir) else []

    def window(self):
        with open(os.path.join(self.watch_dir, 'demo-app.json')) as handle:
            return json.load(handle)

    def history(self):
        path = os.path.join(self.site.state_dir, 'demo-app', 'history.jsonl')
        with open(path) as handle:
            return [json.loads(line) for line in handle if line.strip()]

    def rolled_back(self, run_id):
        return [h for h in self.history() if h.get('run_id') == run_id and h.get('status') == 'rolled_back']

    def watch_incidents(self):
        found = []
        for path in self.site.incident_reports():
            with open(path) as handle:
                data = json.load(handle)
            if data.get('trigger') == 'watch':
                found.append(data)
        return found

    def deploy_watched(self, version, duration):
        watch = {'failsafe_watch': {'duration': duration, 'alerts': [ALERT]}}
        proc = self.site.deploy(version, '-e', json.dumps(watch))
        assert proc.returncode == 0, proc.stdout[-5000:]
        assert self.site.current() == 'releases/%s' % version and serves(self.site) == (200, version)
        window = self.window()
        assert window['release'] == version and window['alerts'] == [ALERT], window
        assert window['hosts'] == {'localhost': {'state_dir': self.site.state_dir, 'name': 'demo-app'}}, window
        assert self.site.journal()['status'] == 'committed' and self.site.journal()['run_id'] == window['run_id']
        return window

    def post(self, body, raw=False):
        self.rulebook_ready()
        data = body if raw else json.dumps(body).encode()
        request = urllib.request.Request('http://127.0.0.1:%d/alerts' % RULEBOOK_PORT, data=data,
                                         headers={'Content-Type': 'application/json'}, method='POST')
        try:
            with urllib.request.urlopen(request, timeout=10) as answer:
                return answer.status, answer.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()


def notification(service, group_key, alertname=ALERT):
    """An Alertmanager webhook body (version 4) with one firing alert."""
    return {'version': '4', 'groupKey': group_key, 'status': 'firing', 'receiver': 'eda',
            'groupLabels': {'alertname': alertname, 'service': service},
            'commonLabels': {'alertname': alertname, 'service': service}, 'commonAnnotations': {},
            'externalURL': 'http://127.0.0.1:%d' % ALERTMANAGER_PORT, 'truncatedAlerts': 0,
            'alerts': [{'status': 'firing', 'labels': {'alertname': alertname, 'service': service},
                        'annotations': {}, 'startsAt': '2026-01-01T00:00:00Z', 'endsAt': '0001-01-01T00:00:00Z',
                        'generatorURL': 'http://127.0.0.1/graph', 'fingerprint': group_key[:16]}]}


@pytest.fixture(scope='module')
def watch(tmp_path_factory):
    require(ensure_prometheus(), 'prometheus is missing (Debian package prometheus; scripts/prometheus-prereqs.sh '
            'as root)')
    if not os.access(ALERTMANAGER, os.X_OK) and os.geteuid() == 0:
        subprocess.run(['bash', os.path.join(ROOT, 'scripts', 'alertmanager-prereqs.sh')], check=True)
    require(os.access(ALERTMANAGER, os.X_OK), 'prometheus-alertmanager is missing (scripts/alertmanager-prereqs.sh '
            'as root)')
    require(os.path.isdir(JAVA_HOME), 'Java 17 is missing (%s), which ansible-rulebook needs' % JAVA_HOME)
    require(os.path.exists(os.path.join(os.path.dirname(PROMETHEUS), 'prometheus')), 'prometheus is missing')
    from support import VENV_BIN
    require(os.access(os.path.join(VENV_BIN, 'ansible-rulebook'), os.X_OK),
            'ansible-rulebook is missing from the venv (requirements-dev.txt; make setup)')
    w = Watch(str(tmp_path_factory.mktemp('watch')))
    try:
        yield w.start()
    finally:
        w.stop()


def test_an_alert_after_the_window_only_notifies(watch):
    """Given 1.0.0 deployed with a 1 s window, when its alert comes after the window, then the deploy is not rolled
    back (the host unchanged, committed, serving 1.0.0, its history as it was) and the alert is only notified."""
    site = watch.site
    window = watch.deploy_watched('1.0.0', 1)
    time.sleep(max(0.0, window['until'] - time.time()) + 0.5)
    digest, history = site.digest(), watch.history()
    assert watch.post(notification('demo-app', 'after-window'))[0] == 200

    def heard():
        return [e for e in watch.receiver.events if e.get('event') == 'watch_alert_after_window']

    notes = wait_for(heard, 120, step=0.5)
    assert notes and notes[0]['run_id'] == window['run_id'] and 'NOT rolled back' in notes[0]['summary'], notes
    after = [d for d in watch.decisions() if d['decision'] == 'after_window']
    assert [d['run_id'] for d in after] == [window['run_id']], watch.decisions()
    assert site.digest() == digest and watch.history() == history
    assert site.journal()['status'] == 'committed' and serves(site) == (200, '1.0.0')
    assert watch.rolled_back(window['run_id']) == [] and watch.claims() == []


def test_an_error_rate_rising_inside_the_window_rolls_the_deploy_back_and_says_the_watch_did(watch):
    """Given 1.0.0 verified (the test before) and 5.0.0 deployed with a watch window (its health checks pass, it commits), when its
    error rate rises, then Prometheus fires, Alertmanager posts to the rulebook and the deploy is rolled back: the
    host serves 1.0.0 again, 5.0.0 is quarantined, the history has one rolled_back entry for that deploy, and the
    incident report says the watch triggered it and names the alert."""
    site = watch.site
    window = watch.deploy_watched('5.0.0', 600)
    watch.rulebook_ready()
    assert watch.rolled_back(window['run_id']) == []

    def traffic_until_rolled_back():
        for dummy in range(5):
            try:
                urllib.request.urlopen('http://127.0.0.1:%d/' % APP_PORT, timeout=2).close()
            except OSError:
                pass  # 5.0.0 answers 500 to four requests in five: that is the point
        return watch.rolled_back(window['run_id'])

    assert wait_for(traffic_until_rolled_back, ROLLED_BACK_WITHIN, step=0.5), \
        'not rolled back; decisions %r; see %s' % (watch.decisions(), watch.rulebook_log)
    assert wait_for(watch.watch_incidents, 60, step=0.5)
    assert site.current() == 'releases/1.0.0' and serves(site) == (200, '1.0.0')
    assert site.ledger()['releases']['5.0.0']['state'] == 'failed', site.ledger()['releases']['5.0.0']
    assert len(watch.rolled_back(window['run_id'])) == 1
    incidents = watch.watch_incidents()
    assert len(incidents) == 1, incidents
    incident = incidents[0]
    assert incident['outcome'] == 'rolled_back' and incident['trigger'] == 'watch', incident
    assert incident['watch']['alert'].startswith(ALERT) and incident['watch']['run_id'] == window['run_id']
    assert incident['watch']['labels']['service'] == 'demo-app', incident['watch']
    assert incident['hosts']['localhost']['status'] == 'ok' and incident['hosts']['localhost']['verified'] is True
    with open(os.path.join(site.incidents, incident['incident_id'] + '.md')) as handle:
        markdown = handle.read()
    assert 'ROLLED BACK by the watch' in markdown and 'Alert: `%s' % ALERT in markdown, markdown
    assert watch.claims() == ['demo-app.%s.claim' % window['run_id']]
    rollbacks = [d for d in watch.decisions() if d['decision'] == 'rollback']
    assert len(rollbacks) == 1 and rollbacks[0]['incident_id'] == incident['incident_id'], watch.decisions()
    # the deploy's own channel heard it too
    assert wait_for(lambda: [e for e in watch.receiver.events if e.get('event') == 'watch_rolled_back'], 30)


def test_an_alert_storm_rolls_the_deploy_back_once(watch):
    """Given 2.0.0 deployed with a watch window, when 100 notifications reach the rulebook within a second, then
    the deploy is rolled back exactly once (one rolled_back history entry, one claim, one incident of the watch)
    and a later, different alert for the same deploy does nothing."""
    site = watch.site
    incidents_before = len(watch.watch_incidents())
    window = watch.deploy_watched('2.0.0', 600)
    body = notification('demo-app', 'storm')
    answers = []

    def post():
        answers.append(watch.post(body)[0])

    started = time.monotonic()
    threads = [threading.Thread(target=post) for dummy in range(100)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    print('100 notifications posted in %.2f s' % (time.monotonic() - started))
    assert answers == [200] * 100, answers
    assert wait_for(lambda: watch.rolled_back(window['run_id']), ROLLED_BACK_WITHIN, step=0.5), watch.decisions()
    assert wait_for(lambda: len(watch.watch_incidents()) > incidents_before, 60, step=0.5)
    # a different alert group for the same deploy, after the storm: the claim stands, nothing more is done
    assert watch.post(notification('demo-app', 'storm-other'))[0] == 200

    def duplicates():
        return [d for d in watch.decisions() if d['decision'] == 'duplicate' and d['run_id'] == window['run_id']]

    assert wait_for(duplicates, 120, step=0.5), watch.decisions()
    time.sleep(1.0)
    assert len(watch.rolled_back(window['run_id'])) == 1, watch.history()
    assert len(watch.watch_incidents()) == incidents_before + 1
    assert [d['decision'] for d in watch.decisions() if d.get('run_id') == window['run_id']].count('rollback') == 1
    assert 'demo-app.%s.claim' % window['run_id'] in watch.claims()
    assert site.current() == 'releases/1.0.0' and serves(site) == (200, '1.0.0')


def test_a_malformed_body_and_an_unknown_service_are_refused_and_change_nothing(watch):
    """Given the host on 1.0.0, when the rulebook gets a body that is not JSON, a JSON body that is not
    Alertmanager's and an alert for a service no window was opened for, then each is refused with a message that
    says why, and the host, its journal and its history are unchanged."""
    site = watch.site
    digest, history, journal = site.digest(), watch.history(), site.journal()
    refused_before = len([d for d in watch.decisions() if d['decision'] == 'refused'])
    status, text = watch.post(b'{not json', raw=True)
    assert status == 400 and 'Invalid JSON payload' in text, (status, text)
    assert watch.post({'hello': 'world'})[0] == 200
    assert watch.post(notification('no-such-service', 'unknown'))[0] == 200

    def refused():
        found = [d for d in watch.decisions() if d['decision'] == 'refused']
        return found[refused_before:] if len(found) >= refused_before + 2 else None

    found = wait_for(refused, 180, step=0.5)
    assert found, watch.decisions()
    messages = sorted(d['message'] for d in found)
    assert any('not an Alertmanager notification: it has no "alerts" list' in m for m in messages), messages
    assert any("no deploy of service 'no-such-service' is watched here" in m for m in messages), messages
    assert all('nothing was rolled back' in m for m in messages), messages
    assert site.digest() == digest and watch.history() == history and site.journal() == journal
    assert serves(site) == (200, '1.0.0')
    with open(watch.rulebook_log, encoding='utf-8', errors='replace') as handle:
        assert 'REFUSED: the webhook body is not an Alertmanager notification' in handle.read()
