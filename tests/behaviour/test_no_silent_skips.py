# -*- coding: utf-8 -*-
# Copyright: Contributors to failsafe.deploy
# SPDX-License-Identifier: GPL-3.0-or-later
"""Given the fleet pytest plugin and tests/requires.py, when a test of a real component cannot run under CI or as
root, then the run fails; elsewhere it skips with its reason. And no test under tests/ skips any other way.

Each case runs a real pytest in a subprocess on a tiny generated test file that loads tests/fleet/pytest_fleet.py
the way the suite does. Being non-root is simulated in the generated conftest (``os.geteuid`` answering 1000), so
the CI rule is proven on its own even on a machine where the suite runs as root.
"""

import ast
import os
import subprocess
import sys
from xml.etree import ElementTree

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

TESTS = '''\
import pytest


@pytest.mark.fleet
def test_fleet_that_skips():
    pytest.skip('no fleet here')


@pytest.mark.fleet
@pytest.mark.skipif(True, reason='marked to skip')
def test_fleet_marked_skipif():
    pass


@pytest.mark.fleet
def test_fleet_through_the_fixture(fleet):
    pass


@pytest.mark.fleet
def test_fleet_that_runs():
    pass


def test_plain_skip():
    pytest.skip('not a fleet test')
'''


def run_pytest(tmp_path, *args, ci=None, euid=None, tests=None):
    conftest = 'import os\n'
    if euid is not None:
        conftest += 'os.geteuid = lambda: %d\n' % euid
    conftest += "pytest_plugins = ['tests.fleet.pytest_fleet']\n"
    (tmp_path / 'conftest.py').write_text(conftest)
    for name, text in (tests or {'test_generated.py': TESTS}).items():
        (tmp_path / name).write_text(text)
    (tmp_path / 'pytest.ini').write_text('[pytest]\naddopts = -p no:cacheprovider\n')
    env = dict(os.environ, PYTHONPATH=ROOT)
    env.pop('CI', None)
    if ci is not None:
        env['CI'] = ci
    cmd = [sys.executable, '-m', 'pytest', '-rA', '--junitxml', str(tmp_path / 'junit.xml'), str(tmp_path)] + list(args)
    proc = subprocess.run(cmd, cwd=str(tmp_path), env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True, timeout=120,
                          check=False)
    outcomes = {}
    for case in ElementTree.parse(str(tmp_path / 'junit.xml')).getroot().iter('testcase'):
        kinds = [child.tag for child in case if child.tag in ('failure', 'error', 'skipped')]
        outcomes[case.get('name') or case.get('classname')] = kinds[0] if kinds else 'passed'
    return proc, outcomes


def test_given_no_ci_and_no_root_when_a_fleet_test_skips_then_it_stays_a_skip_and_the_count_says_so(tmp_path):
    proc, outcomes = run_pytest(tmp_path, euid=1000)
    assert proc.returncode == 0, proc.stdout
    assert outcomes['test_fleet_that_skips'] == 'skipped'
    assert outcomes['test_fleet_through_the_fixture'] == 'skipped'
    assert 'fleet tests: 1 tests ran, 3 did not run' in proc.stdout


@pytest.mark.parametrize('ci, euid', [('true', 1000), (None, 0), ('true', 0)], ids=['ci', 'root', 'ci-and-root'])
def test_given_ci_or_root_when_a_fleet_test_would_skip_then_it_fails_with_the_reason(tmp_path, ci, euid):
    proc, outcomes = run_pytest(tmp_path, ci=ci, euid=euid)
    assert proc.returncode == 1, proc.stdout
    assert outcomes['test_fleet_that_skips'] in ('failure', 'error'), proc.stdout
    assert outcomes['test_fleet_marked_skipif'] in ('failure', 'error'), proc.stdout
    if euid:
        assert outcomes['test_fleet_through_the_fixture'] in ('failure', 'error'), proc.stdout
    assert outcomes['test_fleet_that_runs'] == 'passed'
    assert outcomes['test_plain_skip'] == 'skipped'   # only fleet tests are held to it
    for reason in ('no fleet here', 'marked to skip'):
        assert 'Skip reason: %s' % reason in proc.stdout
    if euid:
        assert 'Skip reason: the namespace fleet needs root' in proc.stdout
        assert 'fleet tests: 1 tests ran, 3 did not run' in proc.stdout
    else:   # as root the fixture is happy: a test that asks for it and makes no fleet runs
        assert 'fleet tests: 2 tests ran, 2 did not run' in proc.stdout


def test_when_no_fleet_test_ran_then_the_count_still_prints_zero(tmp_path):
    proc, outcomes = run_pytest(tmp_path, '-m', 'not fleet', ci='true')
    assert proc.returncode == 0, proc.stdout
    assert outcomes == {'test_plain_skip': 'skipped'}
    assert 'fleet tests: 0 tests ran, 0 did not run' in proc.stdout


# ---------------------------------------------------------------------------- tests/requires.py, in any test

REQUIRES_TESTS = '''\
import pytest

from tests.requires import needs, require, require_module, require_root


@pytest.fixture
def widget():
    require(False, 'no widget server here')


def test_require_false():
    require(False, 'no frobnicator here')


def test_require_module_missing():
    require_module('failsafe_no_such_module', 'failsafe_no_such_module is not installed')


@needs(False, 'decorated: no gizmo here')
def test_needs_false(tmp_path):
    pass


def test_through_a_fixture(widget):
    pass


def test_require_root():
    require_root('only root may do this')


def test_present_parts_run(tmp_path):
    require(True, 'never shown')
    assert require_module('json').dumps([1]) == '[1]'


@needs(True, 'never shown')
def test_needs_true_runs_with_its_fixtures(tmp_path):
    assert tmp_path.is_dir()


@pytest.mark.fleet
def test_fleet_that_requires():
    require(False, 'no fleet widget here')
'''

REQUIRES_MODULE_LEVEL = '''\
from tests.requires import require_module

require_module('failsafe_no_such_module', 'the whole module needs failsafe_no_such_module')


def test_never_collected_without_it():
    pass
'''

NOT_RUN = ('test_require_false', 'test_require_module_missing', 'test_needs_false', 'test_through_a_fixture',
           'test_fleet_that_requires')
REASONS = ('no frobnicator here', 'failsafe_no_such_module is not installed', 'decorated: no gizmo here',
           'no widget server here', 'no fleet widget here')


def run_requires(tmp_path, ci=None, euid=None):
    return run_pytest(tmp_path, '--continue-on-collection-errors', ci=ci, euid=euid,
                      tests={'test_requires.py': REQUIRES_TESTS, 'test_requires_module.py': REQUIRES_MODULE_LEVEL})


def test_given_no_ci_and_no_root_when_a_real_part_is_missing_then_the_test_skips_with_its_reason(tmp_path):
    proc, outcomes = run_requires(tmp_path, euid=1000)
    assert proc.returncode == 0, proc.stdout
    for name in NOT_RUN + ('test_require_root',):
        assert outcomes[name] == 'skipped', (name, proc.stdout)
    assert outcomes['test_present_parts_run'] == 'passed'
    assert outcomes['test_needs_true_runs_with_its_fixtures'] == 'passed'
    assert 'test_never_collected_without_it' not in outcomes
    for reason in REASONS + ('only root may do this', 'the whole module needs failsafe_no_such_module'):
        assert reason in proc.stdout, (reason, proc.stdout)
    assert 'fleet tests: 0 tests ran, 1 did not run' in proc.stdout


@pytest.mark.parametrize('ci, euid', [('true', 1000), (None, 0), ('true', 0)], ids=['ci', 'root', 'ci-and-root'])
def test_given_ci_or_root_when_a_real_part_is_missing_then_the_test_fails_with_its_reason(tmp_path, ci, euid):
    proc, outcomes = run_requires(tmp_path, ci=ci, euid=euid)
    assert proc.returncode == 1, proc.stdout
    for name in NOT_RUN:
        assert outcomes[name] in ('failure', 'error'), (name, proc.stdout)
    # root itself is the requirement: met as root, a failure under CI without it
    assert outcomes['test_require_root'] == ('passed' if euid == 0 else 'failure'), proc.stdout
    assert outcomes['test_present_parts_run'] == 'passed'
    assert outcomes['test_needs_true_runs_with_its_fixtures'] == 'passed'
    # a module that cannot import its real part fails its collection (and so the run), never vanishes quietly
    assert outcomes.get('test_requires_module') == 'error', (outcomes, proc.stdout)
    for reason in REASONS + ('the whole module needs failsafe_no_such_module',):
        assert 'Skip reason: %s' % reason in proc.stdout, (reason, proc.stdout)
    assert 'fleet tests: 0 tests ran, 1 did not run' in proc.stdout   # counted as not run, not as a test that ran


# ---------------------------------------------------------------------------- no skip around tests/requires.py

TESTS_DIR = os.path.join(ROOT, 'tests')
# Names that skip or excuse a test: pytest.skip, pytest.importorskip, pytest.mark.skip(if), pytest.xfail,
# pytest.mark.xfail, unittest's skipTest/skipIf/skipUnless, and the same names imported from their modules.
SKIPPING_NAMES = frozenset(['skip', 'skipif', 'importorskip', 'xfail', 'skipTest', 'skipIf', 'skipUnless'])
# Files allowed to use them, each with its reason. Every other test goes through tests/requires.py.
ALLOWED = {
    'tests/requires.py': 'the helper itself: the one place a test of a real component skips, and only where it may',
}


def skipping_uses(source, path='<source>'):
    """(line, name) of every use of a skipping name in ``source``: attributes (``pytest.skip``,
    ``pytest.mark.skipif``, ``self.skipTest``) and names imported under them (``from pytest import skip``)."""
    found = []
    for node in ast.walk(ast.parse(source, path)):
        if isinstance(node, ast.Attribute) and node.attr in SKIPPING_NAMES:
            found.append((node.lineno, node.attr))
        elif isinstance(node, ast.ImportFrom):
            found.extend((node.lineno, alias.name) for alias in node.names if alias.name in SKIPPING_NAMES)
    return sorted(found)


def test_the_scan_finds_each_way_to_skip():
    source = ('import pytest\nfrom pytest import importorskip\nimport unittest\n'
              'pytest.skip("x")\nm = pytest.importorskip("m")\n@pytest.mark.skipif(True, reason="r")\ndef f(): pass\n'
              '@pytest.mark.skip\ndef g(): pass\npytest.xfail("x")\nclass T(unittest.TestCase):\n'
              '    @unittest.skipIf(True, "r")\n    def test(self): self.skipTest("x")\n'
              'require(False, "through the helper")\n')
    assert [name for dummy, name in skipping_uses(source)] == [
        'importorskip', 'skip', 'importorskip', 'skipif', 'skip', 'xfail', 'skipIf', 'skipTest']


def test_no_test_skips_except_through_the_helper():
    scanned, offenders = [], []
    for directory, dirs, files in os.walk(TESTS_DIR):
        dirs[:] = [d for d in dirs if d not in ('output', '__pycache__')]
        for name in files:
            if not name.endswith('.py'):
                continue
            path = os.path.join(directory, name)
            rel = os.path.relpath(path, ROOT)
            with open(path, encoding='utf-8') as handle:
                uses = skipping_uses(handle.read(), path)
            scanned.append(rel)
            if uses and rel not in ALLOWED:
                offenders.extend('%s:%d %s' % (rel, line, what) for line, what in uses)
    # the scan read the suite: the unit and behaviour tests, the fleet plugin and this file among them
    for rel in ('tests/fleet/pytest_fleet.py', 'tests/behaviour/test_no_silent_skips.py',
                'tests/unit/plugins/module_utils/test_database.py', 'tests/behaviour/conftest.py'):
        assert rel in scanned, (rel, len(scanned))
    assert len(scanned) > 50, scanned
    assert offenders == [], ('skips that do not go through tests/requires.py (require, require_module, needs): %s'
                             % offenders)
    for rel in ALLOWED:   # an allowance outlives no file
        assert os.path.isfile(os.path.join(ROOT, rel)), rel
