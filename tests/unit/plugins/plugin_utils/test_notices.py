# -*- coding: utf-8 -*-
# Copyright: Contributors to failsafe.deploy
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Stakeholder notices: plain words from a few facts, templates a team can replace."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import calendar
import json

from ansible_collections.failsafe.deploy.plugins.plugin_utils import _notices

FAILED = calendar.timegm((2026, 11, 29, 14, 3, 0))
FACTS = {'service': 'Web shop', 'releases': ['2.4.1'], 'previous_releases': ['2.4.0'], 'started': FAILED - 120,
         'failed': FAILED, 'restored': FAILED + 7 * 60 + 20, 'incident_id': 'inc-20261129T140300Z-0a1b2c3d'}


def test_restored_says_when_and_how_long_in_plain_words():
    subject, text = _notices.render('restored', FACTS)
    assert subject == 'Web shop: service restored'
    assert 'At 14:10 UTC on 29 November 2026, Web shop was running its previous version (2.4.0) again.' in text
    assert 'ran into a problem at 14:03 UTC on 29 November 2026' in text
    assert 'How long the impact lasted: about 7 minutes. We had expected ' in text
    assert 'inc-20261129T140300Z-0a1b2c3d' in text


def test_every_kind_renders_and_unknown_facts_read_as_words():
    for kind in _notices.KINDS:
        subject, text = _notices.render(kind, {})
        assert subject and '$' not in subject + text and text.endswith('\n')
    assert 'How long the impact lasted: unknown. We had expected ' in _notices.render('restored', {})[1]


def test_facts_cannot_smuggle_markup_or_lines_into_a_notice():
    facts = dict(FACTS, service='shop\n<script>alert(1)</script> ${release}', releases=['2.4.1\r\nBcc: x@y'])
    subject, text = _notices.render('started', facts)
    assert '\n' not in subject and '<' not in subject + text and '${' not in subject + text
    assert 'Bcc: x@y' not in text.splitlines()


def test_durations_in_plain_words():
    assert [_notices.plain_duration(s) for s in (None, 5, 59, 60, 90, 3600, 3900, 7300)] == [
        'unknown', 'less than a minute', 'less than a minute', 'about 1 minute', 'about 2 minutes', 'about 1 hour',
        'about 1 hour and 5 minutes', 'about 2 hours and 2 minutes']


def test_a_template_directory_replaces_only_the_notices_it_holds(tmp_path):
    (tmp_path / 'restored.txt').write_text('$service is back\nBack at $restored_at after $impact.\n')
    templates = _notices.load_templates(str(tmp_path))
    assert _notices.render('restored', FACTS, templates) == (
        'Web shop is back', 'Back at 14:10 UTC on 29 November 2026 after about 7 minutes.\n')
    assert _notices.render('started', FACTS, templates)[0] == 'Web shop: release 2.4.1 is being deployed'


class _Run(object):
    """The few facts of a run that run_facts reads (a _incident.DeployRun has them all)."""
    counted_failures = [{'time': FAILED}]
    transactions = {'web1': {'name': 'shop', 'opened_at': FAILED - 120}}
    releases, previous_releases, started = ['2.4.1'], ['2.4.0'], FAILED - 130


def _incident(folder, number, name, outcome, waited, took):
    incident = {'schema': 1, 'incident_id': 'inc-%d' % number, 'outcome': outcome,
                'transactions': {'web1': {'name': name}},
                'summary': {'detected_at': '2026-11-%02dT10:00:00Z' % number, 'seconds_to_rollback': waited,
                            'rollback_duration': took}}
    (folder / ('inc-2026110%dT100000Z-0000000%d.json' % (number % 10, number % 10))).write_text(json.dumps(incident))


def test_the_failed_notice_expects_the_median_of_the_deployments_last_rollbacks_and_restored_compares(tmp_path):
    # seven rollbacks of this deployment, oldest first: the last five (120, 90, 240, 60, 30 s) have a median of 90 s
    for number, took in enumerate((600, 900, 120, 90, 240, 60, 30), start=1):
        _incident(tmp_path, number, 'shop', 'rolled_back', 5, took - 5)
    _incident(tmp_path, 8, 'other', 'rolled_back', 5, 3000)            # another deployment's
    _incident(tmp_path, 9, 'shop', 'rollback_failed', 5, 3000)         # not restored by its rollback
    (tmp_path / 'inc-20261110T100000Z-broken.json').write_text('{not json')
    assert _notices.past_restores(str(tmp_path), 'shop') == [30, 60, 240, 90, 120]
    facts = _notices.run_facts(_Run(), report_dir=str(tmp_path), restored=FAILED + 7 * 60 + 20)
    assert facts['expected'] == (90, 5)
    failed = _notices.render('failed', facts)[1]
    assert 'We expect service to be restored in about 2 minutes (the median of its last 5 rollbacks).' in failed
    restored = _notices.render('restored', facts)[1]
    assert ('How long the impact lasted: about 7 minutes. We had expected about 2 minutes (the median of its last '
            '5 rollbacks).') in restored


def test_with_no_earlier_rollback_the_notice_gives_the_default_and_says_so(tmp_path):
    _incident(tmp_path, 1, 'other', 'rolled_back', 5, 55)
    facts = _notices.run_facts(_Run(), report_dir=str(tmp_path))
    assert facts['expected'] == (_notices.DEFAULT_RESTORE_SECONDS, 0)
    assert ('We expect service to be restored in about 5 minutes (no earlier rollback of this service to go by).'
            in _notices.render('failed', facts)[1])
    _incident(tmp_path, 2, 'shop', 'rolled_back', 10, 50)
    assert _notices.run_facts(_Run(), report_dir=str(tmp_path))['expected'] == (60, 1)
    assert 'about 1 minute (its only earlier rollback)' in _notices.render('failed', _notices.run_facts(
        _Run(), report_dir=str(tmp_path)))[1]
