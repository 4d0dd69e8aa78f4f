"""Given real incidents in production, when failsafe.deploy.reproduce re-runs the failed release on staging, then a
deterministic failure (a release whose health check fails) reproduces - the same task, the same cause class - and a
failure caused by a host crash does not; each verdict is appended to the incident's own report (JSON and Markdown).

Real namespace fleet (tests/fleet) with a staging and a production group, real ansible-playbook runs with the example
app and the auto_rollback callback; the host crash is a real one (every process of the production host killed while
its deploy is held in the verify step, tests/behaviour/fault_hooks/fault.yml). Checked against the incident reports
the callback wrote and the staging host's ``current`` link.
"""
import glob
import json
import os
import subprocess
import sys
import time

import pytest

from support import ROOT, fleet_env, load_example_build

if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from tests.fleet.pytest_fleet import fleet  # noqa: E402,F401  pylint: disable=wrong-import-position,unused-import

pytestmark = pytest.mark.fleet

APP_VARS = os.path.join(ROOT, 'tests', 'fleet', 'app-vars.yml')
HOOK = os.path.join(ROOT, 'tests', 'behaviour', 'fault_hooks', 'fault.yml')
MARKER = '/srv/fault-marker'


def read_json(path):
    with open(path, encoding='utf-8') as handle:
        return json.load(handle)


def test_given_incidents_then_a_deterministic_failure_reproduces_and_a_host_crash_does_not(fleet, tmp_path):
    hosts = fleet(2)
    staging, production = hosts.names
    base = str(tmp_path)
    dist = os.path.join(base, 'dist')
    load_example_build().build(dist, 0, [('1.0.0', 'good'), ('2.0.0', 'good'), ('3.0.0', 'unhealthy')])
    groups = os.path.join(base, 'groups.ini')
    with open(groups, 'w', encoding='utf-8') as handle:
        handle.write('[staging]\n%s\n\n[production]\n%s\n' % (staging, production))
    reports = os.path.join(base, 'incidents')
    env = fleet_env(hosts, base, dist)
    env['ANSIBLE_CALLBACKS_ENABLED'] = 'failsafe.deploy.auto_rollback'
    env['FAILSAFE_REPORT_DIR'] = reports

    def argv(name, *args):
        return ['ansible-playbook', '-i', hosts.inventory_path, '-i', groups, name, '-e', '@' + APP_VARS] + list(args)

    def playbook(name, *args):
        proc = subprocess.run(argv(name, *args), env=env, cwd=base, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, timeout=1200, check=False)
        with open(os.path.join(base, 'runs.log'), 'a', encoding='utf-8') as log:
            log.write('$ %s\n%s\nrc=%s\n' % (' '.join(argv(name, *args)), proc.stdout, proc.returncode))
        return proc

    def incidents():
        return sorted(glob.glob(os.path.join(reports, 'inc-*.json')), key=os.path.getmtime)

    def only_report():
        return [p for p in incidents() if p.endswith('.json') and '.' not in os.path.basename(p)[:-len('.json')]]

    assert playbook('failsafe.deploy.deploy', '-e', 'release_version=1.0.0').returncode == 0

    # Given 3.0.0 failed its health check in production
    failed = playbook('failsafe.deploy.deploy', '-e', 'release_version=3.0.0', '-e', 'failsafe_hosts=production')
    assert failed.returncode != 0 and 'ROLLED BACK' in failed.stdout
    first = only_report()
    assert len(first) == 1
    original = read_json(first[0])
    assert [f['cause'] for f in original['failures']] == ['health']

    # When it is reproduced on staging: the same task fails with the same cause
    again = playbook('failsafe.deploy.reproduce', '-e', 'failsafe_incident=%s' % first[0])
    assert again.returncode == 0, again.stdout[-6000:]
    assert 'REPRODUCED: release 3.0.0 failed in staging at the same task' in again.stdout
    report = read_json(first[0])
    [verdict] = report['reproductions']
    assert verdict['reproduced'] is True and verdict['staging_hosts'] == [staging]
    assert verdict['original'] == {'task': original['failures'][0]['task'], 'cause': 'health'}
    assert {'task': original['failures'][0]['task'], 'cause': 'health'} in verdict['observed']
    with open(first[0][:-len('.json')] + '.md', encoding='utf-8') as handle:
        assert '## Reproduction in staging' in handle.read()
    # staging was rolled back by its own callback after the re-run failed
    assert os.readlink(hosts.host_path(staging, '/srv/app/current')).endswith('1.0.0')

    # Given 2.0.0, a good release, failed in production because the host crashed while it was being verified
    marker = hosts.host_path(production, MARKER)
    crash_args = ('-e', 'release_version=2.0.0', '-e', 'failsafe_hosts=production', '-e',
                  'failsafe_verify_before_tasks=%s' % HOOK, '-e', 'failsafe_fault_host=%s' % production,
                  '-e', 'failsafe_fault_kind=hold', '-e', 'failsafe_fault_marker=%s' % MARKER)
    with open(os.path.join(base, 'crash.log'), 'w', encoding='utf-8') as log:
        proc = subprocess.Popen(argv('failsafe.deploy.deploy', *crash_args), env=env, cwd=base,
                                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.time() + 600
        while not os.path.exists(marker) and proc.poll() is None and time.time() < deadline:
            time.sleep(0.5)
        assert os.path.exists(marker), 'the deploy never reached the verify step'
        time.sleep(0.3)
        hosts.crash(production)
        assert proc.wait(timeout=900) != 0
    crashed = [p for p in only_report() if p not in first]
    assert len(crashed) == 1
    crash_incident = read_json(crashed[0])
    assert crash_incident['failures'] and all(f['unreachable'] for f in crash_incident['failures'])

    # When it is reproduced on staging: it deploys there, so it did not reproduce
    retry = playbook('failsafe.deploy.reproduce', '-e', 'failsafe_incident=%s' % crashed[0])
    assert retry.returncode == 0, retry.stdout[-6000:]
    assert 'DID NOT REPRODUCE: release 2.0.0 deployed without failure in staging' in retry.stdout
    [verdict] = read_json(crashed[0])['reproductions']
    assert verdict['reproduced'] is False and verdict['observed'] == [] and verdict['rc'] == 0
    assert os.readlink(hosts.host_path(staging, '/srv/app/current')).endswith('2.0.0')
