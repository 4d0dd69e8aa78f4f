"""The collection builds, installs into an empty collections path, documents itself, and deploys from there."""
import os
import shutil
import subprocess
import tarfile

import pytest

from support import ROOT, VENV_BIN

MODULES = ['snapshot', 'release', 'deploy_state', 'health_check', 'transaction', 'history_info', 'metric_gate']
ROLES = ['preflight', 'snapshot', 'release', 'migrate', 'activate', 'verify', 'commit', 'rollback', 'traffic']


def run(cmd, env, **kw):
    proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False, **kw)
    assert proc.returncode == 0, '%s\n%s' % (' '.join(cmd), proc.stdout[-6000:])
    return proc.stdout


@pytest.fixture(scope='module')
def installed(tmp_path_factory):
    base = tmp_path_factory.mktemp('galaxy')
    env = dict(os.environ, PATH=VENV_BIN + os.pathsep + os.environ['PATH'], ANSIBLE_HOME=str(base / 'home'),
               ANSIBLE_COLLECTIONS_SCAN_SYS_PATH='false', ANSIBLE_NOCOLOR='1')
    env.pop('ANSIBLE_COLLECTIONS_PATH', None)
    # A stray ledger left under playbooks/ by a run from the checkout must stay out of the tarball.
    stray = os.path.join(ROOT, 'playbooks', '.failsafe')
    made_stray = not os.path.exists(stray)
    if made_stray:
        os.makedirs(stray)
        with open(os.path.join(stray, 'ledger.json'), 'w') as handle:
            handle.write('{}')
    try:
        run(['ansible-galaxy', 'collection', 'build', ROOT, '--output-path', str(base / 'dist')], env)
    finally:
        if made_stray:
            shutil.rmtree(stray)
    tarballs = os.listdir(str(base / 'dist'))
    assert len(tarballs) == 1 and tarballs[0].startswith('failsafe-deploy-')
    path = base / 'collections'
    run(['ansible-galaxy', 'collection', 'install', str(base / 'dist' / tarballs[0]), '-p', str(path)], env)
    env['ANSIBLE_COLLECTIONS_PATH'] = str(path)
    return env, path, base / 'dist' / tarballs[0]


def test_the_tarball_installs_and_leaves_out_build_and_test_output(installed):
    path = installed[1]
    coll = path / 'ansible_collections' / 'failsafe' / 'deploy'
    for want in ['MANIFEST.json', 'playbooks/deploy.yml', 'plugins/callback/auto_rollback.py']:
        assert (coll / want).exists(), want
    for unwanted in ['.venv', '.build', 'demo-output', 'tests/output', 'Makefile', 'requirements-dev.txt',
                     'requirements-checks.txt', 'requirements-dev.lock', 'scripts/checks.sh', 'scripts/setup.sh',
                     'scripts/lock.sh', 'scripts/venv.sh', 'scripts/gen_role_docs.py',
                     'scripts/ansible-test-bootstrap', 'playbooks/.failsafe']:
        assert not (coll / unwanted).exists(), unwanted
    # What the pipeline examples call stays.
    assert (coll / 'scripts' / 'deploy_outcome.py').exists()


def test_the_tarball_holds_what_users_need_and_nothing_of_the_test_suite(installed):
    path, tarball = installed[1], installed[2]
    coll = path / 'ansible_collections' / 'failsafe' / 'deploy'
    # The controller's Python requirements, the changelog (galaxy-importer reads it) and the execution environment.
    for want in ['requirements.txt', 'meta/execution-environment.yml', 'meta/ee-bindep.txt',
                 'changelogs/changelog.yaml', 'docs/getting-started.md', 'examples/ansible.cfg']:
        assert (coll / want).is_file(), want
    for unwanted in ['tests', 'changelogs/fragments', 'scripts/mutants.py', 'pytest.ini', 'bench']:
        assert not (coll / unwanted).exists(), unwanted
    with tarfile.open(str(tarball)) as archive:
        members = [m for m in archive.getmembers() if m.isfile()]
    names = [m.name for m in members]
    assert not [n for n in names if n.startswith(('tests/', 'changelogs/fragments/', 'bench/'))]
    size = os.path.getsize(str(tarball))
    print('tarball %s: %d files, %d bytes (%d unpacked)'
          % (tarball.name, len(names), size, sum(m.size for m in members)))
    # What users get is the plugins, roles, playbooks, docs and examples: about 150 files, about 330 KB packed.
    assert len(names) < 200, len(names)
    assert size < 450 * 1024, size


@pytest.mark.parametrize('kind, name', [('module', m) for m in MODULES] + [('callback', 'auto_rollback')]
                         + [('role', r) for r in ROLES])
def test_ansible_doc_renders(installed, kind, name):
    env = installed[0]
    out = run(['ansible-doc', '-t', kind, 'failsafe.deploy.%s' % name], env)
    assert 'failsafe.deploy.%s' % name in out or name in out
    assert 'ERROR' not in out


def test_the_installed_collection_runs_the_demo_deploy(installed, tmp_path, receiver):
    env = installed[0]
    from support import LocalDeploy
    d = LocalDeploy(tmp_path / 'site', receiver)
    try:
        d.env['ANSIBLE_COLLECTIONS_PATH'] = env['ANSIBLE_COLLECTIONS_PATH']
        proc = d.deploy('1.0.0')
        assert proc.returncode == 0, proc.stdout[-6000:]
        listing = run(['ansible-galaxy', 'collection', 'list', 'failsafe.deploy'], d.env)
        assert str(installed[1]) in listing and '.build' not in listing
        assert d.http('/version') == (200, '1.0.0')
        assert d.current() == 'releases/1.0.0'
    finally:
        d.stop()
