# -*- coding: utf-8 -*-
# Copyright: Contributors to failsafe.deploy
# SPDX-License-Identifier: GPL-3.0-or-later
"""A host that reverts itself is heard at once: the commit-confirmed watchdog alerts by itself.

Real ansible-playbook runs of failsafe.deploy.deploy against the demo site (examples/demo in a private directory, a
real supervisord, the real example app, the auto_rollback callback with its webhook set to a real HTTP receiver);
the host's revert watchdog is the real one.

- while the revert timer is armed the host keeps the deploy's webhook in an owner-only file, and the commit removes
  it: no file of the host holds the webhook URL afterwards;
- with the controller SIGKILLed after the activation, the host reverts by itself and its own alert (event
  self_reverted, with an incident id) reaches the receiver within a minute of the kill, no controller alive; the
  webhook file is gone; the next run reports the revert under that same incident and posts nothing.
"""
import json
import os
import signal
import stat
import time

import pytest

from test_local_commit_confirmed import output, revert_ended, serves, start_deploy, wait_for

pytestmark = pytest.mark.slow

HOOK = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'fault_hooks', 'fault.yml')
# Seconds from the activation to the host's own revert (the run is held at the verify step meanwhile): room for the
# run to reach its verify step on a loaded machine; the kill comes after the activation, so the revert's alert is
# still due well within HEARD_WITHIN of it.
SECONDS = 25
# From the controller's SIGKILL to the alert at the receiver: the bound.
HEARD_WITHIN = 60.0


def hold_at_verify(d, marker, seconds):
    return {'failsafe_verify_before_tasks': HOOK, 'failsafe_fault_host': 'localhost', 'failsafe_fault_kind': 'hold',
            'failsafe_fault_step': 'verify', 'failsafe_fault_marker': marker, 'failsafe_fault_hold_seconds': seconds}


def alert_files(d):
    folder = os.path.join(d.state_dir, 'demo-app', 'confirm')
    return sorted(os.path.join(folder, n) for n in os.listdir(folder) if n.endswith('.alert')) \
        if os.path.isdir(folder) else []


def files_holding(secret, *roots):
    """Every file under roots whose bytes hold secret."""
    found = []
    for root in roots:
        for folder, dirs, names in os.walk(root):
            for name in names:
                path = os.path.join(folder, name)
                if os.path.islink(path) or not os.path.isfile(path):
                    continue
                with open(path, 'rb') as handle:
                    if secret.encode() in handle.read():
                        found.append(path)
    return found


def test_the_webhook_stays_on_the_host_only_while_the_revert_timer_is_armed(module_deploy):
    """Given a deploy held at its verify step, while its revert timer is armed the host keeps the run's webhook in
    an owner-only file named in the journal's confirm record; once the deploy commits the file is gone and no file
    of the host holds the webhook URL."""
    d = module_deploy
    marker = os.path.join(d.dir, 'armed-held')
    proc = start_deploy(d, '1.0.0', hold_at_verify(d, marker, 4))
    assert wait_for(lambda: os.path.exists(marker) and os.path.getsize(marker) > 0, 180, proc), \
        'the verify step was not held'
    armed = d.journal()
    assert armed['confirm']['state'] == 'armed' and armed['confirm']['alert'] == ['webhook'], armed['confirm']
    files = alert_files(d)
    assert [os.path.basename(f) for f in files] == ['%s.alert' % armed['txid']], files
    assert stat.S_IMODE(os.stat(files[0]).st_mode) == 0o600
    with open(files[0]) as handle:
        settings = json.load(handle)
    assert settings['webhook_url'] == d.receiver.url and settings['host'] == 'localhost', settings
    assert proc.wait(timeout=300) == 0, output(proc)[-5000:]
    j = d.journal()
    assert j['status'] == 'committed' and j['confirm']['state'] == 'confirmed', j.get('confirm')
    assert alert_files(d) == []
    assert files_holding(d.receiver.url, d.state_dir, d.app_root) == []
    assert d.receiver.kinds() == []


def _delivered(path):
    """The revert's facts at ``path`` once they say the host's alert was delivered, else None."""
    with open(path, encoding='utf-8') as handle:
        facts = json.load(handle)
    return facts if (facts.get('alert') or {}).get('status') == 'delivered' else None


def test_a_host_that_reverts_itself_alerts_within_a_minute_and_the_next_run_does_not_page_again(module_deploy):
    """Given release 1.0.0 verified and a deploy of 2.0.0 whose controller is SIGKILLed while it is held at its
    verify step, when the commit-confirmed deadline passes, then the host rolls back to 1.0.0 by itself and its own
    alert (self_reverted, an incident id, the host, the releases, restore proven) reaches the webhook within a minute
    of the kill; no file of the host holds the webhook URL afterwards; the next run reports the revert under the same
    incident id, says the host alerted it, and posts nothing to the webhook."""
    d = module_deploy
    first = d.deploy('1.0.0')
    assert first.returncode == 0, first.stdout[-5000:]
    before = len(d.receiver.events)
    marker = os.path.join(d.dir, 'verify-held')
    proc = start_deploy(d, '2.0.0', dict(hold_at_verify(d, marker, 180), failsafe_confirm_timeout=SECONDS))
    try:
        assert wait_for(lambda: os.path.exists(marker) and os.path.getsize(marker) > 0, 180, proc), \
            'the verify step was not held'
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        killed = time.monotonic()
        proc.wait(timeout=60)
    armed = d.journal()
    assert armed['release'] == '2.0.0' and armed['confirm']['state'] in ('armed', 'reverting', 'reverted'), \
        armed.get('confirm')

    def heard():
        return [e for e in d.receiver.events[before:] if e.get('event') == 'self_reverted']

    alerts = wait_for(heard, HEARD_WITHIN + 60, step=0.2)
    took = time.monotonic() - killed
    print('the host\'s own revert alert reached the webhook %.1f s after the controller was killed' % took)
    assert alerts, 'no self_reverted alert reached the webhook; received %r' % d.receiver.kinds()[before:]
    assert took <= HEARD_WITHIN, 'the alert came %.1f s after the kill' % took
    assert len(alerts) == 1, alerts
    alert = alerts[0]
    assert alert['source'] == 'failsafe.deploy.watchdog' and alert['host'] == 'localhost', alert
    assert alert['txid'] == armed['txid'] and alert['run_id'] == armed['run_id'], alert
    assert alert['releases'] == ['2.0.0'] and alert['previous_releases'] == ['1.0.0'], alert
    assert alert['outcome'] == 'rolled_back' and alert['verified'] is True, alert
    assert alert['incident_id'].startswith('inc-'), alert
    assert d.receiver.url not in json.dumps(alert)
    # what the alert says is what the host shows
    assert wait_for(lambda: revert_ended(d), 30, step=0.2)
    assert d.current() == 'releases/1.0.0' and serves(d) == (200, '1.0.0')
    facts = wait_for(lambda: _delivered(os.path.join(d.state_dir, 'demo-app', 'self_revert.json')), 30, step=0.2)
    assert facts['alert']['incident_id'] == alert['incident_id'] and facts['alert']['attempts'] == 1, facts['alert']
    assert alert_files(d) == []
    assert files_holding(d.receiver.url, d.state_dir, d.app_root) == []

    # The next run finds the revert: it reports it under the same incident and pages no one again.
    reports = set(d.incident_reports())
    posted = len(d.receiver.events)
    nxt = d.deploy('1.0.0')
    assert nxt.returncode == 0, nxt.stdout[-5000:]
    assert 'the host alerted it itself as incident %s' % alert['incident_id'] in nxt.stdout, nxt.stdout[-5000:]
    new = sorted(set(d.incident_reports()) - reports)
    assert [os.path.basename(p) for p in new] == ['%s.json' % alert['incident_id']], new
    with open(new[0]) as handle:
        incident = json.load(handle)
    assert incident['outcome'] == 'self_reverted', incident['outcome']
    assert incident['self_reverted']['localhost']['alert']['incident_id'] == alert['incident_id']
    with open(new[0][:-len('.json')] + '.md') as handle:
        assert 'incident %s, delivered (webhook)' % alert['incident_id'] in handle.read()
    time.sleep(1.0)  # the webhook sends from a thread of its own: nothing may come late either
    assert d.receiver.events[posted:] == [], d.receiver.kinds()[posted:]


def test_a_revert_whose_own_alert_reached_nobody_is_alerted_by_the_next_run(module_deploy):
    """Given a deploy of 2.0.0 whose controller is SIGKILLed after the activation and a webhook that refuses the
    host's alert (HTTP 500 on each of its attempts), when the next run finds the revert, then it says the host's
    alert was not delivered and alerts the revert itself, once, naming the host, under an incident of its own."""
    d = module_deploy
    first = d.deploy('1.0.0')
    assert first.returncode == 0, first.stdout[-5000:]
    marker = os.path.join(d.dir, 'verify-held-2')
    with d.receiver.lock:
        d.receiver.statuses = [500] * 3
    before = len(d.receiver.events)
    proc = start_deploy(d, '2.0.0', dict(hold_at_verify(d, marker, 180), failsafe_confirm_timeout=SECONDS))
    try:
        assert wait_for(lambda: os.path.exists(marker) and os.path.getsize(marker) > 0, 180, proc), \
            'the verify step was not held'
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    path = os.path.join(d.state_dir, 'demo-app', 'self_revert.json')

    def undelivered():
        try:
            with open(path) as handle:
                facts = json.load(handle)
        except (OSError, ValueError):
            return None
        alert = facts.get('alert') or {}
        return facts if alert.get('status') == 'failed' and facts.get('release') == '2.0.0' else None

    facts = wait_for(undelivered, HEARD_WITHIN + 60, step=0.2)
    assert facts, 'the host did not record its undelivered alert'
    assert facts['alert']['attempts'] == 3 and 'HTTP 500' in facts['alert']['error'], facts['alert']
    assert [e['event'] for e in d.receiver.events[before:]] == ['self_reverted'] * 3
    assert d.current() == 'releases/1.0.0' and serves(d) == (200, '1.0.0')
    assert alert_files(d) == []

    posted = len(d.receiver.events)
    nxt = d.deploy('1.0.0')
    assert nxt.returncode == 0, nxt.stdout[-5000:]
    assert 'the host\'s own alert (incident %s) was NOT delivered' % facts['alert']['incident_id'] in nxt.stdout
    time.sleep(1.0)
    sent = d.receiver.events[posted:]
    assert [e['event'] for e in sent] == ['self_reverted'], d.receiver.kinds()[posted:]
    assert sent[0]['source'] == 'failsafe.deploy.auto_rollback' and sent[0]['hosts'] == ['localhost'], sent[0]
    assert sent[0]['incident_id'] != facts['alert']['incident_id']
    with open(os.path.join(d.incidents, '%s.json' % sent[0]['incident_id'])) as handle:
        assert json.load(handle)['outcome'] == 'self_reverted'
