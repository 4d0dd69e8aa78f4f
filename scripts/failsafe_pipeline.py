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
          hosts run that build, 2 otherwise. A build named by id is first looked up in the hosts' history
          (``failsafe.deploy.history``, read-only): one that no host can roll back to (never deployed, or not the
          build before a host's last committed deploy) is refused with exit 4 before any change, the message naming
          it and listing the builds it can roll back to. With ``--if-needed`` it rolls back only a deploy whose own rollback did
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
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import deploy_outcome  # noqa: E402  pylint: disable=wrong-import-position

# A release id or build name as the deploy accepts it: nothing a shell or YAML could read otherwise.
LAST_VERIFIED = 'last_verified'
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


def read_history(extra):
    """{host: [deployment, ...]} as failsafe.deploy.history reads it on the hosts (read-only), or None with the
    reason when it could not be read."""
    folder = tempfile.mkdtemp(prefix='failsafe-history-')
    path = os.path.join(folder, 'history.json')
    try:
        cmd = playbook_command('failsafe.deploy.history', ['-e', 'failsafe_history_file=%s' % path] + list(extra))
        proc = subprocess.run(cmd, env=dict(os.environ), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, check=False)
        if proc.returncode != 0 or not os.path.exists(path):
            return None, 'failsafe.deploy.history exited %d: %s' % (
                proc.returncode, proc.stdout.decode('utf-8', 'replace').strip()[-2000:])
        with open(path, encoding='utf-8') as handle:
            return json.load(handle), None
    except ValueError as exc:
        return None, 'the history file could not be read: %s' % exc
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _names_build(wanted, release, build):
    sha = str((build or {}).get('archive_sha256') or '')
    return bool(release) and (wanted == release or (len(wanted) >= 12 and sha.startswith(wanted.lower())))


def rollback_targets(history):
    """{release: [host, ...]}: the builds a rollback by name can go back to, per host the verified build before its
    last committed deploy (what failsafe.deploy.rollback accepts by name), with their builds for sha matching."""
    targets, builds = {}, {}
    for host, deployments in sorted((history or {}).items()):
        for dep in deployments or []:
            ledger = dict((r.get('release'), r) for r in dep.get('releases') or [])
            txns = dep.get('transactions') or []
            last = txns[0] if txns else {}
            target = last.get('previous_release')
            if last.get('status') == 'committed' and target and target != last.get('release'):
                targets.setdefault(target, []).append(host)
                builds[target] = (ledger.get(target) or {}).get('build')
    return targets, builds


def refuse_unknown_build(wanted, extra):
    """Why a rollback to build ``wanted`` is refused before any change (None: go on): no host's history or ledger
    names it, or it is no host's build to roll back to. The refusal names the builds it can roll back to."""
    history, error = read_history(extra)
    if history is None:
        sys.stdout.write('warning: could not read the hosts\' history to check build %s (%s); the rollback checks '
                         'it on each host\n' % (wanted, error))
        return None
    targets, builds = rollback_targets(history)
    if any(_names_build(wanted, release, builds.get(release)) for release in targets) or any(
            _names_build(wanted, dep.get('current_release'), dep.get('last_verified_build')
                         if dep.get('current_release') == dep.get('last_verified') else None)
            for deployments in history.values() for dep in deployments or []):
        return None  # a host already on it says so and changes nothing
    known = set()
    for deployments in history.values():
        for dep in deployments or []:
            for entry in (dep.get('releases') or []) + (dep.get('transactions') or []):
                if _names_build(wanted, entry.get('release'), entry.get('build')):
                    known.add(entry.get('release'))
    can = ', '.join('%s (%s)' % (release, ', '.join(hosts)) for release, hosts in sorted(targets.items()))
    listed = ('builds it can roll back to: %s, or last_verified' % can) if can else \
        'no host has a committed deploy to roll back from, so there is no build to roll back to by name'
    if known:
        return ('build %s was deployed (release %s) but is no host\'s build to roll back to: a rollback by name goes '
                'back to the verified build before the last committed deploy; nothing was changed; %s'
                % (wanted, ', '.join(sorted(known)), listed))
    return ('build %s was never deployed on these hosts (no host\'s history or ledger names it); nothing was '
            'changed; %s' % (wanted, listed))


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
        to = checked_name(args.to, 'build')
        if to != LAST_VERIFIED:
            refusal = refuse_unknown_build(to, extra)
            if refusal:
                sys.stderr.write('failsafe_pipeline: %s\n' % refusal)
                sys.stdout.write('rollback REFUSED before any change: %s\n' % refusal)
                if os.environ.get('GITHUB_ACTIONS') == 'true':
                    sys.stdout.write('::error::rollback refused: %s\n' % refusal)
                if os.environ.get('TF_BUILD'):
                    sys.stdout.write('##vso[task.logissue type=error]rollback refused: %s\n' % refusal)
                return deploy_outcome.EXIT_CODES['refused']
        extra = ['-e', 'failsafe_rollback_to=%s' % to] + extra
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
