"""Given a deploy with a malformed input, then the preflight refuses it before anything changes, and says so.

Real ansible-playbook runs on the local demo site (a real supervisord, the real example app, a real HTTP receiver
for the alerts): a release id that reaches outside releases/ ('../../../tmp/evil'), on a host with a verified
release and on a first deploy. The host's state (the app root and the state directory, byte for byte), the app's
answers, the alerts received and the incident report are the oracle; the scripts/deploy_outcome.py verdict is read
from that report.
"""
import json
import os
import subprocess
import sys

import pytest

from support import ROOT, tree_digest

pytestmark = pytest.mark.slow

EVIL = '../../../tmp/evil'


def host_state(d):
    """Everything a refused deploy must leave as it was: the app root and the state directory (every file, mode,
    owner and link), the supervisor program file, and where the bad id points."""
    evil = os.path.normpath(os.path.join(d.app_root, 'releases', EVIL))
    return {'tree': tree_digest([d.app_root, d.state_dir, d.program_conf]), 'evil': os.path.lexists(evil)}


def outcome(d, rc):
    proc = subprocess.run([sys.executable, os.path.join(ROOT, 'scripts', 'deploy_outcome.py'), '--report-dir',
                           d.incidents, '--rc', str(rc)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          check=False)
    return proc.returncode, dict(line.split('=', 1) for line in proc.stdout.splitlines() if '=' in line)


def assert_refused(d, proc, reports_before, events_before):
    assert proc.returncode != 0, proc.stdout[-4000:]
    assert "Refusing to deploy: invalid release id \"%s\"" % EVIL in proc.stdout, proc.stdout[-4000:]
    assert 'Open the deploy transaction' not in proc.stdout, 'the refusal comes before the open phase'
    # no rollback ran, and no alert went out
    assert not any(n.endswith('.rollback.log') for n in os.listdir(d.incidents)), os.listdir(d.incidents)
    assert d.receiver.events[events_before:] == [], d.receiver.kinds()
    # one incident report, that says refused, with the input cause
    new = [r for r in d.incident_reports() if r not in reports_before]
    assert len(new) == 1, new
    with open(new[0]) as handle:
        incident = json.load(handle)
    assert incident['outcome'] == 'refused', incident['outcome']
    assert incident['summary']['outcome_label'] == 'REFUSED BEFORE ANY CHANGE'
    assert incident['summary']['causes'] == ['input'], incident['summary']
    assert [(f['cause'], f['evidence'], f['host']) for f in incident['failures']] == [
        ('input', 'invalid release id', 'localhost')]
    assert incident['rollback']['hosts'] == {} and incident['transactions'] == {}
    assert not any(a.get('event') in ('rolled_back', 'deploy_failed', 'rollback_failed')
                   for a in incident['alerts']), incident['alerts']
    code, out = outcome(d, proc.returncode)
    assert (code, out['outcome']) == (4, 'refused'), out
    return incident


def test_given_a_verified_release_when_the_release_id_climbs_out_of_releases_then_nothing_changes(module_deploy):
    d = module_deploy
    proc = d.deploy('1.0.0')
    assert proc.returncode == 0, proc.stdout[-4000:]
    before = host_state(d)
    journal = d.journal()
    history = os.path.join(d.state_dir, 'demo-app', 'history.jsonl')
    with open(history) as handle:
        history_before = handle.read()
    reports, events = d.incident_reports(), len(d.receiver.events)
    # the archive exists: only the id is wrong
    archive = os.path.join(d.dir, 'dist', 'app-2.0.0.tar.gz')
    proc = d.deploy(EVIL, '-e', 'failsafe_release_archive=%s' % archive)
    assert_refused(d, proc, reports, events)
    # nothing changed on the host: no journal entry, no history line, no lock, no snapshot, no quarantine
    assert host_state(d) == before
    assert d.journal() == journal and journal['status'] == 'committed'
    with open(history) as handle:
        assert handle.read() == history_before
    assert not os.path.exists(d.lock_path())
    assert d.current() == 'releases/1.0.0'
    assert d.ledger()['releases']['1.0.0']['state'] == 'verified' and EVIL not in d.ledger()['releases']
    assert d.http('/version') == (200, '1.0.0')


def test_given_a_first_deploy_when_the_release_id_climbs_out_of_releases_then_nothing_is_created(local_deploy):
    d = local_deploy
    before = host_state(d)
    assert os.listdir(d.state_dir) == [] and not os.path.exists(d.app_root), 'the demo site starts empty'
    proc = d.deploy(EVIL)
    assert_refused(d, proc, [], 0)
    assert host_state(d) == before
    assert os.listdir(d.state_dir) == [], 'no journal, lock or snapshot store'
    assert not os.path.exists(d.app_root), 'no releases/, no current, no ledger'
