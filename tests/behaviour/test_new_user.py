"""What a new user hits first, on the local demo setup (real ansible-playbook runs, a real supervisord, the real
example app): a mistyped archive path changes nothing and names the right option; an archive wrapped in a top
directory is refused at staging with what is expected; a failed health check is reported by its real reason; a
committed deploy says how to roll it back, and so does a rollback by hand that finds nothing open; check mode
never reports health it did not check; a service that cannot start is reported with its log; a first deploy
that fails leaves nothing serving."""
import json
import os
import shutil
import subprocess
import tarfile

import pytest

from support import VENV_BIN, free_port

pytestmark = pytest.mark.slow


def _state(d):
    """Everything a refused deploy must leave as it was: captured paths, ledger, journal, lock, alerts, and every
    incident report but those that record a refusal (a refused deploy is written up as REFUSED BEFORE ANY CHANGE)."""
    return {
        'digest': d.digest(),
        'ledger': d.ledger(),
        'journal': d.journal(),
        'lock': os.path.exists(d.lock_path()),
        'reports': [path for path in d.incident_reports() if _outcome(path) != 'refused'],
        'alerts': list(d.receiver.events),
    }


def _outcome(report):
    with open(report) as handle:
        return json.load(handle).get('outcome')


@pytest.fixture(scope='module')
def on_1_0_0(module_deploy):
    """One demo site for the whole module, on 1.0.0; the tests run in order on it."""
    proc = module_deploy.deploy('1.0.0')
    assert proc.returncode == 0, proc.stdout[-4000:]
    return module_deploy


def test_given_a_mistyped_archive_path_when_deploying_then_preflight_refuses_it_naming_the_options_and_nothing_changes(
        on_1_0_0):
    d = on_1_0_0
    before = _state(d)
    proc = d.deploy('2.0.0', '-e', 'failsafe_release_archive=%s/dist/app-2.0.0.tgz' % d.dir)
    assert proc.returncode != 0
    assert 'failsafe_release_archive %s/dist/app-2.0.0.tgz is not a file on the controller' % d.dir in proc.stdout
    assert 'failsafe_release_archive_remote=true' in proc.stdout
    assert 'remote_src' not in proc.stdout
    assert _state(d) == before
    # written up as a refusal, not as a rollback
    assert [_outcome(path) for path in d.incident_reports()][-1:] == ['refused']
    # Not quarantined: the corrected run deploys without failsafe_force.
    proc = d.deploy('2.0.0')
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert d.http('/version') == (200, '2.0.0')


def test_given_an_empty_archive_setting_when_deploying_then_preflight_says_it_is_not_set(on_1_0_0):
    d = on_1_0_0
    before = _state(d)
    proc = d.deploy('2.0.0', '-e', 'failsafe_release_archive=')
    assert proc.returncode != 0
    assert 'failsafe_release_archive is not set' in proc.stdout
    assert _state(d) == before


def test_given_check_mode_then_the_new_releases_health_checks_are_shown_as_not_run_never_as_passed(on_1_0_0):
    d = on_1_0_0
    before = _state(d)
    # 3.0.0 fails its health check for real; in check mode a probe could only reach 2.0.0, which is still running.
    proc = d.deploy('3.0.0', '--check', '--diff')
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert "Check mode: the new release's 1 health check(s) were not run (health)" in proc.stdout
    section = proc.stdout.split('Check the health of the new release]', 1)[1].split('TASK [', 1)[0]
    assert 'skipping' in section and 'ok:' not in section, section
    # The journal diff of the open phase shows the transaction that would be open, with its release.
    section = proc.stdout.split('Open the deploy transaction]', 1)[1].split('TASK [', 1)[0]
    assert '"release": "3.0.0"' in section and '"status": "open"' in section, section
    assert _state(d) == before


def test_given_an_archive_wrapped_in_a_top_directory_when_deploying_then_staging_refuses_it_saying_what_is_expected(
        on_1_0_0):
    d = on_1_0_0
    before = d.digest()
    good = os.path.join(d.dir, 'dist', 'app-2.0.0.tar.gz')
    wrapped = os.path.join(d.dir, 'dist', 'app-6.0.0.tar.gz')
    with tarfile.open(good) as src, tarfile.open(wrapped, 'w:gz') as dst:
        for member in src.getmembers():
            data = src.extractfile(member) if member.isreg() else None
            member.name = 'app-6.0.0/' + member.name.lstrip('./')
            dst.addfile(member, data)
    proc = d.deploy('6.0.0')
    assert proc.returncode != 0
    assert "holds everything under one top directory 'app-6.0.0/'" in proc.stdout
    assert not os.path.exists(os.path.join(d.app_root, 'releases', '6.0.0'))
    assert d.digest() == before
    assert d.http('/version') == (200, '2.0.0')


def test_given_a_release_failing_its_health_check_then_report_and_alerts_give_the_real_reason(on_1_0_0):
    d = on_1_0_0
    reports, seen = d.incident_reports(), len(d.receiver.events)
    assert d.deploy('3.0.0').returncode != 0
    reports = [r for r in d.incident_reports() if r not in reports]
    assert len(reports) == 1
    with open(reports[0][:-len('.json')] + '.md') as f:
        markdown = f.read()
    failed = [e for e in d.receiver.events[seen:] if e.get('event') == 'deploy_failed']
    assert failed
    for text in (markdown, json.dumps(failed)):
        assert 'status 503 not in status_code [200]' in text
        assert 'One or more items failed' not in text
        # the check by name, what it expected and what came back (status and a body excerpt)
        assert "check 'health' failed" in text and 'got status 503' in text and 'body' in text


def test_given_a_release_that_crashes_on_start_then_the_failure_points_at_the_service_log_and_its_last_lines(on_1_0_0):
    d = on_1_0_0
    proc = d.deploy('4.0.0')
    assert proc.returncode != 0
    assert 'demo-app did not start under supervisor' in proc.stdout
    assert 'Its log is %s/demo-app.log' % os.path.join(d.dir, 'logs') in proc.stdout
    assert 'required setting \\"database_url\\" is missing' in proc.stdout  # the app's own words, from its log
    assert d.http('/version') == (200, '2.0.0')


def test_given_a_committed_deploy_then_it_prints_its_run_id_and_a_rollback_by_hand_says_how_to_undo_it(on_1_0_0):
    d = on_1_0_0
    assert d.current() == 'releases/2.0.0'
    proc = d.deploy('1.0.0')
    assert proc.returncode == 0, proc.stdout[-4000:]
    run_id = d.journal()['run_id']
    assert d.journal()['status'] == 'committed'
    assert '-e failsafe_rollback_run_id=%s' % run_id in proc.stdout
    proc = d.playbook('failsafe.deploy.rollback')
    assert proc.returncode == 0
    assert 'nothing to roll back' in proc.stdout
    assert 'run failsafe.deploy.rollback again with -e failsafe_rollback_run_id=%s' % run_id in proc.stdout
    assert d.current() == 'releases/1.0.0'
    proc = d.playbook('failsafe.deploy.rollback', '-e', 'failsafe_rollback_run_id=%s' % run_id)
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert d.current() == 'releases/2.0.0'
    assert d.http('/version') == (200, '2.0.0')


def test_given_no_release_yet_when_the_first_deploy_fails_then_nothing_serves_it_after_the_rollback(local_deploy):
    d = local_deploy
    proc = d.deploy('3.0.0')
    assert proc.returncode != 0
    assert not os.path.lexists(os.path.join(d.app_root, 'current'))
    assert not os.path.exists(d.program_conf)
    with pytest.raises(OSError):  # refused: no process listens on the app's port any more
        d.http('/version', timeout=2)
    status = subprocess.run([os.path.join(VENV_BIN, 'supervisorctl'), '-c', os.path.join(d.dir, 'supervisor',
                                                                                         'supervisord.conf'),
                             'status', 'demo-app'], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            check=False)
    assert 'RUNNING' not in status.stdout and 'STARTING' not in status.stdout, status.stdout
    assert d.journal()['status'] == 'rolled_back'
    with open(d.incident_reports()[-1]) as f:
        assert json.load(f)['outcome'] == 'rolled_back'


def test_given_a_deploy_failing_before_activation_then_it_is_rolled_back_not_quarantined_and_the_rerun_needs_no_force(
        on_1_0_0):
    d = on_1_0_0
    assert d.current() == 'releases/2.0.0'
    before = d.digest()
    shutil.copy(os.path.join(d.dir, 'dist', 'app-2.0.0.tar.gz'), os.path.join(d.dir, 'dist', 'app-5.0.0.tar.gz'))
    hook = os.path.join(d.dir, 'fail-before-activate.yml')
    with open(hook, 'w') as f:
        f.write('- name: Fail before the switch\n  ansible.builtin.fail:\n    msg: a mistake in a hook\n')
    proc = d.deploy('5.0.0', '-e', 'failsafe_activate_before_tasks=%s' % hook)
    assert proc.returncode != 0
    assert d.journal()['status'] == 'rolled_back' and d.journal()['release'] == '5.0.0'
    assert d.digest() == before
    assert d.current() == 'releases/2.0.0'
    # never activated, so never shown bad: what the deploy staged is taken away again, and nothing quarantines it
    assert '5.0.0' not in d.ledger()['releases']
    assert not os.path.exists(os.path.join(d.app_root, 'releases', '5.0.0'))
    assert d.http('/version') == (200, '2.0.0')
    # The release was never shown bad: the corrected run deploys it without failsafe_force.
    proc = d.deploy('5.0.0')
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert d.current() == 'releases/5.0.0'
    assert d.ledger()['releases']['5.0.0']['state'] == 'verified'


def test_given_a_check_that_fails_on_the_running_verified_release_when_deploying_then_it_is_refused_naming_the_check(
        on_1_0_0):
    d = on_1_0_0
    assert d.current() == 'releases/5.0.0' and d.ledger()['releases']['5.0.0']['state'] == 'verified'
    before = _state(d)
    wrong = {'failsafe_verify_checks': [{'name': 'health-on-a-wrong-port', 'timeout': 2,
                                         'url': 'http://127.0.0.1:%d/health' % free_port()}]}
    proc = d.deploy('2.0.0', '-e', json.dumps(wrong))
    assert proc.returncode != 0
    assert "failsafe_verify_checks 'health-on-a-wrong-port'" in proc.stdout
    assert 'fail(s) on release 5.0.0, which is running and verified' in proc.stdout
    # refused inside the open phase, before the transaction opened: no later step ran
    assert 'TASK [failsafe.deploy.release' not in proc.stdout
    # Nothing changed: same files, ledger (2.0.0 not quarantined), journal, no lock, no incident, no alert.
    assert _state(d) == before
    assert d.http('/version') == (200, '2.0.0')  # 5.0.0 is a copy of 2.0.0's archive


CONFIG_ONLY = """---
- name: Change a configuration file, fail safe (no release)
  hosts: localhost
  connection: local
  gather_facts: false
  vars:
    failsafe_release_id: config-2
    failsafe_preflight_snapshot: true
    failsafe_snapshot_paths: ["{conf_dir}"]
  roles:
    - failsafe.deploy.preflight
  tasks:
    - name: Write the new configuration
      ansible.builtin.copy:
        content: "level = debug\\n"
        dest: "{conf_dir}/app.ini"
        mode: '0644'

    - name: A later step fails
      ansible.builtin.fail:
        msg: the new configuration broke something
"""


def test_given_a_transaction_without_a_release_when_it_fails_then_only_what_it_applied_is_undone(local_deploy):
    """Item 5: a playbook that only snapshots and changes a configuration file (no release) and fails. The rollback
    restores the file and undoes no layer that was never applied: no ledger is written anywhere, no release is
    switched or quarantined, the service is not restarted."""
    d = local_deploy
    base = d.deploy('1.0.0')
    assert base.returncode == 0, base.stdout[-4000:]
    conf_dir = os.path.join(d.dir, 'etc-myapp')
    os.makedirs(conf_dir)
    with open(os.path.join(conf_dir, 'app.ini'), 'w') as handle:
        handle.write('level = info\n')
    app_root = os.path.join(d.dir, 'no-app-here')  # the play never names an application root of its own
    playbook = os.path.join(d.dir, 'playbooks', 'config-only.yml')
    os.makedirs(os.path.dirname(playbook))
    with open(playbook, 'w') as handle:
        handle.write(CONFIG_ONLY.format(conf_dir=conf_dir))
    ledger_before = d.ledger()
    pid_before = subprocess.run([os.path.join(VENV_BIN, 'supervisorctl'), '-c',
                                 os.path.join(d.dir, 'supervisor', 'supervisord.conf'), 'pid', 'demo-app'],
                                capture_output=True, text=True, check=False).stdout.strip()
    proc = d.playbook(playbook, '-e', 'failsafe_app_root=%s' % app_root)
    assert proc.returncode != 0
    with open(os.path.join(conf_dir, 'app.ini')) as handle:
        assert handle.read() == 'level = info\n'
    with open(d.incident_reports()[-1]) as handle:
        assert json.load(handle)['outcome'] == 'rolled_back'
    assert d.journal()['status'] == 'rolled_back'
    assert [layer['kind'] for layer in d.journal()['layers']] == ['files']
    # nothing was written for a release layer that never existed: no ledger beside the playbook, in the working
    # directory or under the application root; the app's own ledger and process are untouched
    for where in (os.path.dirname(playbook), d.dir, app_root):
        assert not os.path.exists(os.path.join(where, '.failsafe')), where
    assert not os.path.exists(app_root)
    assert d.ledger() == ledger_before
    pid_after = subprocess.run([os.path.join(VENV_BIN, 'supervisorctl'), '-c',
                                os.path.join(d.dir, 'supervisor', 'supervisord.conf'), 'pid', 'demo-app'],
                               capture_output=True, text=True, check=False).stdout.strip()
    assert pid_after == pid_before and pid_after.isdigit()


def test_given_a_check_that_fails_before_and_after_the_rollback_then_the_report_names_the_check_as_the_likely_cause(
        local_deploy):
    """Item 2: with the probe of the running release switched off, a check pointed at a wrong port fails the new
    release and then the restored one, identically: the rollback fails its verification, and the report and the
    alert say that the check itself is the likely cause (the hosts are back on the previous release)."""
    d = local_deploy
    base = d.deploy('1.0.0')
    assert base.returncode == 0, base.stdout[-4000:]
    wrong = {'failsafe_verify_checks': [{'name': 'health-on-a-wrong-port', 'timeout': 1, 'retries': 1, 'sleep': 0,
                                         'url': 'http://127.0.0.1:%d/health' % free_port()}],
             'failsafe_rollback_check_retries': 1, 'failsafe_preflight_check_running': False}
    proc = d.deploy('2.0.0', '-e', json.dumps(wrong))
    assert proc.returncode != 0
    with open(d.incident_reports()[-1]) as handle:
        incident = json.load(handle)
    assert incident['outcome'] == 'rollback_failed'
    likely = incident['summary']['likely_cause']
    assert likely and "'health-on-a-wrong-port'" in likely and 'failed the same way' in likely
    with open(d.incident_reports()[-1][:-len('.json')] + '.md') as handle:
        assert 'Likely cause' in handle.read()
    failed = [e for e in d.spool_events() if e.get('event') == 'rollback_failed']
    assert failed and "'health-on-a-wrong-port'" in (failed[-1].get('likely_cause') or '')
    # the hosts are in fact back on the previous release and healthy on its real port
    assert d.current() == 'releases/1.0.0'
    assert d.http('/version') == (200, '1.0.0')
