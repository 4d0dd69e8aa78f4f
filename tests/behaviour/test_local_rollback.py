"""Given a host on a verified release, when a deploy fails, then the callback rolls it back to exactly what was.

Real ansible-playbook runs against this machine (the examples/demo setup under a private directory), a real
supervisord, the real example app and a real HTTP receiver for the webhook alerts.
"""
import json
import os
import shutil

import pytest

pytestmark = pytest.mark.slow


def deploy_ok(d, version):
    proc = d.deploy(version)
    assert proc.returncode == 0, proc.stdout[-6000:]
    return proc


@pytest.fixture(scope='module')
def after_switch_failure(module_deploy):
    d = module_deploy
    deploy_ok(d, '1.0.0')
    d.first_digest = d.digest()
    deploy_ok(d, '2.0.0')
    before = d.digest()
    failed = d.deploy('3.0.0')
    return d, before, failed


def changes(old, new):
    """What differs between two digests, as (kind, path) pairs: added, removed, content, mode, owner, group, target."""
    found = set()
    for path in set(old) | set(new):
        a, b = old.get(path, ('absent',)), new.get(path, ('absent',))
        if a == b:
            continue
        if a[0] == 'absent' or b[0] == 'absent':
            found.add(('added' if a[0] == 'absent' else 'removed', path))
            continue
        found.add(('target' if a[0] == 'link' else 'content', path) if a[1] != b[1] else ('meta', path))
        for kind, index in (('mode', -3), ('owner', -2), ('group', -1)):
            if a[index] != b[index]:
                found.add((kind, path))
    return found


def test_the_fixture_changes_every_kind_of_captured_state_from_one_release_to_the_next(after_switch_failure):
    # Without this, a rollback that skipped the snapshot restore could pass the test below: the rollback role
    # switches `current` back on its own.
    d, before = after_switch_failure[:2]
    found = changes(d.first_digest, before)
    kinds = set(kind for kind, dummy in found)
    owned = ('owner', 'group') if os.geteuid() == 0 else ()   # the demo changes ownership only as root
    assert set(('added', 'removed', 'content', 'mode', 'target') + owned) <= kinds, sorted(found)
    shared = os.path.join(d.app_root, 'shared') + os.sep
    assert ('content', os.path.join(shared, 'config', 'app.json')) in found
    assert ('content', d.program_conf) in found
    assert ('target', os.path.join(d.app_root, 'current')) in found
    assert ('content', os.path.join(d.app_root, 'current', 'release.json')) in found
    for kind in ('added', 'removed', 'mode') + owned:
        assert any(k == kind and p.startswith(shared) for k, p in found), (kind, sorted(found))


def test_when_health_fails_after_switch_then_deploy_fails_and_every_captured_path_is_restored(after_switch_failure):
    d, before, failed = after_switch_failure
    assert failed.returncode != 0
    after = d.digest()
    assert after == before
    # the comparison covers the release pointer, shared config and the supervisor program file
    assert after[os.path.join(d.app_root, 'current')][1] == 'releases/2.0.0'
    assert any(p.endswith('app.json') for p in after)
    assert d.program_conf in after and after[d.program_conf][0] == 'file'


def test_then_current_is_the_last_verified_release_and_the_bad_one_is_quarantined(after_switch_failure):
    d = after_switch_failure[0]
    assert d.current() == 'releases/2.0.0'
    ledger = d.ledger()
    assert ledger['last_verified'] == '2.0.0'
    assert ledger['releases']['3.0.0']['state'] == 'failed'
    assert ledger['releases']['2.0.0']['state'] == 'verified'


def test_then_the_lock_is_released_and_the_journal_closed(after_switch_failure):
    d = after_switch_failure[0]
    assert not os.path.exists(d.lock_path())
    journal = d.journal()
    assert journal['release'] == '3.0.0'
    assert journal['status'] == 'rolled_back'


def test_then_the_app_answers_the_previous_version_and_is_healthy(after_switch_failure):
    d = after_switch_failure[0]
    assert d.http('/version') == (200, '2.0.0')
    status, body = d.http('/health')
    assert status == 200 and json.loads(body)['status'] == 'ok'


def test_then_the_receiver_got_deploy_failed_then_rolled_back(after_switch_failure):
    d = after_switch_failure[0]
    assert d.receiver.kinds() == ['deploy_failed', 'rolled_back']
    assert [e['event'] for e in d.spool_events()] == ['deploy_failed', 'rolled_back']


def test_then_the_incident_report_names_task_host_and_cause(after_switch_failure):
    d = after_switch_failure[0]
    reports = d.incident_reports()
    assert len(reports) == 1
    with open(reports[0]) as f:
        incident = json.load(f)
    assert incident['outcome'] == 'rolled_back'
    failure = incident['failures'][0]
    assert failure['host'] == 'localhost'
    assert failure['task'].endswith('Check the health of the new release')
    assert failure['cause'] == 'health'
    with open(reports[0][:-len('.json')] + '.md') as f:
        markdown = f.read()
    assert 'Check the health of the new release' in markdown and 'localhost' in markdown


def test_when_the_quarantined_release_is_deployed_again_then_it_is_refused_and_nothing_changes(after_switch_failure):
    d = after_switch_failure[0]
    before = d.digest()
    reports = d.change_reports()
    proc = d.deploy('3.0.0')
    assert proc.returncode != 0
    assert 'quarantined' in proc.stdout
    assert d.digest() == before
    assert d.change_reports() == reports and d.report_outcomes()[-1] == 'refused'
    assert d.journal()['status'] == 'rolled_back'
    assert not os.path.exists(d.lock_path())


def _corrupt_release(d, version):
    with open(os.path.join(d.dir, 'dist', 'app-%s.tar.gz' % version), 'wb') as f:
        f.write(b'this is not a tar archive\n' * 10)


def _crash_release(d, version):
    shutil.copy(os.path.join(d.dir, 'dist', 'app-4.0.0.tar.gz'), os.path.join(d.dir, 'dist', 'app-%s.tar.gz' % version))


@pytest.mark.parametrize('make_bad, step, quarantined', [
    (_corrupt_release, 'before-switch-stage', False),
    (_crash_release, 'after-switch-crash-on-start', True),
], ids=['failure-before-switch', 'failure-after-switch-crash-on-start'])
def test_given_verified_release_when_a_step_fails_then_it_is_rolled_back(local_deploy, make_bad, step, quarantined):
    d = local_deploy
    deploy_ok(d, '1.0.0')
    before = d.digest()
    make_bad(d, '9.0.0')
    proc = d.deploy('9.0.0')
    assert proc.returncode != 0
    assert d.digest() == before
    assert d.current() == 'releases/1.0.0'
    assert d.journal()['status'] == 'rolled_back'
    # Quarantined only when it was activated: a release that never staged was not shown bad.
    assert (d.ledger()['releases'].get('9.0.0', {}).get('state') == 'failed') is quarantined
    assert not os.path.exists(d.lock_path())
    assert d.http('/version') == (200, '1.0.0')
    assert d.receiver.kinds() == ['deploy_failed', 'rolled_back']


def test_when_a_play_without_a_transaction_fails_then_nothing_is_rolled_back(local_deploy):
    d = local_deploy
    here = os.path.dirname(os.path.abspath(__file__))
    proc = d.playbook(os.path.join(here, 'playbooks', 'fail_without_transaction.yml'))
    assert proc.returncode != 0
    assert 'Fail without a transaction' in proc.stdout
    assert d.receiver.events == []
    assert d.incident_reports() == []
    assert d.spool_events() == []
    assert not os.path.exists(os.path.join(d.state_dir, 'demo-app', 'journal.json'))
