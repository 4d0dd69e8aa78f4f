"""The collection builds, installs into an empty collections path, documents itself, and deploys from there."""
import ast
import importlib.util
import json
import os
import shutil
import subprocess
import tarfile

import pytest
import yaml

from support import ROOT, VENV_BIN

MODULES = ['snapshot', 'release', 'deploy_state', 'health_check', 'transaction', 'history_info', 'metric_gate']
ROLES = ['common', 'preflight', 'snapshot', 'release', 'migrate', 'activate', 'verify', 'commit', 'rollback', 'traffic']


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
    assert (coll / 'scripts' / 'failsafe_pipeline.py').exists()


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
    # What users get is the plugins, roles, playbooks, docs and examples: about 200 entries, about 420 KB packed
    # (with the infra role, the staging and pipeline pieces); a bound well above, so that a stray folder shows.
    assert len(names) < 260, len(names)
    assert size < 550 * 1024, size


@pytest.mark.parametrize('kind, name', [('module', m) for m in MODULES] + [('callback', 'auto_rollback')]
                         + [('role', r) for r in ROLES])
def test_ansible_doc_renders(installed, kind, name):
    env = installed[0]
    out = run(['ansible-doc', '-t', kind, 'failsafe.deploy.%s' % name], env)
    assert 'failsafe.deploy.%s' % name in out or name in out
    assert 'ERROR' not in out


def _module_doc(name):
    """The DOCUMENTATION of one of our modules, as written in its source (before any fragment is merged)."""
    with open(os.path.join(ROOT, 'plugins', 'modules', name + '.py'), encoding='utf-8') as handle:
        tree = ast.parse(handle.read())
    for node in tree.body:
        if isinstance(node, ast.Assign) and [t.id for t in node.targets] == ['DOCUMENTATION']:
            return yaml.safe_load(node.value.value)
    raise AssertionError('%s has no DOCUMENTATION' % name)


def _fragment(slug):
    """The YAML of a doc fragment of this collection: C(state) is DOCUMENTATION of state.py, C(common.action) its
    ACTION."""
    name, dummy, var = slug.partition('.')
    spec = importlib.util.spec_from_file_location('fragment_' + name,
                                                  os.path.join(ROOT, 'plugins', 'doc_fragments', name + '.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return yaml.safe_load(getattr(module.ModuleDocFragment, (var or 'documentation').upper()))


FRAGMENT_USES = [(module, slug[len('failsafe.deploy.'):]) for module in MODULES
                 for slug in _module_doc(module).get('extends_documentation_fragment', [])
                 if slug.startswith('failsafe.deploy.')]


def test_every_module_extends_the_common_fragment_and_the_shared_option_groups_are_fragments():
    uses = set(FRAGMENT_USES)
    assert set((m, 'common') for m in MODULES) <= uses
    assert {('transaction', 'state'), ('history_info', 'state'), ('health_check', 'health_check'),
            ('transaction', 'health_check.checks')} <= uses


@pytest.fixture(scope='module')
def module_docs(installed):
    """ansible-doc --json of every module, one run for all of them (each run starts ansible and loads the
    collection: seconds of CPU), as the installed collection shows them."""
    names = ['failsafe.deploy.%s' % module for module in MODULES]
    docs = json.loads(run(['ansible-doc', '-t', 'module', '--json'] + names, installed[0]))
    assert sorted(docs) == sorted(names), sorted(docs)
    return docs


@pytest.mark.parametrize('module, slug', FRAGMENT_USES)
def test_ansible_doc_shows_a_fragments_options_on_every_module_that_extends_it(module_docs, module, slug):
    fragment, own = _fragment(slug), _module_doc(module)
    doc = module_docs['failsafe.deploy.%s' % module]['doc']

    def same(want, got, where):
        """Every key the fragment gives an option (suboptions too) is what ansible-doc shows."""
        for key, value in want.items():
            if key == 'suboptions':
                for sub, option in value.items():
                    same(option, got['suboptions'][sub], '%s.%s' % (where, sub))
            else:
                assert got.get(key) == value, '%s: %s of %s is %r, the fragment says %r' % (
                    module, key, where, got.get(key), value)

    for name, option in (fragment.get('options') or {}).items():
        assert name in doc['options'], 'ansible-doc of %s does not show option %s of fragment %s' % (
            module, name, slug)
        if name not in (own.get('options') or {}):  # a module may document an option of its own instead
            same(option, doc['options'][name], name)
    for name, attribute in (fragment.get('attributes') or {}).items():
        own_attribute = (own.get('attributes') or {}).get(name) or {}
        for key, value in attribute.items():
            if key not in own_attribute:
                assert doc['attributes'][name].get(key) == value, '%s: attribute %s.%s' % (module, name, key)
    for key in ('author',):
        if key in fragment:
            assert doc[key] == fragment[key]


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
