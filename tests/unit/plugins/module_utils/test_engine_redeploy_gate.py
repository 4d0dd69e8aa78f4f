# -*- coding: utf-8 -*-
# Copyright: Contributors to failsafe.deploy
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The redeploy gate (_engine.redeploy_gate): a release that failed before deploys again without force only as a
changed archive (another sha256) that passed a rehearsal, or with a root-cause note; the same archive, or a changed
one nobody rehearsed, is refused."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import pytest

from ansible_collections.failsafe.deploy.plugins.module_utils import _engine as engine

BAD, FIXED = 'a' * 64, 'b' * 64
FAILED = {'state': 'failed', 'reason': 'health check failed', 'failed_build': {'archive_sha256': BAD}}
PASSED = {'record': '/srv/rehearsals/%s.json' % FIXED, 'passed': True}


@pytest.mark.parametrize('sha, rehearsal, rca, by', [
    (BAD, None, None, None),                  # unchanged: refused
    (BAD, dict(PASSED, record='x'), None, None),  # unchanged, whatever a record says
    (FIXED, None, None, None),                # changed, not rehearsed
    (FIXED, {'passed': False, 'missing': 'no record'}, None, None),
    (FIXED, PASSED, None, 'rehearsal'),
    (BAD, None, 'https://tickets.example.invalid/RCA-1', 'rca'),
])
def test_given_a_failed_release_then_only_a_rehearsed_changed_archive_or_an_rca_opens_the_gate(
        sha, rehearsal, rca, by):
    p = {'release': '2.0.0', 'build': {'archive_sha256': sha}, 'rehearsal': rehearsal, 'rca': rca}
    verdict = engine.redeploy_gate(p, FAILED)
    assert (verdict or {}).get('by') == by
    if by == 'rehearsal':
        assert verdict == {'by': 'rehearsal', 'record': PASSED['record'], 'failed_archive_sha256': BAD,
                           'archive_sha256': FIXED}


def test_given_a_failure_recorded_without_its_build_then_a_rehearsal_does_not_open_the_gate():
    p = {'release': '2.0.0', 'build': {'archive_sha256': FIXED}, 'rehearsal': PASSED}
    assert engine.redeploy_gate(p, {'state': 'failed'}) is None
