# -*- coding: utf-8 -*-
# Copyright: Contributors to failsafe.deploy
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The pipeline examples parse as YAML, run the deploy through scripts/failsafe_pipeline.py (which hands its result
to scripts/deploy_outcome.py), show the incident and publish the reports and the JUnit file when it failed; and the
outcome script's decisions on edge cases that a real run does not easily produce (tests/behaviour/test_awx_runner.py
checks it against real incident reports, tests/behaviour/test_ci_pipelines.py runs the pipelines)."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import importlib.util
import json
import os

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
PIPELINES = os.path.join(ROOT, 'examples', 'pipelines')


def load(name):
    with open(os.path.join(PIPELINES, name)) as handle:
        return yaml.safe_load(handle)


def script_text(steps):
    return '\n'.join(str(step.get('run') or step.get('script') or '') for step in steps)


def test_github_actions_workflow_runs_the_deploy_and_surfaces_the_outcome():
    wf = load('github-actions.yml')
    assert 'workflow_dispatch' in wf['on']
    jobs = wf['jobs']
    text = script_text(jobs['deploy']['steps'])
    assert 'failsafe_pipeline.py' in wf['env']['FAILSAFE_PIPELINE_SCRIPT'] and '" deploy "$RELEASE"' in text
    upload = [s for s in jobs['deploy']['steps'] if s.get('uses', '').startswith('actions/upload-artifact')][0]
    assert upload['if'].startswith('${{ always()')
    assert jobs['incident']['if'].startswith('failure()') and jobs['finish-rollback']['if'].startswith('failure()')
    assert '" rollback --to "$ROLLBACK_TO"' in script_text(jobs['rollback']['steps'])


def test_azure_pipeline_runs_the_deploy_and_surfaces_the_outcome():
    pipeline = load('azure-pipelines.yml')
    jobs = dict((job['job'], job) for job in pipeline['jobs'])
    steps = jobs['Deploy']['steps']
    assert '" deploy "$RELEASE"' in script_text(steps)
    publish = [s for s in steps if s.get('task', '').startswith('PublishPipelineArtifact')][0]
    assert publish['condition'] == 'always()'
    tests = [s for s in steps if s.get('task', '').startswith('PublishTestResults')][0]
    assert tests['condition'] == 'always()' and tests['inputs']['testResultsFormat'] == 'JUnit'
    assert jobs['Incident']['condition'] == 'failed()' and jobs['Incident']['dependsOn'] == 'Deploy'


def test_gitlab_pipeline_puts_the_junit_file_in_the_test_view():
    pipeline = load('gitlab-ci.yml')
    deploy = pipeline['deploy']
    assert deploy['artifacts']['reports']['junit'] == 'failsafe-incidents/junit.xml'
    assert deploy['artifacts']['when'] == 'always'
    assert pipeline['rollback']['rules'] == [{'if': '$RELEASE == "" && $CI_COMMIT_TAG == null', 'when': 'manual'}]
    assert [r['when'] for r in pipeline['incident']['rules']] == ['on_failure']


def outcome_module():
    spec = importlib.util.spec_from_file_location('deploy_outcome', os.path.join(ROOT, 'scripts', 'deploy_outcome.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write(path, data):
    with open(str(path), 'w') as handle:
        json.dump(data, handle)


def test_outcome_without_reports_depends_on_the_exit_status(tmp_path):
    mod = outcome_module()
    assert mod.decide(str(tmp_path / 'none'), 0)['outcome'] == 'deployed'
    assert mod.decide(str(tmp_path / 'none'), 2)['exit_code'] == 3


def test_outcome_takes_the_newest_report_and_ignores_rollback_files(tmp_path):
    mod = outcome_module()
    write(tmp_path / 'inc-a.json', {'incident_id': 'inc-a', 'outcome': 'rollback_failed', 'written': 1})
    write(tmp_path / 'inc-b.json', {'incident_id': 'inc-b', 'outcome': 'rolled_back', 'written': 2})
    write(tmp_path / 'inc-c.rollback-result.json', {'outcome': 'rollback_failed', 'written': 3})
    result = mod.decide(str(tmp_path), 2)
    assert (result['outcome'], result['incident_id'], result['exit_code']) == ('rolled_back', 'inc-b', 1)
    write(tmp_path / 'inc-d.json', {'incident_id': 'inc-d', 'outcome': 'rescued', 'written': 4})
    assert mod.decide(str(tmp_path), 0)['outcome'] == 'deployed'
    write(tmp_path / 'inc-e.json', {'incident_id': 'inc-e', 'outcome': 'not_started', 'written': 5})
    assert mod.decide(str(tmp_path), 99)['exit_code'] == 2


def test_a_deploy_the_kill_switch_mitigated_is_not_a_failed_rollback(tmp_path):
    """The escalation ladder fixed the health (no rollback, the release stays verified): the pipeline is told
    mitigated, exit 0, never ROLLBACK FAILED."""
    mod = outcome_module()
    write(tmp_path / 'inc-a.json', {'incident_id': 'inc-a', 'outcome': 'mitigated', 'written': 1,
                                    'summary': {'reason': 'health check failed; the escalation ladder fixed it'}})
    result = mod.decide(str(tmp_path), 0)
    assert (result['outcome'], result['exit_code']) == ('mitigated', 0)
    assert result['label'].startswith('MITIGATED') and 'escalation ladder' in result['detail']


def test_a_refused_deploy_has_an_exit_code_of_its_own(tmp_path):
    mod = outcome_module()
    write(tmp_path / 'inc-a.json', {'incident_id': 'inc-a', 'outcome': 'refused', 'written': 1,
                                    'summary': {'reason': 'refused before any change on web1: invalid release id'}})
    result = mod.decide(str(tmp_path), 2)
    assert (result['outcome'], result['label'], result['exit_code']) == ('refused', 'REFUSED BEFORE ANY CHANGE', 4)
    assert result['exit_code'] not in (mod.EXIT_CODES['rolled_back'], mod.EXIT_CODES['rollback_failed'],
                                       mod.EXIT_CODES['unknown'])
    assert 'invalid release id' in result['detail']


def test_reports_of_earlier_runs_are_not_this_runs_outcome(tmp_path):
    """A pipeline's report directory may keep an earlier run's report (a shell runner keeps its project directory):
    with since, a good deploy after a rolled-back one is deployed, not rolled back again."""
    mod = outcome_module()
    write(tmp_path / 'inc-a.json', {'incident_id': 'inc-a', 'outcome': 'rolled_back', 'written': 100})
    assert mod.decide(str(tmp_path), 0)['outcome'] == 'rolled_back'
    assert mod.decide(str(tmp_path), 0, since=101)['outcome'] == 'deployed'
    assert mod.decide(str(tmp_path), 2, since=100)['outcome'] == 'rolled_back'


def pipeline_step(tmp_path, playbook, *args):
    """scripts/failsafe_pipeline.py with ANSIBLE_PLAYBOOK standing in for ansible-playbook (the real runs are in
    tests/behaviour/test_ci_pipelines.py): its decisions when the run leaves no report or no JUnit file."""
    import subprocess
    import sys
    env = dict(os.environ, ANSIBLE_PLAYBOOK=playbook, FAILSAFE_REPORT_DIR=str(tmp_path / 'reports'))
    for key in ('FAILSAFE_JUNIT_FILE', 'GITHUB_ACTIONS', 'TF_BUILD'):
        env.pop(key, None)
    return subprocess.run([sys.executable, os.path.join(ROOT, 'scripts', 'failsafe_pipeline.py')] + list(args),
                          env=env, cwd=str(tmp_path), capture_output=True, text=True, check=False)


def test_a_deploy_step_that_deployed_nothing_or_failed_without_a_report_is_unknown(tmp_path):
    done = pipeline_step(tmp_path, 'true', 'deploy', '1.0.0')
    assert done.returncode == 3, done.stdout
    assert 'no host deployed the release' in done.stdout
    with open(str(tmp_path / 'reports' / 'outcome.env')) as handle:
        assert 'FAILSAFE_OUTCOME=unknown\n' in handle.read()
    failed = pipeline_step(tmp_path, 'false', 'deploy', '1.0.0')
    assert failed.returncode == 3, failed.stdout


def test_a_release_name_a_shell_could_read_otherwise_is_refused_before_anything_runs(tmp_path):
    marker = tmp_path / 'ran'
    fake = tmp_path / 'fake-playbook'
    fake.write_text('#!/bin/sh\ntouch %s\n' % marker)
    fake.chmod(0o755)
    for args in (('deploy', '1.0; rm -rf /'), ('rollback', '--to', '$(id)'), ('deploy', '')):
        proc = pipeline_step(tmp_path, str(fake), *args)
        assert proc.returncode == 4, (args, proc.stdout, proc.stderr)
        assert 'nothing was run' in proc.stderr
    assert not marker.exists()


def pipeline_module():
    spec = importlib.util.spec_from_file_location('failsafe_pipeline', os.path.join(ROOT, 'scripts',
                                                                                    'failsafe_pipeline.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_rollback_by_name_goes_on_only_to_a_build_some_host_can_go_back_to(monkeypatch):
    """web1 committed 2.1.0 over 2.0.0 (archive aaaa...), web2 rolled back 2.1.0 and runs 2.0.0: 2.0.0, its sha's
    start, and 2.0.0 on a host already on it go on; 9.9.9 (never deployed) and 1.0.0 (deployed, not a target) are
    refused, each naming the build and listing 2.0.0 (web1)."""
    mod = pipeline_module()
    sha = 'a' * 64
    history = {
        'web1': [{'current_release': '2.1.0', 'last_verified': '2.1.0',
                  'transactions': [{'release': '2.1.0', 'previous_release': '2.0.0', 'status': 'committed'},
                                   {'release': '2.0.0', 'previous_release': '1.0.0', 'status': 'committed'}],
                  'releases': [{'release': '2.1.0', 'state': 'verified'},
                               {'release': '2.0.0', 'state': 'verified', 'build': {'archive_sha256': sha}},
                               {'release': '1.0.0', 'state': 'verified'}]}],
        'web2': [{'current_release': '2.0.0', 'last_verified': '2.0.0',
                  'transactions': [{'release': '2.1.0', 'previous_release': '2.0.0', 'status': 'rolled_back'}],
                  'releases': [{'release': '2.0.0', 'state': 'verified'}]}],
    }
    monkeypatch.setattr(mod, 'read_history', lambda extra: (history, None))
    assert mod.rollback_targets(history)[0] == {'2.0.0': ['web1']}
    for name in ('2.0.0', sha[:12]):
        assert mod.refuse_unknown_build(name, []) is None, name
    never = mod.refuse_unknown_build('9.9.9', [])
    assert 'build 9.9.9 was never deployed' in never and 'roll back to: 2.0.0 (web1), or last_verified' in never
    old = mod.refuse_unknown_build('1.0.0', [])
    assert "build 1.0.0 was deployed (release 1.0.0) but is no host's build" in old and '2.0.0 (web1)' in old
    # web1 rolled back too: no host has a committed deploy to go back from, so nothing is listed but that
    history['web1'][0]['transactions'][0]['status'] = 'rolled_back'
    assert 'no host has a committed deploy to roll back from' in mod.refuse_unknown_build('9.9.9', [])
    # a history that cannot be read does not stop the rollback: the hosts check the name themselves
    monkeypatch.setattr(mod, 'read_history', lambda extra: (None, 'unreachable'))
    assert mod.refuse_unknown_build('9.9.9', []) is None
