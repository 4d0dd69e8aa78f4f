# -*- coding: utf-8 -*-
# Copyright: Contributors to failsafe.deploy
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The mutation check's own bookkeeping: every mutant still applies, names real tests, and kills are read right."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import importlib.util
import os
import re

import pytest

from ansible_collections.failsafe.deploy.plugins.module_utils import _layers, kinds
from ansible_collections.failsafe.deploy.plugins.module_utils.kinds.files import FilesLayer
from ansible_collections.failsafe.deploy.plugins.module_utils.kinds.release import ReleaseLayer
from ansible_collections.failsafe.deploy.plugins.module_utils.kinds.service import ServiceLayer
from ansible_collections.failsafe.deploy.plugins.plugin_utils import _channels

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SPEC = importlib.util.spec_from_file_location('failsafe_mutants', os.path.join(ROOT, 'scripts', 'mutants.py'))
mutants = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(mutants)

AREAS = ('restore', 'verif', 'target', 'quarantine', 'scope', 'unreachable', 'lock', 'journal', 'redact', 'secret')
# Layer kinds the engine has without registering them (kinds/files.py, release.py, service.py).
BUILT_IN_KINDS = ('files', 'release', 'service')
# The incident reports write_report() writes.
REPORTS = ('json', 'markdown', 'html')
MIN_MUTANTS = 50


def layer_kinds():
    """Every layer kind of the collection a journal may hold: the built-in ones and every kind kinds/__init__.py loads
    (not the kinds other tests register for themselves)."""
    assert kinds._layers is _layers
    assert [FilesLayer.kind, ReleaseLayer.kind, ServiceLayer.kind] == list(BUILT_IN_KINDS) == list(_layers.BUILT_IN_KINDS)
    registered = kinds.load_all()
    assert all(registered[kind].kind == kind for kind in kinds.LOADERS)
    return sorted(set(BUILT_IN_KINDS) | set(kinds.LOADERS))


def channel_names():
    """The name of every concrete alert channel (every subclass of _channels.Channel that builds requests), and
    the generic webhook (_alerts.WebhookSender)."""
    names = set(['webhook'])
    pending = list(_channels.Channel.__subclasses__())
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        if cls.requests is not _channels.Channel.requests and cls.name != _channels.Channel.name:
            names.add(cls.name)
    return sorted(names)


def covered(prefix):
    return set(entry[len(prefix):] for m in mutants.MUTANTS for entry in m.get('covers') or ()
               if entry.startswith(prefix))


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


def test_every_layer_kind_has_a_mutant():
    names = layer_kinds()
    assert set(BUILT_IN_KINDS) < set(names) and len(names) > len(BUILT_IN_KINDS)    # the registered kinds were read
    missing = [kind for kind in names if kind not in covered('kind:')]
    assert missing == [], 'layer kinds no mutant covers: %s' % ', '.join(missing)


def test_every_alert_channel_has_a_mutant():
    names = channel_names()
    assert set(['pagerduty', 'slack', 'teams', 'email', 'webhook']) <= set(names) and 'channel' not in names
    missing = [name for name in names if name not in covered('channel:')]
    assert missing == [], 'channels no mutant covers: %s' % ', '.join(missing)


def test_there_are_enough_mutants():
    assert len(mutants.MUTANTS) >= MIN_MUTANTS


@pytest.mark.parametrize('mutant', [m for m in mutants.MUTANTS if 'covers' in m],
                         ids=[m['name'] for m in mutants.MUTANTS if 'covers' in m])
def test_what_a_mutant_covers_is_named_right(mutant):
    """kind:<a layer kind>, channel:<a channel>, report:<a report written>, rule:<a rule's name>; nothing else."""
    covers = mutant['covers']
    assert isinstance(covers, list) and covers and len(covers) == len(set(covers)), covers
    known = {'kind': layer_kinds(), 'channel': channel_names(), 'report': REPORTS}
    for entry in covers:
        prefix, dummy, what = str(entry).partition(':')
        assert prefix in ('kind', 'channel', 'report', 'rule'), '%s: unknown prefix in %r' % (mutant['name'], entry)
        if prefix == 'rule':
            assert re.match(r'^[a-z0-9][a-z0-9_.-]*$', what), '%s: %r names no rule' % (mutant['name'], entry)
        else:
            assert what in known[prefix], '%s: %r names no %s (known: %s)' % (
                mutant['name'], entry, prefix, ', '.join(known[prefix]))


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
