# -*- coding: utf-8 -*-
# Copyright: Contributors to failsafe.deploy
# SPDX-License-Identifier: GPL-3.0-or-later
"""Given the fleet pytest plugin, when a fleet test cannot run under CI or as root, then the run fails.

Each case runs a real pytest in a subprocess on a tiny generated test file that loads tests/fleet/pytest_fleet.py
the way the suite does. Being non-root is simulated in the generated conftest (``os.geteuid`` answering 1000), so
the CI rule is proven on its own even on a machine where the suite runs as root.
"""

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


def run_pytest(tmp_path, *args, ci=None, euid=None):
    conftest = 'import os\n'
    if euid is not None:
        conftest += 'os.geteuid = lambda: %d\n' % euid
    conftest += "pytest_plugins = ['tests.fleet.pytest_fleet']\n"
    (tmp_path / 'conftest.py').write_text(conftest)
    (tmp_path / 'test_generated.py').write_text(TESTS)
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
        outcomes[case.get('name')] = kinds[0] if kinds else 'passed'
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
