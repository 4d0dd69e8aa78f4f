# -*- coding: utf-8 -*-
# Copyright: Contributors to failsafe.deploy
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The mutation check's own bookkeeping: every mutant still applies, names real tests, and kills are read right."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import importlib.util
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SPEC = importlib.util.spec_from_file_location('failsafe_mutants', os.path.join(ROOT, 'scripts', 'mutants.py'))
mutants = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(mutants)

AREAS = ('restore', 'verif', 'target', 'quarantine', 'scope', 'unreachable', 'lock', 'journal', 'redact', 'secret')


@pytest.mark.parametrize('mutant', mutants.MUTANTS, ids=[m['name'] for m in mutants.MUTANTS])
def test_each_mutant_applies_exactly_once_and_names_existing_tests(mutant):
    mutants.check_mutant(ROOT, mutant)
    for test in mutant['tests']:
        path = test.split('::')[0]
        assert os.path.exists(os.path.join(ROOT, path)), test
        if '::' in test:
            with open(os.path.join(ROOT, path), encoding='utf-8') as f:
                assert 'def %s(' % test.split('::')[-1].split('[')[0] in f.read(), test


def test_the_set_covers_every_promise_and_names_are_unique():
    names = [m['name'] for m in mutants.MUTANTS]
    assert len(names) == len(set(names)) and len(names) >= 14
    text = ' '.join(m['name'] + ' ' + m['breaks'] for m in mutants.MUTANTS)
    for area in AREAS:
        assert area in text, area


def test_a_stale_mutant_stops_the_check(tmp_path):
    (tmp_path / 'a.py').write_text('x = 1\nx = 1\n')
    for old in ('x = 1\n', 'y = 2\n'):
        with pytest.raises(mutants.MutantError, match='stale'):
            mutants.check_mutant(str(tmp_path), {'name': 'm', 'file': 'a.py', 'old': old, 'new': 'z', 'tests': ['t']})


def test_junit_cases_map_to_node_ids_and_match_named_tests(tmp_path):
    junit = tmp_path / 'j.xml'
    junit.write_text(
        '<testsuites><testsuite>'
        '<testcase classname="tests.unit.plugins.module_utils.test_release" name="test_a[x-1]"><failure/></testcase>'
        '<testcase classname="tests.unit.plugins.module_utils.test_release" name="test_a[y-2]"/>'
        '<testcase classname="tests.behaviour.test_fault_matrix" name="test_fault_matrix[verify-task_failure]">'
        '<error/></testcase>'
        '<testcase classname="tests.unit.test_x.TestThing" name="test_b"><skipped/></testcase>'
        '</testsuite></testsuites>')
    cases = mutants.read_junit(str(junit))
    assert cases == {
        'tests/unit/plugins/module_utils/test_release.py::test_a[x-1]': 'failed',
        'tests/unit/plugins/module_utils/test_release.py::test_a[y-2]': 'passed',
        'tests/behaviour/test_fault_matrix.py::test_fault_matrix[verify-task_failure]': 'failed',
        'tests/unit/test_x.py::TestThing::test_b': 'skipped',
    }
    match = mutants.node_matches
    assert match('tests/unit/plugins/module_utils/test_release.py::test_a', 'tests/unit/plugins/module_utils/test_release.py::test_a[x-1]')
    assert not match('tests/unit/plugins/module_utils/test_release.py::test_a', 'tests/unit/plugins/module_utils/test_release.py::test_ab')
    assert match('tests/unit/plugins/module_utils/test_release.py', 'tests/unit/plugins/module_utils/test_release.py::test_a[y-2]')
    assert match('tests/unit', 'tests/unit/test_x.py::TestThing::test_b')
    assert not match('tests/unit/test_x.py', 'tests/unit/test_x.pyc::t')
