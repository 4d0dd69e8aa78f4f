# -*- coding: utf-8 -*-
# Copyright: Contributors to failsafe.deploy
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Tell a CI pipeline how a deploy ended, from the incident reports of the auto_rollback callback.

Usage: python3 scripts/deploy_outcome.py [--report-dir DIR] [--rc N] [--since T]

DIR is the callback's report_dir (FAILSAFE_REPORT_DIR; default ./failsafe-incidents); use a fresh one per
pipeline run, or give --since T (the Unix time the run started: older reports are ignored). N is the exit status of
ansible-playbook. The newest incident report in DIR decides:

  exit 0  deployed          no incident and N is 0 (or every failure was rescued)
  exit 1  rolled back       the deploy failed and every host is back on its last verified release
  exit 2  rollback failed   the rollback failed, did not start, or was deferred/skipped: hosts may be broken
  exit 3  unknown           ansible-playbook failed and there is no incident report (a task of the play's own failed
                            before a transaction opened, or the callback is not enabled)
  exit 0  mitigated         a health check failed and a step of the escalation ladder (the kill switch) fixed it:
                            the release stays, verified, with what that step changed (a feature flag off); nothing
                            was rolled back
  exit 4  refused           the preflight refused the deploy before any change (a malformed release id, a missing
                            archive, malformed checks or flags, a lock held, a quarantined release...): no host
                            opened a transaction, nothing was changed and nothing was rolled back

stdout gets ``key=value`` lines (outcome, label, exit_code, incident_id, report, report_markdown), ready for
``$GITHUB_OUTPUT``; a one-line summary goes to stderr.
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import argparse
import json
import os
import re
import sys

EXIT_CODES = {'deployed': 0, 'mitigated': 0, 'rolled_back': 1, 'rollback_failed': 2, 'unknown': 3, 'refused': 4}
LABELS = {'deployed': 'DEPLOYED', 'mitigated': 'MITIGATED BY THE ESCALATION LADDER (NO ROLLBACK)',
          'rolled_back': 'ROLLED BACK', 'rollback_failed': 'ROLLBACK FAILED', 'unknown': 'UNKNOWN',
          'refused': 'REFUSED BEFORE ANY CHANGE'}
_REPORT = re.compile(r'^inc-[^.]+\.json$')


def latest_incident(report_dir, since=None):
    """(path, data) of the newest incident report in report_dir (written at or after ``since``, a Unix time, when
    given), or (None, None)."""
    if not os.path.isdir(report_dir):
        return None, None
    found = []
    for name in os.listdir(report_dir):
        if not _REPORT.match(name):
            continue
        path = os.path.join(report_dir, name)
        try:
            with open(path, encoding='utf-8') as handle:
                data = json.load(handle)
        except (OSError, ValueError):
            continue
        written = data.get('written') or os.path.getmtime(path)
        if since is not None and written < since:
            continue
        found.append((written, name, path, data))
    if not found:
        return None, None
    found.sort()
    return found[-1][2], found[-1][3]


def decide(report_dir, rc=None, since=None):
    """The outcome as a dict: outcome, label, exit_code, incident_id, report, report_markdown, detail. ``since``
    (a Unix time): reports written before it, by earlier runs, are not this run's."""
    path, data = latest_incident(report_dir, since)
    result = {'incident_id': None, 'report': None, 'report_markdown': None}
    if data is None:
        if rc in (None, 0):
            outcome, detail = 'deployed', 'no incident'
        else:
            outcome, detail = 'unknown', 'ansible-playbook exited %s and left no incident report' % rc
    else:
        recorded = data.get('outcome')
        result.update(incident_id=data.get('incident_id'), report=path,
                      report_markdown=path[:-len('.json')] + '.md')
        summary = data.get('summary') or {}
        detail = summary.get('reason') or summary.get('outcome_label') or recorded
        if recorded == 'rolled_back':
            outcome = 'rolled_back'
        elif recorded == 'refused':
            outcome = 'refused'
        elif recorded == 'rescued' and rc in (None, 0):
            outcome = 'deployed'
        elif recorded == 'mitigated' and rc in (None, 0):
            outcome = 'mitigated'
        else:
            outcome = 'rollback_failed'
            detail = '%s: %s' % (summary.get('outcome_label') or recorded, detail)
    result.update(outcome=outcome, label=LABELS[outcome], exit_code=EXIT_CODES[outcome], detail=detail)
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n', maxsplit=1)[0])
    parser.add_argument('--report-dir', default=os.environ.get('FAILSAFE_REPORT_DIR', './failsafe-incidents'))
    parser.add_argument('--rc', type=int, default=None, help='exit status of ansible-playbook')
    parser.add_argument('--since', type=float, default=None,
                        help='Unix time the run started: reports written before it belong to earlier runs')
    args = parser.parse_args(argv)
    result = decide(args.report_dir, args.rc, args.since)
    for key in ('outcome', 'label', 'exit_code', 'incident_id', 'report', 'report_markdown'):
        value = result[key]
        print('%s=%s' % (key, '' if value is None else value))
    where = ('; report ' + result['report']) if result['report'] else ''
    sys.stderr.write('deploy outcome: %s (%s)%s\n' % (result['label'], result['detail'], where))
    return result['exit_code']


if __name__ == '__main__':
    sys.exit(main())
