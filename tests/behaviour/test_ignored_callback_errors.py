# -*- coding: utf-8 -*-
# Copyright: Contributors to failsafe.deploy
# SPDX-License-Identifier: GPL-3.0-or-later
"""The check every behaviour test applies to ansible's output (support.assert_no_ignored_callback_errors) catches
the warning the auto_rollback callback really prints when an event handler raises, and nothing else.

The warnings are produced by the real CallbackModule and ansible's real Display, captured from the process's own
file descriptors, so a change of the warning's wording that the check no longer sees fails here.
"""

import json

import pytest

from support import assert_log_has_no_ignored_callback_errors, assert_no_ignored_callback_errors, ignored_callback_errors

from ansible_collections.failsafe.deploy.plugins.callback.auto_rollback import CallbackModule


def boom(*args):
    raise RuntimeError('handler exploded')


def real_callback(monkeypatch):
    callback = CallbackModule()
    callback._ready = True   # what set_options() ends with; no alert channel is needed here
    monkeypatch.setattr(callback, '_report_alert_problems', lambda final=False: None)
    return callback


def test_given_a_handler_that_raises_when_the_event_fires_then_the_check_fails_the_test(capfd, monkeypatch):
    callback = real_callback(monkeypatch)
    monkeypatch.setattr(callback, '_on_ok', boom)
    callback.v2_runner_on_ok(object())   # the guard swallows it: the run would go on
    out, err = capfd.readouterr()
    printed = out + err
    assert 'error while handling ok result (ignored): RuntimeError: handler exploded' in printed
    assert ignored_callback_errors(printed)
    with pytest.raises(AssertionError, match='handler exploded'):
        assert_no_ignored_callback_errors('PLAY RECAP\n', printed, where='a run')


def test_given_the_end_of_run_raises_when_stats_arrive_then_the_check_fails_the_test(capfd, monkeypatch):
    callback = real_callback(monkeypatch)
    monkeypatch.setattr(callback, '_finish', boom)
    callback.v2_playbook_on_stats(None)
    out, err = capfd.readouterr()
    assert 'error while finishing the run (ignored)' in out + err
    with pytest.raises(AssertionError, match='finishing the run'):
        assert_no_ignored_callback_errors(out + err)


def test_the_check_reads_job_events_and_log_files(tmp_path):
    warning = ('[WARNING]: failsafe.deploy.auto_rollback: error while handling failed result (ignored): '
               'KeyError: \'host\'')
    events = [{'event': 'verbose', 'stdout': 'rollback | ' + warning}]
    with pytest.raises(AssertionError, match='failed result'):
        assert_no_ignored_callback_errors(events, where='job events')
    log = tmp_path / 'runs.log'
    log.write_text('$ ansible-playbook deploy.yml\n%s\nrc=2\n' % warning)
    with pytest.raises(AssertionError, match='runs.log'):
        assert_log_has_no_ignored_callback_errors(str(log))


def test_a_clean_run_and_other_warnings_pass():
    clean = ('[WARNING]: failsafe.deploy.auto_rollback: webhook alert \'deploy_failed\' not delivered after 3 '
             'attempt(s): timed out (setting webhook_url / FAILSAFE_WEBHOOK_URL)\n'
             'TASK [Fail where asked] ... ignoring\nPLAY RECAP\nlocalhost : ok=3 changed=1 failed=0\n')
    assert ignored_callback_errors(clean, json.dumps([{'stdout': clean}])) == []
    assert_no_ignored_callback_errors(clean)
