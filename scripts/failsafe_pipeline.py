# -*- coding: utf-8 -*-
# Copyright: Contributors to failsafe.deploy
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The steps of a CI/CD pipeline that deploys with failsafe.deploy: the example pipelines of examples/pipelines
(GitLab CI, GitHub Actions, Azure Pipelines) all call this script, so the three run the same steps.

Usage:
  python3 failsafe_pipeline.py deploy RELEASE [-- ANSIBLE-PLAYBOOK ARGS...]
  python3 failsafe_pipeline.py incident
  python3 failsafe_pipeline.py rollback [--to BUILD | --if-needed] [-- ANSIBLE-PLAYBOOK ARGS...]

deploy    runs ``ansible-playbook failsafe.deploy.deploy -e release_version=RELEASE`` with the auto_rollback
          callback writing its incident report to FAILSAFE_REPORT_DIR and the outcome as JUnit XML to
          FAILSAFE_JUNIT_FILE (default ``<report dir>/junit.xml``), then reads the outcome with deploy_outcome.py,
          writes it to ``<report dir>/outcome.env`` (key=value lines: a GitLab dotenv report) and exits with its code:
          0 deployed, 1 rolled back, 2 rollback failed, 3 unknown (no incident report), 4 refused before any change.
incident  prints the outcome, its cause and the incident's Markdown report (the job that runs when the deploy
          failed); exits 0.
rollback  runs ``failsafe.deploy.rollback`` to a build by name (``--to``: ``last_verified``, the default, is the
          verified release before the last committed deploy, or a release id from the history); exits 0 when the
          hosts run that build, 2 otherwise. With ``--if-needed`` it rolls back only a deploy whose own rollback did
          not finish (outcome rollback failed or unknown in outcome.env: the open transaction is rolled back) and
          does nothing after a deploy that was rolled back, refused or deployed.

The inventory is FAILSAFE_INVENTORY (default ``inventory.yml``); ANSIBLE_PLAYBOOK names the ansible-playbook to run.
Under GitHub Actions the outcome also goes to ``$GITHUB_OUTPUT`` and a summary with the failed test cases to
``$GITHUB_STEP_SUMMARY``; under Azure Pipelines (TF_BUILD) the outcome becomes a pipeline variable (deployOutcome), a
build tag and a logged warning or error.
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import argparse
import os
import re
import subprocess
import sys
import time
import xml.etree.ElementTree as ET

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import deploy_outcome  # noqa: E402  pylint: disable=wrong-import-position

# A release id or build name as the deploy accepts it: nothing a shell or YAML could read otherwise.
_NAME = re.compile(r'^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$')
_MESSAGES = {
    'deployed': 'deployed',
    'mitigated': 'mitigated by the escalation ladder (no rollback)',
    'rolled_back': 'deploy failed and was rolled back to the last verified release',
    'rollback_failed': 'ROLLBACK FAILED: hosts may be broken',
    'unknown': 'deploy failed before any incident report was written, or deployed nothing (no rollback ran)',
    'refused': 'deploy refused before any change; nothing to roll back',
}


def report_dir():
    return os.path.abspath(os.environ.get('FAILSAFE_REPORT_DIR') or './failsafe-incidents')


def junit_file():
    return os.path.abspath(os.environ.get('FAILSAFE_JUNIT_FILE') or os.path.join(report_dir(), 'junit.xml'))


def outcome_env_path():
    return os.path.join(report_dir(), 'outcome.env')


def playbook_command(playbook, extra):
    return [os.environ.get('ANSIBLE_PLAYBOOK') or 'ansible-playbook', '-i',
            os.environ.get('FAILSAFE_INVENTORY') or 'inventory.yml', playbook] + list(extra)


def run(cmd):
    env = dict(os.environ, FAILSAFE_REPORT_DIR=report_dir(), FAILSAFE_JUNIT_FILE=junit_file())
    sys.stdout.write('$ %s\n' % ' '.join(cmd))
    sys.stdout.flush()
    return subprocess.call(cmd, env=env)


def checked_name(value, what):
    if not _NAME.match(value or ''):
        sys.stderr.write('failsafe_pipeline: %s %r is not a release id or build name (letters, digits, . _ + -, '
                         'starting with a letter or digit); nothing was run\n' % (what, value))
        sys.exit(4)
    return value


def read_env(path):
    values = {}
    if os.path.exists(path):
        with open(path, encoding='utf-8') as handle:
            for line in handle:
                key, sep, value = line.rstrip('\n').partition('=')
                if sep:
                    values[key] = value
    return values


def failed_cases(path):
    """[(host, phase, message, text)] of the failed test cases of a JUnit file."""
    if not os.path.exists(path):
        return []
    cases = []
    for case in ET.parse(path).getroot().iter('testcase'):
        failure = case.find('failure')
        if failure is not None:
            cases.append((case.get('classname'), case.get('name'), failure.get('message'), failure.text or ''))
    return cases


def annotate(result, cases):
    """Tell the CI system the outcome in its own terms."""
    code, outcome = result['exit_code'], result['outcome']
    words = '%s (incident %s)' % (_MESSAGES[outcome], result.get('incident_id') or 'none')
    if os.environ.get('GITHUB_ACTIONS') == 'true':
        if code:
            sys.stdout.write('::%s::%s\n' % ('warning' if code == 1 else 'error', words))
        if os.environ.get('GITHUB_OUTPUT'):
            with open(os.environ['GITHUB_OUTPUT'], 'a', encoding='utf-8') as handle:
                for key in ('outcome', 'label', 'exit_code', 'incident_id', 'report', 'report_markdown'):
                    handle.write('%s=%s\n' % (key, '' if result.get(key) is None else result[key]))
                handle.write('junit=%s\n' % junit_file())
        if os.environ.get('GITHUB_STEP_SUMMARY'):
            lines = ['### Deploy: %s' % result['label'], '', words, '']
            if cases:
                lines += ['| host | phase | failure |', '| --- | --- | --- |']
                lines += ['| %s | %s | %s |' % (h, p, (m or '').replace('|', '/')) for h, p, m, t in cases]
                lines.append('')
            with open(os.environ['GITHUB_STEP_SUMMARY'], 'a', encoding='utf-8') as handle:
                handle.write('\n'.join(lines) + '\n')
    if os.environ.get('TF_BUILD'):
        sys.stdout.write('##vso[task.setvariable variable=deployOutcome]%s\n' % outcome)
        sys.stdout.write('##vso[build.addbuildtag]%s\n' % outcome)
        if code:
            sys.stdout.write('##vso[task.logissue type=%s]%s\n' % ('warning' if code == 1 else 'error', words))


def cmd_deploy(args):
    release = checked_name(args.release, 'release')
    directory = report_dir()
    os.makedirs(directory, exist_ok=True)
    for stale in (junit_file(), outcome_env_path()):
        if os.path.exists(stale):
            os.remove(stale)
    # the report directory may hold the reports of earlier runs (a shell runner's kept project directory)
    started = time.time()
    rc = run(playbook_command('failsafe.deploy.deploy', ['-e', 'release_version=%s' % release] + args.extra))
    result = deploy_outcome.decide(directory, rc, since=started)
    if result['outcome'] == 'deployed' and not os.path.exists(junit_file()):
        # the callback writes the JUnit file whenever a host opened a transaction: without it nothing was deployed
        # (an inventory that matched no host, or the callback not enabled), which is no success
        result.update(outcome='unknown', label=deploy_outcome.LABELS['unknown'],
                      exit_code=deploy_outcome.EXIT_CODES['unknown'],
                      detail='ansible-playbook exited %d but no host deployed the release: no JUnit file from the '
                             'auto_rollback callback at %s (does the inventory match the hosts, is the callback '
                             'enabled?)' % (rc, junit_file()))
    with open(outcome_env_path(), 'w', encoding='utf-8') as handle:
        handle.write('FAILSAFE_RELEASE=%s\nFAILSAFE_PLAYBOOK_RC=%d\n' % (release, rc))
        for key in ('outcome', 'label', 'exit_code', 'incident_id', 'report', 'report_markdown'):
            handle.write('FAILSAFE_%s=%s\n' % (key.upper(), '' if result.get(key) is None else result[key]))
        handle.write('FAILSAFE_JUNIT_FILE=%s\n' % junit_file())
    cases = failed_cases(junit_file())
    sys.stdout.write('deploy outcome: %s (%s)\n' % (result['label'], result['detail']))
    for host, phase, message, dummy in cases:
        sys.stdout.write('  failed: %s\n' % message)
    if result['report']:
        sys.stdout.write('incident report: %s\n' % result['report_markdown'])
    annotate(result, cases)
    return result['exit_code']


def cmd_incident(args):
    values = read_env(outcome_env_path())
    if not values:
        result = deploy_outcome.decide(report_dir(), None)
        values = dict(('FAILSAFE_%s' % k.upper(), '' if v is None else v) for k, v in result.items())
    sys.stdout.write('outcome: %s\nincident: %s\n' % (values.get('FAILSAFE_LABEL'),
                                                      values.get('FAILSAFE_INCIDENT_ID') or 'none'))
    for host, phase, message, text in failed_cases(values.get('FAILSAFE_JUNIT_FILE') or junit_file()):
        sys.stdout.write('\nfailed: %s\n%s\n' % (message, text))
    markdown = values.get('FAILSAFE_REPORT_MARKDOWN')
    if markdown and os.path.exists(markdown):
        sys.stdout.write('\n--- incident report %s ---\n' % markdown)
        with open(markdown, encoding='utf-8') as handle:
            sys.stdout.write(handle.read())
    elif not values.get('FAILSAFE_INCIDENT_ID'):
        sys.stdout.write('no incident report in %s\n' % report_dir())
    return 0


def cmd_rollback(args):
    extra = list(args.extra)
    if args.if_needed:
        values = read_env(outcome_env_path())
        outcome = values.get('FAILSAFE_OUTCOME')
        if outcome not in ('rollback_failed', 'unknown'):
            ended = values.get('FAILSAFE_LABEL') or 'without an outcome on record'
            sys.stdout.write('rollback not needed: the deploy ended %s\n' % ended)
            return 0
        sys.stdout.write('the deploy ended %s: rolling back its open transaction\n' % values.get('FAILSAFE_LABEL'))
    else:
        extra = ['-e', 'failsafe_rollback_to=%s' % checked_name(args.to, 'build')] + extra
    rc = run(playbook_command('failsafe.deploy.rollback', extra))
    if rc:
        sys.stdout.write('rollback FAILED (ansible-playbook exited %d): see its output above\n' % rc)
        if os.environ.get('GITHUB_ACTIONS') == 'true':
            sys.stdout.write('::error::rollback failed (ansible-playbook exited %d)\n' % rc)
        if os.environ.get('TF_BUILD'):
            sys.stdout.write('##vso[task.logissue type=error]rollback failed (ansible-playbook exited %d)\n' % rc)
        return 2
    target = 'the last verified build' if args.if_needed or args.to == 'last_verified' else 'build %s' % args.to
    sys.stdout.write('rollback done: the hosts run %s\n' % target)
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n', maxsplit=1)[0])
    sub = parser.add_subparsers(dest='command', required=True)
    deploy = sub.add_parser('deploy', help='deploy a release and report its outcome')
    deploy.add_argument('release')
    deploy.add_argument('extra', nargs='*', help='further ansible-playbook arguments (after --)')
    sub.add_parser('incident', help='show the outcome and the incident report of the last deploy')
    rollback = sub.add_parser('rollback', help='roll back to a build by name')
    rollback.add_argument('--to', default='last_verified')
    rollback.add_argument('--if-needed', action='store_true')
    rollback.add_argument('extra', nargs='*', help='further ansible-playbook arguments (after --)')
    args = parser.parse_args(argv)
    return {'deploy': cmd_deploy, 'incident': cmd_incident, 'rollback': cmd_rollback}[args.command](args)


if __name__ == '__main__':
    sys.exit(main())
