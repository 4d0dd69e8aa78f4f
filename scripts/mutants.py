# -*- coding: utf-8 -*-
# Copyright: Contributors to failsafe.deploy
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The mutation check: deliberate breakages that the test suite must catch.

Each mutant below breaks one promise of the collection (the restore does nothing, the rollback picks the wrong
release, a secret reaches the spool, ...) by replacing an exact piece of text, which must occur exactly once in its
file: a mutant whose text has gone stale stops the check instead of passing silently. For each mutant the git-tracked
files of this checkout are copied to a scratch directory (under .build/mutants/), the mutation is applied there, and
the mutant's killer tests run against that copy (same virtualenv, own ANSIBLE_HOME, own fleet names). It is killed
when pytest exits 1 and every named test failed; pytest exiting 0 means it survived; any other exit (usage error, collection
error, nothing collected, timeout) is an error of the check, not a kill.

The report goes to tests/output/mutants.md and mutants.json and to stdout ("mutants: K killed / N total"). The exit
status is non-zero when a mutant survives or errors. The killer tests are assumed to pass on the unmutated checkout:
scripts/test.sh runs this check after the whole suite has passed.

    python scripts/mutants.py                 # every mutant, two at a time
    python scripts/mutants.py --list          # the mutants and their killer tests
    python scripts/mutants.py --only NAME     # one mutant (repeatable)
    python scripts/mutants.py --only NAME --tests tests/unit   # which tests of a directory kill it
    python scripts/mutants.py --baseline      # the killer tests pass on an unmutated copy (no false kills)
"""

from __future__ import (absolute_import, division, print_function)

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import xml.etree.ElementTree as ET

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
UNIT_TIMEOUT = 180
BEHAVIOUR_TIMEOUT = 900
RUNNING = set()  # pytest processes under way (each leads its own process group)

LOCAL_ROLLBACK_DIGEST = ('tests/behaviour/test_local_rollback.py::'
                         'test_when_health_fails_after_switch_then_deploy_fails_and_every_captured_path_is_restored')
CALLBACK = 'tests/unit/plugins/callback/test_auto_rollback.py::'
RELEASE = 'tests/unit/plugins/module_utils/test_release.py::'
SNAPSHOT = 'tests/unit/plugins/module_utils/test_snapshot.py::'
JOURNAL = 'tests/unit/plugins/module_utils/test_journal.py::'
HEALTH = 'tests/unit/plugins/module_utils/test_health.py::'
SNAPSHOT_MODULE = 'tests/unit/plugins/modules/test_snapshot_module.py::'
DEPLOY_STATE_MODULE = 'tests/unit/plugins/modules/test_deploy_state_module.py::'
HEALTH_MODULE = 'tests/unit/plugins/modules/test_health_check_module.py::'
INCIDENT = 'tests/unit/plugins/plugin_utils/test_incident.py::'
REDACT = 'tests/unit/plugins/plugin_utils/test_redact.py::'
CRASH_SAFETY = 'tests/unit/plugins/module_utils/test_crash_safety.py::'
RESUME = 'tests/behaviour/test_rollback_resume.py::'
ANALYSIS = 'tests/unit/plugins/plugin_utils/test_analysis.py::'
METRIC_GATE = 'tests/unit/plugins/plugin_utils/test_metric_gate.py::'
CHANNELS = 'tests/unit/plugins/plugin_utils/test_channels.py::'
EMAIL_APPRISE = 'tests/unit/plugins/plugin_utils/test_channels_email_apprise.py::'
STAKEHOLDERS = 'tests/unit/plugins/plugin_utils/test_channels_stakeholders.py::'
ALERTS = 'tests/unit/plugins/plugin_utils/test_alerts.py::'
HTML = 'tests/unit/plugins/plugin_utils/test_html.py::'

CLOSE_EARLY = """    ensure_closed(ds, 'rolled_back', txn['run_id'], data={'reason': reason, 'verified': True})  # mutant
"""
UNDO_START = "    report['step'] = 'read the journal'\n"

# Each mutant: name, what it breaks (one line), file, old text (must occur exactly once), new text, and the killer
# tests (pytest node ids, files or directories) that must all fail.
DATABASE = 'tests/unit/plugins/module_utils/test_database.py::'

MUTANTS = [
    # --- database layer ------------------------------------------------------------------------------------------
    {
        'name': 'database-writes-since-ignored',
        'breaks': 'a rollback restores the database backup over rows written since the deploy without asking',
        'file': 'plugins/module_utils/kinds/database.py',
        'old': "        return sorted(since.union(data.get('written_during') or []))\n",
        'new': '        return []  # mutant\n',
        'tests': [
            DATABASE + 'test_a_restore_that_would_drop_rows_written_since_is_refused_unless_allowed[sqlite]',
        ],
        'covers': ['kind:database'],
    },
    {
        'name': 'database-down-steps-skipped',
        'breaks': 'the rollback runs no reverse migration and reports the database undone',
        'file': 'plugins/module_utils/kinds/database.py',
        'old': "        done, failed, error = self.engine.run_migrations(steps, 'down', self.o.get('run_id'))\n",
        'new': '        done, failed, error = [], None, None  # mutant\n',
        'tests': [
            DATABASE + 'test_the_rollback_runs_the_down_steps_of_the_abandoned_release_and_keeps_rows_written_since'
                       '[sqlite]',
            DATABASE + 'test_a_migration_failing_half_way_leaves_nothing_and_the_rollback_restores_the_schema[sqlite]',
        ],
        'covers': ['kind:database'],
    },
    {
        'name': 'database-missing-down-accepted',
        'breaks': 'a migration without a down step is applied without the operator accepting restore-only',
        'file': 'plugins/module_utils/kinds/database.py',
        'old': "        no_down = [m['version'] for m in pending if 'down' not in m and m['version'] not in restore_only]\n",
        'new': '        no_down = []  # mutant\n',
        'tests': [
            DATABASE + 'test_a_restore_that_would_drop_rows_written_since_is_refused_unless_allowed[sqlite]',
        ],
        'covers': ['kind:database'],
    },
    # --- archive staging ---
    {
        'name': 'archive-bound-not-checked-at-staging',
        'breaks': 'staging extracts a release archive whatever its members declare: a gzip bomb fills the disk',
        'file': 'plugins/module_utils/_release.py',
        'old': ("        check_archive_size(src, archive_size(src), rr.releases_dir, rr.free_bytes(rr.releases_dir),\n"
                "                           keep_free=keep_free, max_size=max_size, names=names)\n"),
        'new': '        pass  # mutant\n',
        'tests': [
            RELEASE + 'test_given_an_archive_declaring_more_than_the_free_space_when_staged_then_refused_naming_both_'
                      'and_nothing_written',
            RELEASE + 'test_given_the_space_to_keep_free_when_an_archive_would_eat_into_it_then_refused_naming_the_'
                      'setting',
            RELEASE + 'test_given_a_largest_release_when_the_archive_declares_more_then_refused_naming_both_and_'
                      'nothing_written',
            'tests/unit/plugins/modules/test_release_module.py::test_given_max_size_with_a_unit_when_the_archive_'
            'declares_more_then_fail_json_names_both_and_nothing_is_written',
            'tests/unit/plugins/module_utils/test_engine.py::test_stage_refuses_an_archive_larger_than_the_free_space_'
            'before_extracting_and_a_normal_one_stages',
        ],
        'covers': ['rule:archive-bound'],
    },
    {
        'name': 'archive-bound-not-checked-at-open',
        'breaks': 'the open phase lets a release archive too large for the disk open a transaction it cannot stage',
        'file': 'plugins/module_utils/_engine.py',
        'old': "        result['release_size'] = _bound_release(p, rr)\n",
        'new': "        result['release_size'] = None  # mutant\n",
        'tests': [
            'tests/unit/plugins/module_utils/test_engine.py::test_open_refuses_an_archive_larger_than_the_free_space_'
            'before_the_transaction_opens',
            'tests/unit/plugins/module_utils/test_engine.py::test_open_bounds_the_archive_by_max_release_size_unless_'
            'the_release_is_already_staged',
        ],
        'covers': ['rule:archive-bound'],
    },
    # --- restore -------------------------------------------------------------------------------------------------
    {
        'name': 'restore-noop',
        'breaks': 'the snapshot restore changes nothing and reports success',
        'file': 'plugins/module_utils/_snapshot.py',
        'old': '        if check_mode:\n            return result\n        for root in roots:\n',
        'new': '        if True:  # mutant\n            return result\n        for root in roots:\n',
        'tests': [
            # one end-to-end run (a real deploy rolled back by the callback) and the module on its own
            LOCAL_ROLLBACK_DIGEST,
            SNAPSHOT_MODULE + 'test_restored_brings_everything_back_with_diff_and_is_idempotent',
        ],
        'covers': ['kind:files'],
    },
    {
        'name': 'restore-module-dry-run',
        'breaks': 'the snapshot module runs state=restored as a dry run',
        'file': 'plugins/modules/snapshot.py',
        'old': "verify=module.params['verify'], check_mode=module.check_mode)",
        'new': "verify=module.params['verify'], check_mode=True)",
        'tests': [
            SNAPSHOT_MODULE + 'test_restored_brings_everything_back_with_diff_and_is_idempotent',
        ],
        'covers': ['kind:files'],
    },
    {
        'name': 'restore-self-check-skipped',
        'breaks': "the restore's own re-read of every path after writing (verify=true) is skipped",
        'file': 'plugins/module_utils/_snapshot.py',
        'old': '        if verify:\n            remaining, dummy = self.drift(manifest, full=True)\n',
        'new': '        if False:  # mutant\n            remaining, dummy = self.drift(manifest, full=True)\n',
        'tests': [
            SNAPSHOT + 'test_given_verify_when_the_restore_does_not_take_then_it_fails_listing_what_differs',
        ],
        'covers': ['kind:files'],
    },
    # --- verification --------------------------------------------------------------------------------------------
    {
        'name': 'verify-always-passes',
        'breaks': 'snapshot verification reports no drift whatever the paths hold',
        'file': 'plugins/module_utils/_snapshot.py',
        'old': "                    drift=found, changed=False)",
        'new': "                    drift=[], changed=False)",
        'tests': [
            SNAPSHOT + 'test_given_drift_when_verified_then_each_kind_is_reported_and_nothing_changes',
            SNAPSHOT_MODULE + 'test_verified_fails_on_drift_unless_verify_false',
        ],
        'covers': ['kind:files'],
    },
    {
        'name': 'drift-blind-to-content',
        'breaks': 'the drift check ignores file content',
        'file': 'plugins/module_utils/_snapshot.py',
        'old': "                if kind == 'file' and not self._content_matches(path, st, entry, full):",
        'new': "                if False:  # mutant",
        'tests': [
            SNAPSHOT + 'test_verify_rereads_content_even_when_stat_looks_unchanged',
            CRASH_SAFETY + 'test_snapshot_restore_interrupted_at_each_point_then_rerun_completes',
        ],
        'covers': ['kind:files'],
    },
    {
        'name': 'drift-blind-to-owner',
        'breaks': 'the drift check ignores the owner of a path',
        'file': 'plugins/module_utils/_snapshot.py',
        'old': "            if st.st_uid != entry['uid']:",
        'new': "            if False:  # mutant",
        'tests': [
            SNAPSHOT + 'test_given_drift_when_verified_then_each_kind_is_reported_and_nothing_changes',
        ],
        'covers': ['kind:files'],
    },
    # --- target choice, quarantine, retention --------------------------------------------------------------------
    {
        'name': 'target-previous-directory',
        'breaks': 'the rollback switches to the newest other release directory, not the last verified release',
        'file': 'plugins/module_utils/_release.py',
        'old': '    target = select_rollback_target(call.ledger, exclude=exclude, exists=call.exists)\n',
        'new': "    target = ([r for r in sorted(call.ledger['releases']) if r not in exclude and call.exists(r)]"
               " or [None])[-1]  # mutant\n",
        'tests': [
            RELEASE + 'test_given_failed_deploy_when_rolled_back_then_current_is_last_verified_not_previous_dir',
            RELEASE + 'test_given_previous_failed_release_when_rolled_back_then_never_chosen',
        ],
        'covers': ['kind:release'],
    },
    {
        'name': 'quarantine-not-recorded',
        'breaks': 'a rolled back release is not marked failed (it could be deployed again)',
        'file': 'plugins/module_utils/_release.py',
        'old': "            _mark(call.ledger, release_id, 'failed', call.t, event=event, reason=reason or 'rolled back')\n",
        'new': "            pass  # mutant\n",
        'tests': [
            CRASH_SAFETY + 'test_rollback_switch_interrupted_at_each_point',
            'tests/unit/plugins/modules/test_release_module.py::test_given_failed_release_when_rolled_back_through_main_then_last_verified_is_current',
        ],
        'covers': ['kind:release'],
    },
    {
        'name': 'retention-prunes-last-verified',
        'breaks': 'retention may remove the last verified release',
        'file': 'plugins/module_utils/_release.py',
        'old': "        kept[ledger['last_verified']] = 'last verified'\n",
        'new': "        pass  # mutant\n",
        'tests': [
            RELEASE + 'test_given_keep_zero_when_pruned_then_current_and_last_verified_survive',
            RELEASE + 'test_given_releases_when_planning_retention_then_protected_ones_stay',
        ],
        'covers': ['kind:release'],
    },
    # --- scope and failure detection -----------------------------------------------------------------------------
    {
        'name': 'scope-failed-hosts-only',
        'breaks': 'the rollback covers only the failed hosts, not every host with a transaction of this run',
        'file': 'plugins/plugin_utils/_incident.py',
        'old': '        return failed + [h for h in self.opened_order if h not in failed]\n',
        'new': '        return list(failed)  # mutant\n',
        'tests': [
            CALLBACK + 'test_rollback_of_every_opened_host',
            INCIDENT + 'test_scope_opened_vs_failed',
        ],
    },
    {
        'name': 'unreachable-not-counted',
        'breaks': 'an unreachable host with an open transaction is not counted as a failure',
        'file': 'plugins/callback/auto_rollback.py',
        'old': '        self._on_failed(result, False, unreachable=True)\n',
        'new': '        return  # mutant\n',
        'tests': [
            'tests/unit/plugins/callback/test_auto_rollback_unreachable.py',
        ],
    },
    {
        'name': 'failed-rollback-reported-ok',
        'breaks': 'a failed rollback is reported as rolled_back',
        'file': 'plugins/plugin_utils/_outcome.py',
        'old': "    return 'rolled_back' if reason is None else 'rollback_failed'\n",
        'new': "    return 'rolled_back'  # mutant\n",
        'tests': [
            CALLBACK + 'test_anything_but_a_clean_rollback_is_rollback_failed',
        ],
    },
    {
        'name': 'unverified-rollback-accepted',
        'breaks': 'a rollback whose restore could not be verified counts as a success',
        'file': 'plugins/plugin_utils/_launcher.py',
        'old': '    if unverified:\n',
        'new': '    if False:  # mutant\n',
        'tests': [
            CALLBACK + 'test_anything_but_a_clean_rollback_is_rollback_failed',
        ],
    },
    # --- lock and journal ----------------------------------------------------------------------------------------
    {
        'name': 'lock-not-taken',
        'breaks': 'deploy_state state=locked reports the lock taken but writes nothing',
        'file': 'plugins/module_utils/_journal.py',
        'old': '        if not check_mode and not ds.create_lock(new):\n',
        'new': '        if False:  # mutant\n',
        'tests': [
            JOURNAL + 'test_given_lock_held_by_another_run_when_locked_then_fails_fast_naming_holder',
            JOURNAL + 'test_given_no_lock_when_locked_then_lock_file_names_holder',
        ],
    },
    {
        'name': 'live-lock-taken-over',
        'breaks': 'a lock held by a live run that has not expired is taken over',
        'file': 'plugins/module_utils/_journal.py',
        'old': '        if not expired and not force:\n',
        'new': '        if False:  # mutant\n',
        'tests': [
            JOURNAL + 'test_given_lock_held_by_another_run_when_locked_then_fails_fast_naming_holder',
            DEPLOY_STATE_MODULE + 'test_lock_held_by_another_run_fails_fast_and_same_run_is_unchanged',
        ],
    },
    {
        'name': 'journal-closed-before-restore',
        'breaks': 'the rollback closes the transaction as rolled_back (and frees the lock) before it restores',
        'file': 'plugins/module_utils/_engine.py',
        'old': UNDO_START,
        'new': CLOSE_EARLY + UNDO_START,
        'tests': [
            RESUME + 'test_then_recover_finishes_the_restore_byte_for_byte',
        ],
    },
    {
        'name': 'preflight-ignores-dead-run',
        'breaks': "preflight does not finish the transaction that a dead run left open",
        'file': 'plugins/module_utils/_engine.py',
        'old': "    if p.get('recover', True) and unfinished and lock_free:\n",
        'new': "    if False and unfinished and lock_free:  # mutant\n",
        'tests': [
            RESUME + 'test_then_the_next_deploy_finishes_the_rollback_first',
        ],
    },
    # --- the transaction engine ------------------------------------------------------------------------------------
    {
        'name': 'rollback-service-not-restarted',
        'breaks': 'the single-call rollback restores files and the release pointer but leaves the old process serving',
        'file': 'plugins/module_utils/_engine.py',
        'old': '        service.undo({}, serving=serving)\n',
        'new': '        pass  # mutant\n',
        'tests': [
            'tests/behaviour/test_local_rollback.py::test_then_the_app_answers_the_previous_version_and_is_healthy',
        ],
        'covers': ['kind:service'],
    },
    {
        'name': 'never-applied-layer-undone',
        'breaks': 'the rollback undoes layers the transaction never applied (a release it never switched to)',
        'file': 'plugins/module_utils/_engine.py',
        'old': "    if 'layers' in txn:\n",
        'new': "    if False:  # mutant\n",
        'tests': [
            'tests/unit/plugins/module_utils/test_engine.py::test_rollback_in_one_call_undoes_a_partial_apply',
        ],
        'covers': ['kind:release'],
    },
    {
        'name': 'rollback-summary-names-no-running-release',
        'breaks': 'a rollback that never switched the release (it failed before the activation) names no release '
                  'running, though the one before it kept running',
        'file': 'plugins/module_utils/_engine.py',
        'old': "        running = ReleaseRoot(app_root).read_current() if has_release and app_root else None\n",
        'new': "        running = report['target_release']  # mutant\n",
        'tests': [
            'tests/unit/plugins/module_utils/test_rollback_words.py::'
            'test_a_rollback_before_the_activation_names_the_release_that_kept_running',
        ],
        'covers': ['rule:every-word-true'],
    },
    {
        'name': 'staged-rollback-summary-last-stage-only',
        'breaks': 'the last line of a staged rollback says what its last stage undid, not what every stage undid',
        'file': 'plugins/module_utils/_engine.py',
        'old': "             if s in done_before and s not in stages]\n",
        'new': "             if False]  # mutant\n",
        'tests': [
            'tests/unit/plugins/module_utils/test_rollback_words.py::'
            'test_the_last_call_of_a_staged_rollback_sums_up_every_stage_and_names_the_release_that_runs',
        ],
        'covers': ['rule:every-word-true'],
    },
    # --- commit confirmed ----------------------------------------------------------------------------------------
    {
        'name': 'confirm-commit-after-revert',
        'breaks': 'a confirmation that comes after the host reverted by itself is not refused',
        'file': 'plugins/module_utils/_engine.py',
        'old': "        _confirm.check_confirmation(ds, journal, p['run_id'], guarded_rollback)\n",
        'new': "        pass  # mutant\n",
        'tests': [
            'tests/unit/plugins/module_utils/test_confirm.py::test_an_unconfirmed_activation_is_reverted_by_the_host_itself',
        ],
        'covers': ['rule:commit-confirmed'],
    },
    {
        'name': 'confirm-commit-not-disarmed',
        'breaks': 'the commit leaves the revert timer armed: the host reverts a confirmed release at the deadline',
        'file': 'plugins/module_utils/_confirm.py',
        'old': "    _stop(confirm, ds)\n",
        'new': "    return None  # mutant\n",
        'tests': [
            'tests/unit/plugins/module_utils/test_confirm.py::test_activation_arms_a_detached_watchdog_and_the_commit_disarms_it',
        ],
        'covers': ['rule:commit-confirmed'],
    },
    # --- redaction -----------------------------------------------------------------------------------------------
    {
        'name': 'alerts-not-redacted',
        'breaks': 'alert payloads reach the spool and the webhook without redaction',
        'file': 'plugins/callback/auto_rollback.py',
        'old': '        payload = self.redactor.data(payload)\n',
        'new': '        payload = dict(payload)  # mutant\n',
        'tests': [
            'tests/unit/plugins/callback/test_auto_rollback_redaction.py',
        ],
    },
    {
        'name': 'failure-output-not-redacted',
        'breaks': "a failed task's output reaches alerts and reports unredacted",
        'file': 'plugins/plugin_utils/_incident.py',
        'old': '            message = self._redactor.text(first_line(result))\n',
        'new': '            message = first_line(result)  # mutant\n',
        'tests': [
            INCIDENT + 'test_failure_result_is_redacted_and_bounded',
        ],
    },
    {
        'name': 'secret-keys-not-recognised',
        'breaks': 'values under secret-looking keys (password, token, ...) are not redacted',
        'file': 'plugins/plugin_utils/_redact.py',
        'old': '    return bool(_SECRET_KEY_RE.search(key))\n',
        'new': '    return False  # mutant\n',
        'tests': [
            REDACT + 'test_secret_keys',
            REDACT + 'test_data_redacts_by_key_and_in_values_deeply',
        ],
    },
    # --- health checks -------------------------------------------------------------------------------------------
    {
        'name': 'health-retries-ignored',
        'breaks': 'a health check makes one attempt whatever its retries',
        'file': 'plugins/module_utils/_health.py',
        'old': '    total = 1 + max(0, int(retries))\n',
        'new': '    total = 1  # mutant\n',
        'tests': [
            HEALTH + 'test_given_always_failing_when_retries_2_then_three_attempts_and_no_trailing_sleep',
            HEALTH_MODULE + 'test_given_recovering_app_when_checked_then_passes_on_third_attempt',
        ],
    },
    {
        'name': 'health-status-not-compared',
        'breaks': 'an HTTP health check accepts any status code',
        'file': 'plugins/module_utils/_health.py',
        'old': '    if status not in status_code:\n',
        'new': '    if False:  # mutant\n',
        'tests': [
            HEALTH + 'test_given_503_when_probed_then_fails_naming_status_and_keeps_body',
            HEALTH + 'test_given_status_code_list_when_201_then_only_listed_codes_pass',
        ],
    },
    # --- metric gates --------------------------------------------------------------------------------------------
    {
        'name': 'canary-gross-regression-ignored',
        'breaks': 'a canary 100 times worse than the baseline on 7 of 10 samples passes (the Kayenta weakness)',
        'file': 'plugins/plugin_utils/_analysis.py',
        'old': '    gross = beyond_share > 0.5\n',
        'new': '    gross = False  # mutant\n',
        'tests': [
            ANALYSIS + 'test_seven_of_ten_samples_a_hundred_times_worse_fails',
        ],
    },
    {
        'name': 'no-data-ignored-is-a-pass',
        'breaks': 'a threshold with no data at all passes under no_data=ignore',
        'file': 'plugins/plugin_utils/_analysis.py',
        'old': "    return MARGINAL, '%s: nothing left to judge",
        'new': "    return PASS, '%s: nothing left to judge",
        'tests': [
            ANALYSIS + 'test_threshold_all_nan_is_never_a_pass',
        ],
    },
    {
        'name': 'metric-gate-report-empty',
        'breaks': 'the incident report shows no query, value or threshold of a failed metric gate',
        'file': 'plugins/plugin_utils/_incident.py',
        'old': "            'wave': gate.get('wave'), 'decision': gate.get('decision'), 'rows': rows}",
        'new': "            'wave': gate.get('wave'), 'decision': gate.get('decision'), 'rows': []}",
        'tests': [
            INCIDENT + 'test_report_shows_the_metric_gate_queries_values_and_thresholds',
        ],
    },
    # --- metric analysis ---
    {
        'name': 'decrease-shift-ignored',
        'breaks': 'a metric where a fall is bad never has a bad shift: a success rate falling from 0.99 to 0.80 passes',
        'file': 'plugins/plugin_utils/_analysis.py',
        'old': "'decrease': relative < -tolerance,",
        'new': "'decrease': False,",
        'tests': [
            ANALYSIS + 'test_a_success_rate_falling_from_99_to_80_percent_fails_at_the_default_tolerance',
            ANALYSIS + 'test_a_fall_that_only_dominance_shows_fails',
            ANALYSIS + 'test_a_fall_that_only_the_gross_regression_rule_shows_fails',
        ],
        'covers': ['rule:decrease-shift'],
    },
    {
        'name': 'decrease-tolerance-ignored',
        'breaks': 'any significant fall of a metric where a fall is bad fails it, however small against the tolerance',
        'file': 'plugins/plugin_utils/_analysis.py',
        'old': "'decrease': relative < -tolerance,",
        'new': "'decrease': relative < 0,",
        'tests': [
            ANALYSIS + 'test_a_success_rate_moving_by_noise_passes_even_when_significant',
        ],
        'covers': ['rule:decrease-shift'],
    },
    {
        'name': 'share-fall-measured-against-its-value',
        'breaks': 'the fall of a share near 1 is measured against its value: 0.99 to 0.80 is 19 %, within tolerance',
        'file': 'plugins/plugin_utils/_analysis.py',
        'old': '        if room < scale:\n',
        'new': '        if False:  # mutant\n',
        'tests': [
            ANALYSIS + 'test_a_success_rate_falling_from_99_to_80_percent_fails_at_the_default_tolerance',
        ],
        'covers': ['rule:decrease-shift'],
    },
    {
        'name': 'decrease-dominance-ignored',
        'breaks': 'a canary lower than the baseline on most pairs passes a metric where a fall is bad',
        'file': 'plugins/plugin_utils/_analysis.py',
        'old': "'decrease': (1 - a) >= dominance,",
        'new': "'decrease': False,",
        'tests': [
            ANALYSIS + 'test_a_fall_that_only_dominance_shows_fails',
        ],
        'covers': ['rule:decrease-dominance'],
    },
    {
        'name': 'decrease-gross-regression-ignored',
        'breaks': 'a canary 100 times lower than the baseline on 7 of 10 samples passes a metric where a fall is bad',
        'file': 'plugins/plugin_utils/_analysis.py',
        'old': "'decrease': below,",
        'new': "'decrease': 0,",
        'tests': [
            ANALYSIS + 'test_a_fall_that_only_the_gross_regression_rule_shows_fails',
        ],
        'covers': ['rule:decrease-gross'],
    },
    {
        'name': 'direction-not-stated',
        'breaks': "a metric's reason does not say which way is bad for it",
        'file': 'plugins/plugin_utils/_analysis.py',
        'old': "BAD_WAYS = {'increase': 'a rise is bad', 'decrease': 'a fall is bad',",
        'new': "BAD_WAYS = {'increase': 'a shift is judged', 'decrease': 'a shift is judged',",
        'tests': [
            ANALYSIS + 'test_the_reason_says_which_way_is_bad',
        ],
        'covers': ['rule:direction-stated'],
    },
    {
        'name': 'valid-share-not-checked',
        'breaks': 'a critical comparison with 27 of 30 canary samples missing is judged on the 3 left and passes',
        'file': 'plugins/plugin_utils/_analysis.py',
        'old': "              if side['valid_share'] < min_valid_share]",
        'new': '              if False]',
        'tests': [
            ANALYSIS + 'test_a_critical_metric_with_most_samples_missing_is_no_data_not_a_pass',
            METRIC_GATE + 'test_a_critical_comparison_with_27_of_30_canary_samples_missing_fails_the_gate',
        ],
        'covers': ['rule:valid-share'],
    },
    {
        'name': 'valid-share-not-passed-to-the-analysis',
        'breaks': "the gate judges every comparison whatever share of its samples is missing (min_valid_share unused)",
        'file': 'plugins/plugin_utils/_metric_gate.py',
        'old': "min_valid_share=float(0.5 if entry.get('min_valid_share') is None else entry['min_valid_share']),",
        'new': 'min_valid_share=0.0,',
        'tests': [
            METRIC_GATE + 'test_a_critical_comparison_with_27_of_30_canary_samples_missing_fails_the_gate',
        ],
        'covers': ['rule:valid-share'],
    },
    {
        'name': 'series-pick-first-value',
        'breaks': 'a threshold over several series judges the first one only: another below the min or above the '
                  'max passes',
        'file': 'plugins/plugin_utils/_metric_gate.py',
        'old': '    low = min(numbers, key=lambda item: item[1])\n    high = max(numbers, key=lambda item: item[1])\n',
        'new': '    low = high = numbers[0]  # mutant\n',
        'tests': [
            METRIC_GATE + 'test_a_series_below_the_minimum_fails_though_another_one_is_the_highest',
            METRIC_GATE + 'test_a_series_above_the_maximum_fails_though_it_is_not_the_first',
            METRIC_GATE + 'test_a_series_below_a_lone_minimum_fails_though_it_is_not_the_first',
        ],
        'covers': ['rule:series-pick'],
    },
    {
        'name': 'series-min-hidden-by-max',
        'breaks': 'with both a min and a max, only the highest series is judged: a series below the min is hidden',
        'file': 'plugins/plugin_utils/_metric_gate.py',
        'old': '    if minimum is not None and low[1] < minimum:\n        return low[1], breaches\n',
        'new': '',
        'tests': [
            METRIC_GATE + 'test_a_series_below_the_minimum_fails_though_another_one_is_the_highest',
        ],
        'covers': ['rule:series-pick'],
    },
    {
        'name': 'breaching-series-not-named',
        'breaks': "a failed threshold over several series does not say which series breached",
        'file': 'plugins/plugin_utils/_metric_gate.py',
        'old': "            result['reason'] += '; %s' % _breach_text(breaching, entry)\n",
        'new': '            pass  # mutant\n',
        'tests': [
            METRIC_GATE + 'test_a_series_below_the_minimum_fails_though_another_one_is_the_highest',
            METRIC_GATE + 'test_a_series_above_the_maximum_fails_though_it_is_not_the_first',
        ],
        'covers': ['rule:series-pick'],
    },
    # --- load balancer traffic -----------------------------------------------------------------------------------
    {
        'name': 'traffic-state-file-not-saved',
        'breaks': "HAProxy's server-state-file is not written, so a reload brings a drained server back",
        'file': 'plugins/module_utils/kinds/traffic.py',
        'old': "            api.save_state(self.o['state_file'])\n",
        'new': '            pass  # mutant\n',
        'tests': [
            'tests/behaviour/test_traffic_layer.py::'
            'test_a_drained_haproxy_server_stays_drained_across_a_reload_and_a_restored_one_stays_ready',
        ],
        'covers': ['kind:traffic', 'rule:traffic.haproxy'],
    },
    {
        'name': 'traffic-undo-noop',
        'breaks': 'undoing the traffic layer leaves HAProxy as the deploy set it',
        'file': 'plugins/module_utils/kinds/traffic.py',
        'old': "            changed = self._haproxy_set(current, target, strict=False)\n",
        'new': "            changed = False  # mutant\n",
        'tests': [
            'tests/behaviour/test_traffic_layer.py::test_haproxy_switch_then_rollback_puts_traffic_back_and_proves_it',
        ],
        'covers': ['kind:traffic', 'rule:traffic.haproxy'],
    },
    # --- traffic weights ---
    {
        'name': 'traffic-undo-keeps-the-weights',
        'breaks': "undoing the traffic layer puts HAProxy's server states back but leaves the weights the deploy set",
        'file': 'plugins/module_utils/kinds/traffic.py',
        'old': "            weight = want['weight'] if want['weight'] != now['weight'] else None\n",
        'new': "            weight = want['weight'] if want['weight'] != now['weight'] and strict else None  # mutant\n",
        'tests': [
            'tests/behaviour/test_traffic_layer.py::test_haproxy_switch_then_rollback_puts_traffic_back_and_proves_it',
        ],
        'covers': ['kind:traffic'],
    },
    {
        'name': 'delegated-transaction-misattributed',
        'breaks': "a load balancer's transaction opened by a delegated task counts as the app host's: not rolled back",
        'file': 'plugins/plugin_utils/_events.py',
        'old': "    named = txn.get('inventory_host') if isinstance(txn, dict) else None\n",
        'new': "    named = None  # mutant\n",
        'tests': [
            'tests/unit/plugins/callback/test_auto_rollback.py::'
            'test_a_delegated_transaction_is_rolled_back_on_the_host_it_names',
        ],
        'covers': ['kind:traffic'],
    },
    # --- alert channels and reports ------------------------------------------------------------------------------
    {
        'name': 'pagerduty-dedup-key-per-event',
        'breaks': "each PagerDuty event of a run has its own dedup_key: the resolve never closes the trigger's incident",
        'file': 'plugins/plugin_utils/_channels.py',
        'old': '            return self._dedup_keys.setdefault(run, key)\n',
        'new': "            return '%s/%s' % (key, payload.get('event'))  # mutant\n",
        'tests': [
            CHANNELS + 'test_pagerduty_trigger_then_resolve_with_one_dedup_key',
            CHANNELS + 'test_pagerduty_critical_retrigger_when_the_rollback_fails',
        ],
        'covers': ['channel:pagerduty'],
    },
    {
        'name': 'pagerduty-dedup-key-from-alert-time',
        'breaks': "the PagerDuty dedup_key is made from the alert's time: a resolve sent later (a replay) opens a "
                  'second incident',
        'file': 'plugins/plugin_utils/_channels.py',
        'old': "        key = 'failsafe.deploy/%s/%s/%s' % (deployment_name(payload), _join(payload.get('releases')) or '-', run)\n",
        'new': "        key = 'failsafe.deploy/%s/%s/%s' % (deployment_name(payload), _join(payload.get('releases')) or '-',\n"
               "                                            payload.get('at'))  # mutant\n",
        'tests': [
            CHANNELS + 'test_pagerduty_resolve_sent_later_by_a_new_channel_resolves_the_incident_of_the_run',
        ],
        'covers': ['channel:pagerduty'],
    },
    {
        'name': 'pagerduty-dedup-key-not-sent',
        'breaks': 'PagerDuty events carry no dedup_key: the resolve is refused, every trigger is a new incident',
        'file': 'plugins/plugin_utils/_channels.py',
        'old': "        body = {'routing_key': self._routing_key, 'event_action': action, 'dedup_key': self.dedup_key(payload),\n",
        'new': "        body = {'routing_key': self._routing_key, 'event_action': action,  # mutant\n",
        'tests': [
            CHANNELS + 'test_pagerduty_trigger_then_resolve_with_one_dedup_key',
            CHANNELS + 'test_pagerduty_sends_no_null_fields_when_the_run_knows_little',
        ],
        'covers': ['channel:pagerduty'],
    },
    {
        'name': 'pagerduty-no-resolve-after-rollback',
        'breaks': 'after a clean rollback PagerDuty gets no resolve: the incident stays open and pages on',
        'file': 'plugins/plugin_utils/_channels.py',
        'old': "            return [self._event(payload, 'resolve'), self._change(payload)]\n",
        'new': '            return [self._change(payload)]  # mutant\n',
        'tests': [
            CHANNELS + 'test_pagerduty_trigger_then_resolve_with_one_dedup_key',
            CHANNELS + 'test_pagerduty_resolve_sent_later_by_a_new_channel_resolves_the_incident_of_the_run',
        ],
        'covers': ['channel:pagerduty'],
    },
    {
        'name': 'email-sends-nothing',
        'breaks': 'the email channel talks to the SMTP server but never hands it the message, and reports delivered',
        'file': 'plugins/plugin_utils/_channels.py',
        'old': '            refused = client.send_message(msg, from_addr=self.sender, to_addrs=self.recipients)\n',
        'new': '            refused = {}  # mutant\n',
        'tests': [
            EMAIL_APPRISE + 'test_given_starttls_and_auth_when_a_deploy_fails_then_the_server_gets_the_incident_'
                            'and_no_file_holds_the_password',
            STAKEHOLDERS + 'test_given_a_notice_when_sent_to_the_stakeholder_email_channel_then_the_server_gets_it_'
                           'in_plain_text',
        ],
        'covers': ['channel:email', 'channel:stakeholders'],
    },
    {
        'name': 'email-starttls-skipped',
        'breaks': 'the email channel never starts TLS, whatever email_starttls says',
        'file': 'plugins/plugin_utils/_channels.py',
        'old': '            if self.starttls:\n',
        'new': '            if False:  # mutant\n',
        'tests': [
            EMAIL_APPRISE + 'test_given_starttls_and_auth_when_a_deploy_fails_then_the_server_gets_the_incident_'
                            'and_no_file_holds_the_password',
            STAKEHOLDERS + 'test_given_a_notice_when_sent_to_the_stakeholder_email_channel_then_the_server_gets_it_'
                           'in_plain_text',
        ],
        'covers': ['channel:email', 'channel:stakeholders'],
    },
    {
        'name': 'email-certificate-not-verified',
        'breaks': "STARTTLS accepts any certificate: the SMTP password goes to whoever answers on the server's address",
        'file': 'plugins/plugin_utils/_channels.py',
        'old': '        return ssl.create_default_context(cafile=self.ca_file)\n',
        'new': '        return ssl._create_unverified_context()  # mutant\n',
        'tests': [
            EMAIL_APPRISE + 'test_given_an_untrusted_certificate_then_no_password_and_no_message_is_sent',
        ],
        'covers': ['channel:email'],
    },
    {
        'name': 'email-auth-skipped',
        'breaks': 'the email channel never authenticates (AUTH) with the username and password it was given',
        'file': 'plugins/plugin_utils/_channels.py',
        'old': "                client.login(self.username, self._password or '')\n",
        'new': '                pass  # mutant\n',
        'tests': [
            EMAIL_APPRISE + 'test_given_starttls_and_auth_when_a_deploy_fails_then_the_server_gets_the_incident_'
                            'and_no_file_holds_the_password',
            EMAIL_APPRISE + 'test_given_a_wrong_password_then_nothing_is_retried_and_the_error_never_holds_it',
        ],
        'covers': ['channel:email'],
    },
    {
        'name': 'email-password-sent-in-clear',
        'breaks': 'with STARTTLS off the SMTP password is sent in clear text to a server that is not this machine',
        'file': 'plugins/plugin_utils/_channels.py',
        'old': "                if not self.starttls and self.host not in ('localhost', '127.0.0.1', '::1'):\n",
        'new': '                if False:  # mutant\n',
        'tests': [
            EMAIL_APPRISE + 'test_given_no_starttls_and_a_remote_server_then_the_password_is_never_sent_in_clear_text',
        ],
        'covers': ['channel:email'],
    },
    {
        'name': 'slack-sends-nothing',
        'breaks': 'the Slack channel posts nothing for an alert',
        'file': 'plugins/plugin_utils/_channels.py',
        'old': '        return [(self._url, self.message(payload))]\n\n\n# Microsoft Teams',
        'new': '        return []  # mutant\n\n\n# Microsoft Teams',
        'tests': [
            CHANNELS + 'test_slack_block_kit_within_limits_for_300_hosts_with_long_errors',
            CHANNELS + 'test_slack_escapes_markup',
        ],
        'covers': ['channel:slack'],
    },
    {
        'name': 'slack-details-over-3000-characters',
        'breaks': "a long error goes to Slack whole: a section over 3,000 characters, and Slack refuses the alert",
        'file': 'plugins/plugin_utils/_channels.py',
        'old': "                _mrkdwn(details), SLACK_SECTION_MAX - 8, tail='\\n... (cut)')}})\n",
        'new': '                _mrkdwn(details), 10 ** 6)}})  # mutant\n',
        'tests': [
            CHANNELS + 'test_slack_block_kit_within_limits_for_300_hosts_with_long_errors',
        ],
        'covers': ['channel:slack'],
    },
    {
        'name': 'slack-hosts-over-3000-characters',
        'breaks': 'every host goes into one Slack section: over 3,000 characters for 300 hosts, and Slack refuses it',
        'file': 'plugins/plugin_utils/_channels.py',
        'old': "                [_mrkdwn(h) for h in hosts], SLACK_SECTION_MAX - len(head), bullet='\\u2022 ')}})\n",
        'new': "                [_mrkdwn(h) for h in hosts], 10 ** 6, bullet='\\u2022 ')}})  # mutant\n",
        'tests': [
            CHANNELS + 'test_slack_block_kit_within_limits_for_300_hosts_with_long_errors',
        ],
        'covers': ['channel:slack'],
    },
    {
        'name': 'slack-more-than-ten-fields',
        'breaks': 'every fact goes into one Slack section: more than 10 fields, and Slack refuses the alert',
        'file': 'plugins/plugin_utils/_channels.py',
        'old': "        for start in range(0, len(fields), SLACK_MAX_FIELDS):\n"
               "            blocks.append({'type': 'section', 'fields': fields[start:start + SLACK_MAX_FIELDS]})\n",
        'new': "        blocks.append({'type': 'section', 'fields': fields})  # mutant\n",
        'tests': [
            CHANNELS + 'test_slack_block_kit_within_limits_for_300_hosts_with_long_errors',
            CHANNELS + 'test_slack_escapes_markup',
        ],
        'covers': ['channel:slack'],
    },
    {
        'name': 'slack-markup-not-escaped',
        'breaks': "an error text reaches Slack as markup: '<!channel>' in a failed task's output pings the whole channel",
        'file': 'plugins/plugin_utils/_channels.py',
        'old': "    return str(text).replace('&', '&amp;').replace('<', '&lt;').replace('>', '&gt;')\n",
        'new': '    return str(text)  # mutant\n',
        'tests': [
            CHANNELS + 'test_slack_escapes_markup',
        ],
        'covers': ['channel:slack', 'channel:stakeholders_slack'],
    },
    {
        'name': 'teams-sends-nothing',
        'breaks': 'the Teams channel posts nothing for an alert',
        'file': 'plugins/plugin_utils/_channels.py',
        'old': '        return [(self._url, self.message(payload))]\n\n\n# Email (SMTP)',
        'new': '        return []  # mutant\n\n\n# Email (SMTP)',
        'tests': [
            CHANNELS + 'test_teams_adaptive_card_under_28_kb_for_300_hosts_with_long_errors',
        ],
        'covers': ['channel:teams'],
    },
    {
        'name': 'teams-card-version-1-5',
        'breaks': 'the Teams card says Adaptive Card 1.5, which Teams Workflows refuses (1.4 is the highest it takes)',
        'file': 'plugins/plugin_utils/_channels.py',
        'old': "                'version': '1.4', 'body': body, 'msteams': {'width': 'Full'}}\n",
        'new': "                'version': '1.5', 'body': body, 'msteams': {'width': 'Full'}}  # mutant\n",
        'tests': [
            CHANNELS + 'test_teams_adaptive_card_under_28_kb_for_300_hosts_with_long_errors',
        ],
        'covers': ['channel:teams'],
    },
    {
        'name': 'teams-card-not-in-a-message',
        'breaks': 'Teams gets the bare Adaptive Card, not a message with the card as its one attachment',
        'file': 'plugins/plugin_utils/_channels.py',
        'old': "        return {'type': 'message', 'attachments': [{'contentType': "
               "'application/vnd.microsoft.card.adaptive',\n"
               "                                                    'contentUrl': None, 'content': card}]}\n",
        'new': '        return card  # mutant\n',
        'tests': [
            CHANNELS + 'test_teams_adaptive_card_under_28_kb_for_300_hosts_with_long_errors',
        ],
        'covers': ['channel:teams'],
    },
    {
        'name': 'teams-card-not-shrunk',
        'breaks': 'the Teams message is never shrunk under 28 KB: an error that escapes to many bytes makes Teams '
                  'refuse it',
        'file': 'plugins/plugin_utils/_channels.py',
        'old': '            if size <= TEAMS_BUDGET_BYTES or (details_max == 0 and hosts_max <= 200):\n',
        'new': '            if True:  # mutant\n',
        'tests': [
            CHANNELS + 'test_teams_card_is_shrunk_under_28_kb_when_the_error_text_is_not_ascii',
        ],
        'covers': ['channel:teams'],
    },
    {
        'name': 'stakeholder-email-sends-nothing',
        'breaks': 'the stakeholders get no notice by email',
        'file': 'plugins/plugin_utils/_channels.py',
        'old': "        if payload.get('event') != 'stakeholder_notice':\n            return []\n"
               "        return [(None, self.message(payload))]\n",
        'new': '        return []  # mutant\n',
        'tests': [
            STAKEHOLDERS + 'test_given_a_notice_when_sent_to_the_stakeholder_email_channel_then_the_server_gets_it_'
                           'in_plain_text',
            STAKEHOLDERS + 'test_notices_reach_the_stakeholders_only_and_alerts_the_on_call_channels_only',
        ],
        'covers': ['channel:stakeholders'],
    },
    {
        'name': 'stakeholder-slack-sends-nothing',
        'breaks': "the stakeholders' Slack channel gets no notice",
        'file': 'plugins/plugin_utils/_channels.py',
        'old': "        if payload.get('event') != 'stakeholder_notice':\n            return []\n"
               "        return [(self._url, self.message(payload))]\n",
        'new': '        return []  # mutant\n',
        'tests': [
            STAKEHOLDERS + 'test_given_a_notice_when_sent_to_the_stakeholder_slack_channel_then_its_webhook_gets_'
                           'subject_and_text',
            STAKEHOLDERS + 'test_notices_reach_the_stakeholders_only_and_alerts_the_on_call_channels_only',
        ],
        'covers': ['channel:stakeholders_slack'],
    },
    {
        'name': 'notices-reach-on-call-channels',
        'breaks': 'a stakeholder notice goes to every channel, the on-call Slack and mailbox too',
        'file': 'plugins/plugin_utils/_alerts.py',
        'old': "            wanted = worker.name in only if only is not None else getattr(worker.channel, 'takes_alerts', "
               "True)\n",
        'new': '            wanted = True  # mutant\n',
        'tests': [
            STAKEHOLDERS + 'test_notices_reach_the_stakeholders_only_and_alerts_the_on_call_channels_only',
        ],
        'covers': ['channel:stakeholders', 'channel:stakeholders_slack'],
    },
    {
        'name': 'alerts-spooled-for-stakeholders',
        'breaks': 'alerts are spooled as meant for the stakeholder channels, which never take them (a replay retries '
                  'them forever)',
        'file': 'plugins/plugin_utils/_alerts.py',
        'old': "        self._alert_workers = [w for w in self.channels if getattr(w.channel, 'takes_alerts', True)]\n",
        'new': '        self._alert_workers = list(self.channels)  # mutant\n',
        'tests': [
            STAKEHOLDERS + 'test_notices_reach_the_stakeholders_only_and_alerts_the_on_call_channels_only',
        ],
        'covers': ['channel:stakeholders', 'channel:stakeholders_slack'],
    },
    {
        'name': 'apprise-notify-not-called',
        'breaks': 'the Apprise channel reports the alert delivered without notifying any URL',
        'file': 'plugins/plugin_utils/_channels.py',
        'old': "                ok = notifier.notify(title=_clip(body['title'], 250), body=body['body'],\n"
               "                                     body_format=self._apprise.NotifyFormat.TEXT)\n",
        'new': '                ok = True  # mutant\n',
        'tests': [
            EMAIL_APPRISE + 'test_given_apprise_urls_then_every_url_gets_the_alert',
        ],
        'covers': ['channel:apprise'],
    },
    {
        'name': 'apprise-first-url-only',
        'breaks': 'of several Apprise URLs only the first gets the alert',
        'file': 'plugins/plugin_utils/_channels.py',
        'old': "    return [url for url in re.split(r'\\s+', value or '') if url]\n",
        'new': "    return [url for url in re.split(r'\\s+', value or '') if url][:1]  # mutant\n",
        'tests': [
            EMAIL_APPRISE + 'test_given_apprise_urls_then_every_url_gets_the_alert',
        ],
        'covers': ['channel:apprise'],
    },
    {
        'name': 'webhook-never-posted',
        'breaks': 'the dispatcher spools every alert but never hands it to the generic webhook',
        'file': 'plugins/plugin_utils/_alerts.py',
        'old': '            self._webhook.put(payload, record)\n',
        'new': '            pass  # mutant\n',
        'tests': [
            ALERTS + 'test_dispatcher_delivers_in_order_and_spools_at_once',
            ALERTS + 'test_dispatcher_reports_a_dead_webhook_and_flush_is_bounded',
        ],
        'covers': ['channel:webhook'],
    },
    {
        'name': 'webhook-posts-an-empty-body',
        'breaks': 'the generic webhook posts an empty JSON object instead of the alert',
        'file': 'plugins/plugin_utils/_alerts.py',
        'old': "            body = json.dumps(payload, sort_keys=True, default=str).encode('utf-8')\n",
        'new': "            body = b'{}'  # mutant\n",
        'tests': [
            ALERTS + 'test_webhook_posts_json',
            ALERTS + 'test_dispatcher_delivers_in_order_and_spools_at_once',
        ],
        'covers': ['channel:webhook'],
    },
    {
        'name': 'webhook-5xx-not-retried',
        'breaks': 'the generic webhook gives up on the first HTTP 500/503/429 instead of retrying with backoff',
        'file': 'plugins/plugin_utils/_alerts.py',
        'old': '                retry = exc.code in _RETRY_STATUS\n',
        'new': '                retry = False  # mutant\n',
        'tests': [
            ALERTS + 'test_webhook_retries_on_500_then_succeeds',
            ALERTS + 'test_dispatcher_delivers_in_order_and_spools_at_once',
        ],
        'covers': ['channel:webhook'],
    },
    {
        'name': 'html-timeline-picture-missing',
        'breaks': 'the HTML report has no timeline picture (no lanes, bars, failure marker or rollback band)',
        'file': 'plugins/plugin_utils/_html.py',
        'old': "        '<div class=\"timeline\">%s</div>' % render_timeline(incident),\n",
        'new': "        '<div class=\"timeline\"></div>',  # mutant\n",
        'tests': [
            HTML + 'test_a_rolled_back_incident_has_lanes_bars_failure_band_and_alerts',
            HTML + 'test_write_report_writes_the_html_beside_json_and_markdown',
        ],
        'covers': ['report:html'],
    },
    {
        'name': 'html-outcome-always-rolled-back',
        'breaks': 'the HTML report says ROLLED BACK whatever the outcome, a failed rollback included',
        'file': 'plugins/plugin_utils/_html.py',
        'old': '    label = OUTCOME_LABELS.get(outcome, str(outcome).upper())\n',
        'new': "    label = OUTCOME_LABELS['rolled_back']  # mutant\n",
        'tests': [
            HTML + 'test_rollback_failed_is_prominent_with_cause_layers_and_checks',
            HTML + 'test_an_incident_without_rollback_or_failures_still_renders[no_rollback]',
        ],
        'covers': ['report:html'],
    },
    {
        'name': 'html-failure-not-marked',
        'breaks': 'the HTML timeline does not mark the failed task on its host',
        'file': 'plugins/plugin_utils/_html.py',
        'old': "        if event in ('failure', 'unreachable') and host:\n",
        'new': '        if False:  # mutant\n',
        'tests': [
            HTML + 'test_a_rolled_back_incident_has_lanes_bars_failure_band_and_alerts',
            HTML + 'test_write_report_writes_the_html_beside_json_and_markdown',
        ],
        'covers': ['report:html'],
    },
    {
        'name': 'html-rollback-band-missing',
        'breaks': 'the HTML timeline does not show when the rollback ran',
        'file': 'plugins/plugin_utils/_html.py',
        'old': '    if r_start is not None:\n',
        'new': '    if False:  # mutant\n',
        'tests': [
            HTML + 'test_a_rolled_back_incident_has_lanes_bars_failure_band_and_alerts',
        ],
        'covers': ['report:html'],
    },
    {
        'name': 'html-host-rollback-always-ok',
        'breaks': "the HTML timeline draws every host's rollback as a success, the failed one too",
        'file': 'plugins/plugin_utils/_html.py',
        'old': "            out.append(_marker('rollback-host-marker status-%s' % _token(entry.get('status') or 'unknown'), x(t),\n",
        'new': "            out.append(_marker('rollback-host-marker status-ok', x(t),  # mutant\n",
        'tests': [
            HTML + 'test_rollback_failed_is_prominent_with_cause_layers_and_checks',
        ],
        'covers': ['report:html'],
    },
    {
        'name': 'html-values-not-escaped',
        'breaks': 'values from the run reach the HTML report unescaped: a task name can inject markup or script',
        'file': 'plugins/plugin_utils/_html.py',
        'old': '    return html.escape(str(value), quote=True)\n',
        'new': '    return str(value)  # mutant\n',
        'tests': [
            HTML + 'test_every_value_is_escaped',
        ],
        'covers': ['report:html'],
    },
    {
        'name': 'html-report-not-written',
        'breaks': 'write_report names an HTML report in the incident but never writes the file',
        'file': 'plugins/plugin_utils/_incident.py',
        'old': '    write_text_atomic(html_path, page)\n',
        'new': '    pass  # mutant\n',
        'tests': [
            HTML + 'test_write_report_writes_the_html_beside_json_and_markdown',
            INCIDENT + 'test_report_json_and_markdown',
        ],
        'covers': ['report:html'],
    },
    {
        'name': 'html-fault-loses-the-reports',
        'breaks': 'a fault in drawing the HTML report escapes write_report: no HTML page says what happened',
        'file': 'plugins/plugin_utils/_incident.py',
        'old': '        page = render_html_error(incident, exc)\n',
        'new': '        raise  # mutant\n',
        'tests': [
            HTML + 'test_a_fault_in_drawing_leaves_json_markdown_and_an_html_page_that_says_so',
        ],
        'covers': ['report:html'],
    },
    {
        'name': 'markdown-outcome-always-rolled-back',
        'breaks': 'the Markdown report says ROLLED BACK whatever the outcome, a failed rollback included',
        'file': 'plugins/plugin_utils/_incident.py',
        'old': '    label = OUTCOME_LABELS.get(outcome, str(outcome).upper())\n',
        'new': "    label = OUTCOME_LABELS['rolled_back']  # mutant\n",
        'tests': [
            INCIDENT + 'test_markdown_of_a_failed_rollback_is_loud',
        ],
        'covers': ['report:markdown'],
    },
    {
        'name': 'markdown-failed-rollback-not-loud',
        'breaks': 'the Markdown report of a failed rollback has no ROLLBACK FAILED warning at its top',
        'file': 'plugins/plugin_utils/_incident.py',
        'old': "    if outcome == 'rollback_failed':\n        lines += ['> **ROLLBACK FAILED.**",
        'new': "    if False:  # mutant\n        lines += ['> **ROLLBACK FAILED.**",
        'tests': [
            INCIDENT + 'test_markdown_of_a_failed_rollback_is_loud',
        ],
        'covers': ['report:markdown'],
    },
    {
        'name': 'markdown-per-host-results-missing',
        'breaks': "the Markdown report lists no host's rollback result",
        'file': 'plugins/plugin_utils/_incident.py',
        'old': "    for host, info in sorted((rollback.get('hosts') or {}).items()):\n",
        'new': '    for host, info in []:  # mutant\n',
        'tests': [
            INCIDENT + 'test_report_json_and_markdown',
        ],
        'covers': ['report:markdown'],
    },
    # --- layer kinds ---
    {
        'name': 'nginx-include-not-restored',
        'breaks': "undoing the nginx traffic layer leaves the deploy's upstream include file in place",
        'file': 'plugins/module_utils/kinds/traffic.py',
        'old': '            self._nginx_write(content, keep=current)\n',
        'new': '            pass  # mutant\n',
        'tests': [
            'tests/behaviour/test_traffic_layer.py::'
            'test_nginx_switch_then_rollback_puts_the_previous_file_back_and_reloads',
        ],
        'covers': ['kind:traffic', 'rule:traffic.nginx'],
    },
    {
        'name': 'nginx-restore-not-reloaded',
        'breaks': 'the nginx undo puts the include file back but does not reload: nginx keeps the new upstream',
        'file': 'plugins/module_utils/kinds/traffic.py',
        'old': '            self._nginx_write(content, keep=current)\n',
        'new': '            self._put(content)  # mutant\n',
        'tests': [
            'tests/behaviour/test_traffic_layer.py::'
            'test_nginx_switch_then_rollback_puts_the_previous_file_back_and_reloads',
        ],
        'covers': ['kind:traffic', 'rule:traffic.nginx'],
    },
    {
        'name': 'database-backup-not-restored',
        'breaks': 'a database undo that must restore the backup restores nothing and reports the restore done',
        'file': 'plugins/module_utils/kinds/database.py',
        'old': '        self.engine.restore(backup)\n        state = self.engine.state()\n',
        'new': "        state = backup['state']  # mutant\n",
        'tests': [
            DATABASE + 'test_a_restore_with_no_writes_since_needs_no_permission[sqlite]',
            DATABASE + 'test_a_restore_that_would_drop_rows_written_since_is_refused_unless_allowed[sqlite]',
        ],
        'covers': ['kind:database'],
    },
    {
        'name': 'terraform-undo-does-nothing',
        'breaks': 'undoing the terraform layer leaves the new configuration applied (infrastructure not rolled back)',
        'file': 'plugins/module_utils/kinds/terraform.py',
        'old': '    def undo(self, record):\n',
        'new': "    def undo(self, record):\n        return {'report': {'undid': 'nothing'}}  # mutant\n",
        'tests': [
            'tests/unit/plugins/module_utils/test_terraform.py::'
            'test_apply_then_rollback_restores_the_recorded_version_proven_by_an_empty_plan',
            'tests/unit/plugins/module_utils/test_terraform.py::'
            'test_a_half_failed_apply_is_undone_to_the_recorded_version',
        ],
        'covers': ['kind:terraform'],
    },
    {
        'name': 'cloudformation-undo-does-nothing',
        'breaks': 'undoing the cloudformation layer leaves the stack as the deploy changed or created it',
        'file': 'plugins/module_utils/kinds/cloudformation.py',
        'old': '    def undo(self, record):\n',
        'new': "    def undo(self, record):\n        return {'report': {'undid': 'nothing'}}  # mutant\n",
        'tests': [
            'tests/unit/plugins/module_utils/test_cloudformation.py::'
            'test_apply_then_rollback_updates_the_stack_back_proven_by_describing_it',
            'tests/unit/plugins/module_utils/test_cloudformation.py::'
            'test_a_stack_the_deploy_created_is_deleted_by_the_rollback',
        ],
        'covers': ['kind:cloudformation'],
    },
    {
        'name': 'flagd-flags-not-put-back',
        'breaks': 'undoing the flags layer leaves the flagd flag file as the deploy set it',
        'file': 'plugins/module_utils/kinds/flags.py',
        'old': "            _put_back(new['flags'], key, before)\n",
        'new': '            pass  # mutant\n',
        'tests': [
            'tests/unit/plugins/module_utils/test_flags.py::'
            'test_apply_sets_only_its_keys_keeps_the_mode_and_the_rollback_puts_them_back',
            'tests/unit/plugins/module_utils/test_flags.py::'
            'test_the_kill_switch_applied_later_extends_the_capture_and_the_rollback_ends_before_the_deploy',
        ],
        'covers': ['kind:flags', 'rule:flags.flagd'],
    },
    {
        'name': 'unleash-feature-not-switched-back',
        'breaks': 'undoing the flags layer leaves the Unleash features as the deploy switched them',
        'file': 'plugins/module_utils/kinds/flags.py',
        'old': "                    api.switch(key, before['enabled'])\n",
        'new': '                    pass  # mutant\n',
        'tests': [
            'tests/behaviour/test_flags_unleash.py::'
            'test_the_layer_alone_switches_features_and_its_undo_puts_each_back_as_it_was',
        ],
        'covers': ['kind:flags', 'rule:flags.unleash'],
    },
    {
        'name': 'kill-switch-capture-not-extended',
        'breaks': 'the kill switch records nothing of the flags the deploy did not set: the rollback leaves them off',
        'file': 'plugins/module_utils/_engine.py',
        'old': "        if hasattr(layer, 'recapture'):\n",
        'new': '        if False:  # mutant\n',
        'tests': [
            'tests/unit/plugins/module_utils/test_flags.py::'
            'test_the_kill_switch_applied_later_extends_the_capture_and_the_rollback_ends_before_the_deploy',
        ],
        'covers': ['kind:flags', 'rule:kill-switch'],
    },
    {
        'name': 'ladder-kill-switch-not-applied',
        'breaks': 'the escalation ladder skips the kill switch and goes straight on to the full rollback',
        'file': 'roles/verify/tasks/ladder.yml',
        'old': '        tasks_from: kill_switch\n      when: __failsafe_ladder_kill_switch | bool\n',
        'new': '        tasks_from: kill_switch\n      when: false  # mutant\n',
        'tests': [
            'tests/behaviour/test_flags_deploy.py::'
            'test_the_ladder_stops_at_the_kill_switch_when_it_brings_the_health_back',
        ],
        'covers': ['kind:flags', 'rule:kill-switch', 'rule:escalation-ladder'],
    },
    {
        'name': 'ladder-goes-on-after-a-fix',
        'breaks': 'the escalation ladder rolls everything back even when the kill switch brought the health back',
        'file': 'roles/verify/tasks/ladder.yml',
        'old': '- name: "Ladder step 3: full rollback"\n  when: not (__failsafe_ladder_fixed | bool)\n',
        'new': '- name: "Ladder step 3: full rollback"\n  when: true  # mutant\n',
        'tests': [
            'tests/behaviour/test_flags_deploy.py::'
            'test_the_ladder_stops_at_the_kill_switch_when_it_brings_the_health_back',
        ],
        'covers': ['rule:escalation-ladder'],
    },
    {
        'name': 'confirm-revert-rolls-nothing-back',
        'breaks': 'at the deadline the host records an unconfirmed transaction as reverted without rolling it back',
        'file': 'plugins/module_utils/_confirm.py',
        'old': "            report = rollback(p, _run)['failsafe_rollback']\n",
        'new': "            report = {'verified': True}  # mutant\n",
        'tests': [
            'tests/unit/plugins/module_utils/test_confirm.py::'
            'test_an_unconfirmed_activation_is_reverted_by_the_host_itself',
        ],
        'covers': ['rule:commit-confirmed'],
    },
    {
        'name': 'confirm-watchdog-never-reverts',
        'breaks': 'the watchdog wakes at its deadline and leaves the unconfirmed transaction as it is',
        'file': 'plugins/module_utils/_confirm.py',
        'old': "    facts = revert(ds, data['txid'], rollback, alert=True)\n",
        'new': '    facts = None  # mutant\n',
        'tests': [
            'tests/unit/plugins/module_utils/test_confirm.py::'
            'test_an_unconfirmed_activation_is_reverted_by_the_host_itself',
        ],
        'covers': ['rule:commit-confirmed'],
    },
    {
        'name': 'stages-undone-in-reverse',
        'breaks': 'a rollback undoes its stages backwards: the database first, the flags last',
        'file': 'plugins/module_utils/_layers.py',
        'old': "STAGES = ('flags', 'traffic', 'code', 'database', 'infra')\n",
        'new': "STAGES = ('infra', 'database', 'code', 'traffic', 'flags')  # mutant\n",
        'tests': [
            'tests/unit/plugins/module_utils/test_layer_kinds.py::'
            'test_one_call_undoes_every_stage_in_order_and_keeps_secrets_out_of_the_journal',
            'tests/unit/plugins/module_utils/test_layer_kinds.py::'
            'test_on_a_host_with_a_release_traffic_goes_back_before_the_code_and_the_database_after',
        ],
        'covers': ['rule:stage-order'],
    },
    {
        'name': 'code-undone-before-traffic',
        'breaks': 'a rollback switches the code back while the load balancer still sends traffic the new way',
        'file': 'plugins/module_utils/_layers.py',
        'old': "STAGES = ('flags', 'traffic', 'code', 'database', 'infra')\n",
        'new': "STAGES = ('flags', 'code', 'traffic', 'database', 'infra')  # mutant\n",
        'tests': [
            'tests/unit/plugins/module_utils/test_layer_kinds.py::'
            'test_on_a_host_with_a_release_traffic_goes_back_before_the_code_and_the_database_after',
        ],
        'covers': ['rule:stage-order'],
    },
    {
        'name': 'stage-layers-undone-in-apply-order',
        'breaks': 'within a stage the layers are undone in the order they were applied, not the reverse',
        'file': 'plugins/module_utils/_engine.py',
        'old': "            for entry in reversed(by_stage[stage] if stage != 'code' else []):\n",
        'new': "            for entry in (by_stage[stage] if stage != 'code' else []):  # mutant\n",
        'tests': [
            'tests/unit/plugins/module_utils/test_layer_kinds.py::'
            'test_a_host_of_layers_only_opens_applies_and_rolls_back_stage_by_stage',
        ],
        'covers': ['rule:stage-order'],
    },
    {
        'name': 'code-stage-kinds-skipped',
        'breaks': 'the rollback passes over layers of registered code-stage kinds, and of kinds it does not know, and '
                  'still says the restore is proven',
        'file': 'plugins/module_utils/_engine.py',
        'old': "    registered = [e for e in layers if e['kind'] not in BUILT_IN_KINDS]\n",
        'new': '    registered = []  # mutant\n',
        'tests': [
            'tests/unit/plugins/module_utils/test_layer_registry.py::'
            'test_a_code_stage_kind_and_one_of_its_own_stage_are_undone_and_each_undo_is_verified',
            'tests/unit/plugins/module_utils/test_layer_registry.py::'
            'test_a_staged_rollback_undoes_a_code_stage_kind_in_the_code_stage',
            'tests/unit/plugins/module_utils/test_layer_registry.py::'
            'test_a_code_stage_undo_that_does_not_take_fails_the_rollback_naming_the_layer',
            'tests/unit/plugins/module_utils/test_layer_registry.py::'
            'test_a_layer_of_a_kind_the_rollback_does_not_know_fails_it_naming_the_layer',
        ],
        'covers': ['rule:every-layer-undone'],
    },
    {
        'name': 'rollback-stages-not-passed',
        'breaks': 'the rollback gets no stages per host: flag and load balancer hosts are undone with the code',
        'file': 'plugins/plugin_utils/_launcher.py',
        'old': "        data['failsafe_rollback_stages'] = staged\n",
        'new': '        pass  # mutant\n',
        'tests': [
            'tests/unit/plugins/plugin_utils/test_launcher.py::'
            'test_write_rollback_vars_lists_the_stages_of_hosts_with_more_than_code',
            CALLBACK + 'test_a_delegated_transaction_is_rolled_back_on_the_host_it_names',
        ],
        'covers': ['rule:stage-order'],
    },
    {
        'name': 'rollback-first-play-undoes-every-stage',
        'breaks': "rollback.yml's first play undoes every layer of every host: code goes back with the flags on",
        'file': 'playbooks/rollback.yml',
        'old': '        failsafe_rollback_stage: flags\n',
        'new': '        failsafe_rollback_stage: all  # mutant\n',
        'tests': [
            'tests/behaviour/test_ordered_rollback.py::'
            'test_flags_are_undone_and_verified_on_their_host_before_the_code_stage_starts_anywhere',
        ],
        'covers': ['rule:stage-order'],
    },
    {
        'name': 'canary-pause-timeout-promotes',
        'breaks': 'a paused canary that nobody decides on is promoted at its timeout: it proceeds by itself',
        'file': 'plugins/plugin_utils/_metric_gate.py',
        'old': "                return 'abort', round(clock() - started, 3), True\n",
        'new': "                return 'promote', round(clock() - started, 3), True  # mutant\n",
        'tests': [
            'tests/unit/plugins/plugin_utils/test_metric_gate.py::'
            'test_a_pause_without_decision_aborts_at_its_timeout_never_promotes',
        ],
        'covers': ['rule:canary-pause'],
    },
    {
        'name': 'canary-stale-decision-decides',
        'breaks': 'a promote left in the decision file by an earlier pause decides the next pause at once',
        'file': 'plugins/plugin_utils/_metric_gate.py',
        'old': '        os.remove(path)\n',
        'new': '        pass  # mutant\n',
        'tests': [
            'tests/unit/plugins/plugin_utils/test_metric_gate.py::'
            'test_a_decision_left_from_an_earlier_pause_does_not_decide_this_one',
        ],
        'covers': ['rule:canary-pause'],
    },
    {
        'name': 'canary-abort-promotes',
        'breaks': "a person's abort of a paused canary lets it go on as if promoted",
        'file': 'plugins/action/metric_gate.py',
        'old': "            if decision == 'promote':\n",
        'new': '            if decision:  # mutant\n',
        'tests': [
            'tests/behaviour/test_metric_gate_runs.py::test_paused_gate_abort_fails_it',
        ],
        'covers': ['rule:canary-pause'],
    },
    {
        'name': 'canary-wave-judged-alone',
        'breaks': "a later wave's gate judges its own hosts alone, with the earlier waves' hosts in the baseline",
        'file': 'plugins/action/metric_gate.py',
        'old': '    return everyone[:last + 1], batch, everyone[last + 1:]\n',
        'new': '    return batch, batch, [h for h in everyone if h not in batch]  # mutant\n',
        'tests': [
            'tests/unit/plugins/plugin_utils/test_metric_gate.py::'
            'test_waves_of_a_serial_play',
        ],
        'covers': ['rule:canary-waves'],
    },
    {
        'name': 'canary-waves-ignored',
        'breaks': 'the canary deploys every host in one wave: a bad release reaches the whole fleet before its gate',
        'file': 'playbooks/canary.yml',
        'old': '  serial: "{{ failsafe_canary_waves | default([1, \'25%\', \'100%\']) }}"\n',
        'new': '  serial: "{{ [\'100%\'] }}"  # mutant\n',
        'tests': [
            'tests/behaviour/test_canary.py::test_flaky_release_is_caught_in_its_first_wave_and_rolled_back',
        ],
        'covers': ['rule:canary-waves'],
    },
    {
        'name': 'service-undo-keeps-the-old-process',
        'breaks': 'the service undo leaves the running process alone instead of restarting it on the restored release',
        'file': 'plugins/module_utils/kinds/service.py',
        'old': '            return self.apply({}, record, restart=True)\n',
        'new': '            return self.apply({}, record, restart=False)  # mutant\n',
        'tests': [
            'tests/unit/plugins/module_utils/test_layers.py::'
            'test_service_layer_apply_starts_undo_restarts_and_verify_sees_it_running',
        ],
        'covers': ['kind:service'],
    },
    {
        'name': 'outcome-always-rolled-back',
        'breaks': 'the run reports ROLLED BACK whatever the rollback left on the hosts: a failed rollback passes for '
                  'a clean one',
        'file': 'plugins/plugin_utils/_outcome.py',
        'old': "    return 'rolled_back' if reason is None else 'rollback_failed'\n",
        'new': "    return 'rolled_back'  # mutant\n",
        'tests': [
            CALLBACK + 'test_anything_but_a_clean_rollback_is_rollback_failed',
        ],
        'covers': ['rule:every-word-true'],
    },
    {
        'name': 'confirm-revert-quarantines',
        'breaks': 'a release the host reverts only because nobody confirmed it is quarantined as failed',
        'file': 'plugins/module_utils/_engine.py',
        'old': '        quarantine = _shown_bad(txn)\n',
        'new': '        quarantine = True  # mutant\n',
        'tests': [
            'tests/unit/plugins/module_utils/test_confirm.py::'
            'test_an_unconfirmed_revert_does_not_quarantine_and_the_release_deploys_again_without_force',
        ],
        'covers': ['rule:commit-confirmed', 'rule:every-word-true'],
    },
    {
        'name': 'state-file-data-not-fsynced',
        'breaks': 'the journal, the ledger and every state file are renamed into place without their data flushed: '
                  'a power cut leaves them empty',
        'file': 'plugins/module_utils/_atomic.py',
        'old': '            os.fchmod(fd, mode)\n            os.fsync(fd)\n',
        'new': '            os.fchmod(fd, mode)  # mutant: no fsync\n',
        'tests': [
            'tests/behaviour/test_powercut_crash.py::test_power_cut_at_crash_point[activate]',
        ],
    },
    # --- the controller's payload cache (auto_rollback's payload_cache) -----------------------------------------
    {
        'name': 'payload-cache-key-blind-to-module-utils',
        'breaks': 'the key of a kept module payload ignores the module_utils files: after a change to one, the hosts '
                  'run the old code',
        'file': 'plugins/plugin_utils/_payload_cache.py',
        'old': "            + _files(os.path.join(collection_root, 'plugins', 'module_utils'), ('.py',))\n",
        'new': '            + []  # mutant\n',
        'tests': [
            'tests/behaviour/test_payload_cache_runs.py::'
            'test_a_payload_is_built_once_kept_and_built_again_when_its_code_changes',
            'tests/unit/plugins/plugin_utils/test_payload_cache.py::'
            'test_the_key_changes_with_each_module_module_utils_and_routing_file_and_not_with_the_place',
        ],
    },
    {
        'name': 'payload-cache-store-open-to-others',
        'breaks': 'a payload store or entry that other users can write to or own is used: their code would run on the '
                  'hosts',
        'file': 'plugins/plugin_utils/_payload_cache.py',
        'old': '    return is_kind(st.st_mode) and st.st_uid == os.geteuid() and not st.st_mode & (stat.S_IWGRP | '
               'stat.S_IWOTH)\n',
        'new': '    return is_kind(st.st_mode)  # mutant\n',
        'tests': [
            'tests/unit/plugins/plugin_utils/test_payload_cache.py::test_a_store_others_can_write_to_is_not_used',
        ],
    },
]


class MutantError(Exception):
    pass


def tracked_files(root):
    """The checkout's files as git sees them (tracked, plus new files not ignored), working-tree content."""
    proc = subprocess.run(['git', 'ls-files', '-z', '--cached', '--others', '--exclude-standard'], cwd=root,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=False)
    if proc.returncode != 0:
        raise MutantError('git ls-files failed in %s: %s' % (root, proc.stderr.decode('utf-8', 'replace')))
    return sorted(set(p for p in proc.stdout.decode('utf-8').split('\0') if p))


def check_mutant(root, mutant, need_tests=True):
    """The mutation applies exactly once to the checkout, or the check stops here."""
    path = os.path.join(root, mutant['file'])
    if not os.path.isfile(path):
        raise MutantError('mutant %s: %s does not exist' % (mutant['name'], mutant['file']))
    with open(path, encoding='utf-8') as f:
        text = f.read()
    count = text.count(mutant['old'])
    if count != 1:
        raise MutantError('mutant %s is stale: its text occurs %d times in %s, not once:\n%s'
                          % (mutant['name'], count, mutant['file'], mutant['old']))
    if mutant['old'] == mutant['new']:
        raise MutantError('mutant %s changes nothing' % mutant['name'])
    if need_tests and not mutant.get('tests'):
        raise MutantError('mutant %s names no killer test' % mutant['name'])


def make_scratch(root, files, mutant, venv):
    # Not under /tmp: the namespace fleet hosts have a /tmp of their own, and they run the venv's supervisord
    # through the scratch copy's path.
    parent = os.path.join(root, '.build', 'mutants')
    os.makedirs(parent, exist_ok=True)
    scratch = tempfile.mkdtemp(prefix='%s-' % mutant['name'][:16], dir=parent)
    for rel in files:
        src = os.path.join(root, rel)
        dest = os.path.join(scratch, rel)
        if not os.path.lexists(src):
            continue  # deleted in the working tree
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        if os.path.islink(src):
            os.symlink(os.readlink(src), dest)
        elif os.path.isfile(src):
            shutil.copy2(src, dest)
    if mutant.get('file'):
        path = os.path.join(scratch, mutant['file'])
        with open(path, encoding='utf-8') as f:
            text = f.read()
        with open(path, 'w', encoding='utf-8') as f:
            f.write(text.replace(mutant['old'], mutant['new'], 1))
    link = os.path.join(scratch, '.build', 'collections', 'ansible_collections', 'failsafe', 'deploy')
    os.makedirs(os.path.dirname(link), exist_ok=True)
    os.symlink(scratch, link)
    if not os.path.lexists(os.path.join(scratch, '.venv')):
        os.symlink(venv, os.path.join(scratch, '.venv'))
    return scratch


def mutant_env(scratch, venv, slot, args):
    env = dict(os.environ)
    for key in ('ANSIBLE_CONFIG', 'ANSIBLE_STDOUT_CALLBACK', 'ANSIBLE_CALLBACKS_ENABLED', 'PYTEST_ADDOPTS',
                'FAILSAFE_CRASH_AT', 'FAILSAFE_CRASH_SCOPE'):
        env.pop(key, None)
    home = os.path.join(scratch, '.build', 'ansible-home')
    env.update({
        'PATH': os.path.join(venv, 'bin') + os.pathsep + os.environ.get('PATH', ''),
        'FAILSAFE_VENV': venv,
        'ANSIBLE_COLLECTIONS_PATH': os.path.join(scratch, '.build', 'collections'),
        'ANSIBLE_COLLECTIONS_SCAN_SYS_PATH': 'false',
        'ANSIBLE_HOME': home,
        'ANSIBLE_LOCAL_TEMP': os.path.join(home, 'tmp'),
        'PYTHONDONTWRITEBYTECODE': '1',
        # Fleet names of this worker slot: two mutants never share a fleet.
        'FAILSAFE_FLEET_NAME': '%s%d' % (args.fleet_prefix, slot),
        'FAILSAFE_FLEET_SUBNET': '10.213.%d.0/24' % (args.subnet_base + slot),
        'FAILSAFE_MOLECULE_FLEET': '%sm%d' % (args.fleet_prefix, slot),
        'FAILSAFE_FAULT_FLEET': '%sx%d' % (args.fleet_prefix, slot),
        'FAILSAFE_POWERCUT_FLEET': '%sp%d' % (args.fleet_prefix, slot),
    })
    return env


def node_matches(node_id, case_id):
    """Does the junit test case (as a node id) belong to the named test (a node id, a file or a directory)?"""
    if case_id == node_id or case_id.startswith(node_id + '['):
        return True
    if '::' not in node_id:
        return case_id.startswith(node_id.rstrip('/') + ('::' if node_id.endswith('.py') else '/'))
    return False


def read_junit(path):
    """{node id: 'passed'|'failed'|'skipped'} from pytest's junit xml."""
    out = {}
    if not os.path.exists(path):
        return out
    for case in ET.parse(path).getroot().iter('testcase'):
        classname = case.get('classname') or ''
        name = case.get('name') or ''
        parts = classname.split('.')
        # tests.unit.x.test_mod(.TestClass)? -> tests/unit/x/test_mod.py(::TestClass)?
        mod_end = len(parts)
        for i in range(len(parts), 0, -1):
            if parts[i - 1].startswith('test_'):
                mod_end = i
                break
        node = '/'.join(parts[:mod_end]) + '.py'
        for cls in parts[mod_end:]:
            node += '::' + cls
        node += '::' + name
        if case.find('failure') is not None or case.find('error') is not None:
            status = 'failed'
        elif case.find('skipped') is not None:
            status = 'skipped'
        else:
            status = 'passed'
        if out.get(node) != 'failed':
            out[node] = status
    return out


def run_mutant(root, files, mutant, venv, slot, args, tests=None):
    started = time.monotonic()
    tests = tests or mutant['tests']
    behaviour = any(t.startswith('tests/behaviour') for t in tests)
    timeout = args.timeout or (BEHAVIOUR_TIMEOUT if behaviour else UNIT_TIMEOUT)
    scratch = make_scratch(root, files, mutant, venv)
    junit = os.path.join(scratch, '.build', 'mutant-junit.xml')
    cmd = [os.path.join(venv, 'bin', 'python'), '-m', 'pytest', '-q', '-rfE', '--tb=line', '-p', 'no:cacheprovider',
           '--junitxml', junit] + list(tests)
    result = {'name': mutant['name'], 'breaks': mutant['breaks'], 'file': mutant['file'], 'tests': list(tests),
              'killed': False, 'status': 'error', 'rc': None, 'failed': [], 'not_failed': [], 'seconds': 0.0,
              'detail': ''}
    proc = subprocess.Popen(cmd, cwd=scratch, env=mutant_env(scratch, venv, slot, args), stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    RUNNING.add(proc)
    try:
        output = proc.communicate(timeout=timeout)[0]
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            output = proc.communicate(timeout=30)[0]
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            output = proc.communicate()[0]
        result['detail'] = 'timed out after %d s' % timeout
    finally:
        RUNNING.discard(proc)
    text = output.decode('utf-8', 'replace')
    result['rc'] = proc.returncode
    cases = read_junit(junit)
    for named in tests:
        statuses = [s for case, s in cases.items() if node_matches(named, case)]
        (result['failed'] if 'failed' in statuses else result['not_failed']).append(named)
    result['failed_cases'] = sorted(c for c, s in cases.items() if s == 'failed')
    # pytest's failure lines (--tb=line: path:line: error), which assertion killed the mutant, for the report.
    result['why'] = [line.replace(scratch + os.sep, '')[:300] for line in text.splitlines()
                     if line.startswith(scratch + os.sep)][:10]
    if result['detail']:  # timed out: an error of the check
        result['status'] = 'error'
    elif proc.returncode == 0:
        result['status'] = 'survived'
        result['detail'] = 'every killer test passed'
    elif proc.returncode == 1 and not result['not_failed']:
        result['status'] = 'killed'
        result['killed'] = True
    elif proc.returncode == 1:
        result['status'] = 'survived'
        result['detail'] = 'passed: %s' % ', '.join(result['not_failed'])
    else:
        result['detail'] = 'pytest exited %d (not a test failure)' % proc.returncode
    if args.verbose or result['status'] == 'error':
        result['output_tail'] = text[-4000:]
    result['seconds'] = round(time.monotonic() - started, 1)
    if args.keep:
        result['scratch'] = scratch
    else:
        shutil.rmtree(scratch, ignore_errors=True)
    return result


def markdown(results, total_seconds):
    killed = sum(1 for r in results if r['killed'])
    lines = ['# Mutation check', '', 'mutants: %d killed / %d total (%.0f s)' % (killed, len(results), total_seconds),
             '', '| mutant | breaks | status | seconds | killer tests | first failure |', '|---|---|---|---|---|---|']
    for r in results:
        status = r['status'] + (' (%s)' % r['detail'] if r['detail'] and not r['killed'] else '')
        why = (r.get('why') or [''])[0].replace('|', '\\|')
        lines.append('| %s | %s | %s | %s | %s | %s |' % (r['name'], r['breaks'], status, r['seconds'],
                                                          '<br>'.join('`%s`' % t for t in r['tests']),
                                                          '`%s`' % why if why else ''))
    return '\n'.join(lines) + '\n'


def table(results):
    width = max(len(r['name']) for r in results)
    rows = []
    for r in results:
        rows.append('%-*s  %-8s %6.1f s  %s' % (width, r['name'], r['status'], r['seconds'], r['breaks']))
        if not r['killed']:
            rows.append('%*s  %s' % (width, '', r['detail']))
    return '\n'.join(rows)


def main(argv=None):
    parser = argparse.ArgumentParser(description='Apply each mutant to a scratch copy and run its killer tests.')
    parser.add_argument('--list', action='store_true', help='print the mutants and their killer tests')
    parser.add_argument('--only', action='append', default=[], help='run only this mutant (repeatable)')
    parser.add_argument('--tests', nargs='+', help='run these tests instead of the killer tests (to find killers)')
    parser.add_argument('--workers', type=int, default=2, help='mutants run side by side (default 2)')
    parser.add_argument('--timeout', type=int, default=0, help='seconds per mutant (default 180 unit, 900 behaviour)')
    parser.add_argument('--fleet-prefix', default=os.environ.get('FAILSAFE_MUTANTS_FLEET', 'fsmu'),
                        help='fleet names are <prefix><slot>, <prefix>m<slot>, <prefix>x<slot> (default fsmu)')
    parser.add_argument('--subnet-base', type=int, default=int(os.environ.get('FAILSAFE_MUTANTS_SUBNET', '250')),
                        help='worker slot n uses 10.213.<base+n>.0/24 (default 250)')
    parser.add_argument('--output', default=os.path.join(ROOT, 'tests', 'output'), help='report directory')
    parser.add_argument('--keep', action='store_true', help='keep the scratch copies')
    parser.add_argument('--verbose', action='store_true', help='keep the pytest output of every mutant in the json')
    parser.add_argument('--baseline', action='store_true',
                        help='run the killer tests of the chosen mutants once on an unmutated copy: they must pass')
    args = parser.parse_args(argv)

    venv = os.environ.get('FAILSAFE_VENV') or os.path.join(ROOT, '.venv')
    if not os.path.exists(os.path.join(venv, 'bin', 'python')):
        print('mutants: no virtualenv at %s (set FAILSAFE_VENV)' % venv, file=sys.stderr)
        return 2
    venv = os.path.abspath(venv)
    names = set(m['name'] for m in MUTANTS)
    if len(names) != len(MUTANTS):
        print('mutants: two mutants share a name', file=sys.stderr)
        return 2
    unknown = [n for n in args.only if n not in names]
    if unknown:
        print('mutants: no such mutant: %s' % ', '.join(unknown), file=sys.stderr)
        return 2
    chosen = [m for m in MUTANTS if not args.only or m['name'] in args.only]
    try:
        for mutant in MUTANTS:
            check_mutant(ROOT, mutant, need_tests=not args.tests)
        files = tracked_files(ROOT)
    except MutantError as e:
        print('mutants: %s' % e, file=sys.stderr)
        return 2
    if args.baseline:
        tests = []
        for m in chosen:
            tests.extend(t for t in m['tests'] if t not in tests)
        base = {'name': 'baseline', 'breaks': 'nothing (unmutated copy)', 'file': None, 'tests': args.tests or tests}
        res = run_mutant(ROOT, files, base, venv, 0, args, tests=base['tests'])
        for line in res['why']:
            print('    %s' % line)
        print('baseline: pytest exited %s in %.0f s; failing: %s' % (
            res['rc'], res['seconds'], ', '.join(res['failed_cases']) or 'none'))
        return 0 if res['rc'] == 0 else 1
    if args.list:
        for m in chosen:
            print('%s: %s (%s)' % (m['name'], m['breaks'], m['file']))
            for t in m['tests']:
                print('    %s' % t)
        return 0

    started = time.monotonic()
    # The slow mutants (behaviour tests) first, so that the quick ones fill the other worker meanwhile.
    pending = sorted(chosen, key=lambda m: not any(t.startswith('tests/behaviour') for t in m['tests']))
    results = {}
    lock = threading.Lock()

    def worker(slot):
        while True:
            with lock:
                if not pending:
                    return
                mutant = pending.pop(0)
            res = run_mutant(ROOT, files, mutant, venv, slot, args, tests=args.tests)
            with lock:
                results[mutant['name']] = res
                print('mutant %-28s %-8s %6.1f s%s' % (res['name'], res['status'], res['seconds'],
                                                       '' if res['killed'] else '  ' + res['detail']), flush=True)

    threads = [threading.Thread(target=worker, args=(slot,), daemon=True) for slot in range(max(1, args.workers))]
    for t in threads:
        t.start()
    try:
        for t in threads:
            while t.is_alive():
                t.join(0.5)
    except KeyboardInterrupt:
        with lock:
            del pending[:]
        for proc in list(RUNNING):
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except OSError:
                pass
        print('mutants: interrupted', file=sys.stderr)
        return 130
    ordered = [results[m['name']] for m in chosen]
    total = time.monotonic() - started
    killed = sum(1 for r in ordered if r['killed'])

    if args.tests:
        for r in ordered:
            print('%s: rc=%s; failing tests:' % (r['name'], r['rc']))
            for case in r['failed_cases']:
                print('    %s' % case)
        return 0

    os.makedirs(args.output, exist_ok=True)
    with open(os.path.join(args.output, 'mutants.json'), 'w', encoding='utf-8') as f:
        json.dump({'killed': killed, 'total': len(ordered), 'seconds': round(total, 1), 'mutants': ordered}, f,
                  indent=2, sort_keys=True)
        f.write('\n')
    with open(os.path.join(args.output, 'mutants.md'), 'w', encoding='utf-8') as f:
        f.write(markdown(ordered, total))
    for r in ordered:
        if r['status'] == 'error' and r.get('output_tail'):
            print('--- %s: pytest output (tail)\n%s' % (r['name'], r['output_tail']))
    print(table(ordered))
    print('mutants: %d killed / %d total in %.0f s (report: %s)' % (
        killed, len(ordered), total, os.path.join(os.path.relpath(args.output, ROOT), 'mutants.md')))
    return 0 if killed == len(ordered) else 1


if __name__ == '__main__':
    sys.exit(main())
