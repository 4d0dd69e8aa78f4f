# -*- coding: utf-8 -*-
# Copyright: Contributors to failsafe.deploy
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Every alert payload is redacted as a whole, not only the parts that came from a task result.

Driven with the fake objects of test_auto_rollback.py. The secret here reaches the callback through the reason of a
rollback that could not start (the error names the configured ansible-playbook path), a text no task result holds.
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

from ansible_collections.failsafe.deploy.tests.unit.plugins.callback.test_auto_rollback import (  # pylint: disable=unused-import
    FakeStats, env, make_callback, open_and_fail, spool,
)

SECRET = 'Kx7SECRETINPATH'


def test_given_a_secret_in_a_failed_rollback_reason_then_no_alert_report_or_log_holds_it(env):
    # pylint: disable=redefined-outer-name
    missing = env / 'bin' / SECRET / 'ansible-playbook'
    cb, display = make_callback(env, ansible_playbook=str(missing), redact_values=[SECRET])
    open_and_fail(cb)
    cb.v2_playbook_on_stats(FakeStats(['web1', 'web2'], failures={'web1': 1}))
    assert cb.outcome == 'rollback_failed'
    alerts = spool(env)
    assert [a['event'] for a in alerts] == ['deploy_failed', 'rollback_failed']
    assert 'could not start' in alerts[-1]['reason']
    everything = (env / 'reports' / 'alerts.jsonl').read_text() + display.text() + '\n'.join(display.warnings)
    for path in (env / 'reports').iterdir():
        everything += path.read_text()
    assert SECRET not in everything
