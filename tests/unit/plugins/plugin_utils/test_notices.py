# -*- coding: utf-8 -*-
# Copyright: Contributors to failsafe.deploy
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Stakeholder notices: plain words from a few facts, templates a team can replace."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import calendar

from ansible_collections.failsafe.deploy.plugins.plugin_utils import _notices

FAILED = calendar.timegm((2026, 11, 29, 14, 3, 0))
FACTS = {'service': 'Web shop', 'releases': ['2.4.1'], 'previous_releases': ['2.4.0'], 'started': FAILED - 120,
         'failed': FAILED, 'restored': FAILED + 7 * 60 + 20, 'incident_id': 'inc-20261129T140300Z-0a1b2c3d'}


def test_restored_says_when_and_how_long_in_plain_words():
    subject, text = _notices.render('restored', FACTS)
    assert subject == 'Web shop: service restored'
    assert 'At 14:10 UTC on 29 November 2026, Web shop was running its previous version (2.4.0) again.' in text
    assert 'ran into a problem at 14:03 UTC on 29 November 2026' in text
    assert 'How long the impact lasted: about 7 minutes.' in text
    assert 'inc-20261129T140300Z-0a1b2c3d' in text


def test_every_kind_renders_and_unknown_facts_read_as_words():
    for kind in _notices.KINDS:
        subject, text = _notices.render(kind, {})
        assert subject and '$' not in subject + text and text.endswith('\n')
    assert 'How long the impact lasted: unknown.' in _notices.render('restored', {})[1]


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
