# -*- coding: utf-8 -*-
# Copyright: Contributors to failsafe.deploy
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Reproduction verdicts (_reproduce): the same task with the same cause class reproduces, another task or another
cause does not, nor a run without failure; the verdict is appended to the report's JSON and Markdown."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import json

import pytest

from ansible_collections.failsafe.deploy.plugins.plugin_utils import _reproduce

TASK = 'failsafe.deploy.verify : Check the health of the new release'
INCIDENT = {'incident_id': 'inc-1', 'failures': [
    {'task': 'Gathering', 'cause': 'health', 'in_scope': False, 'rescued': False},
    {'task': TASK, 'cause': 'health', 'in_scope': True, 'rescued': False}]}


@pytest.mark.parametrize('observed, reproduced', [
    ([{'task': TASK, 'cause': 'health', 'in_scope': True}], True),
    ([{'task': 'Check the health of the new release', 'cause': 'health', 'in_scope': True}], True),
    ([{'task': TASK, 'cause': 'network', 'in_scope': True}], False),
    ([{'task': 'failsafe.deploy.activate : Switch', 'cause': 'health', 'in_scope': True}], False),
    ([{'task': TASK, 'cause': 'health', 'in_scope': True, 'rescued': True}], False),
    ([], False),
])
def test_given_what_the_rerun_saw_then_the_failure_reproduced_only_at_the_same_task_and_cause(observed, reproduced):
    found = _reproduce.verdict(INCIDENT, [{'failures': observed}] if observed else [])
    assert found['reproduced'] is reproduced
    assert found['original'] == {'task': TASK, 'cause': 'health'}


def test_given_a_verdict_then_it_is_appended_to_the_json_and_the_markdown(tmp_path):
    path = tmp_path / 'inc-1.json'
    path.write_text(json.dumps(INCIDENT))
    (tmp_path / 'inc-1.md').write_text('# Incident inc-1\n')
    result = dict(_reproduce.verdict(INCIDENT, []), at='2026-12-06T00:00:00Z', words='DID NOT REPRODUCE: x',
                  staging_hosts=['s1'], log='/tmp/log')
    _reproduce.append(str(path), _reproduce.load(str(path)), result)
    _reproduce.append(str(path), _reproduce.load(str(path)), result)
    assert [r['words'] for r in json.loads(path.read_text())['reproductions']] == ['DID NOT REPRODUCE: x'] * 2
    markdown = (tmp_path / 'inc-1.md').read_text()
    assert markdown.count('## Reproduction in staging, 2026-12-06T00:00:00Z') == 2 and '| Observed | no failure |' in markdown
