# -*- coding: utf-8 -*-
# Private to this collection: not a public API.
# Copyright: Contributors to failsafe.deploy
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Reproduce an incident in staging: re-run the release that failed (the incident report's) with the deploy
playbook on the staging hosts, then say whether the failure reproduced (a failure at the same task with the same
cause class) or not, and append the result to the incident's report (JSON: ``reproductions``; Markdown: a
section). The run itself is a rehearsal step (_rehearsal.child_command and its runner)."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import json
import os
import time

from ansible_collections.failsafe.deploy.plugins.module_utils._atomic import atomic_write_bytes
from ansible_collections.failsafe.deploy.plugins.plugin_utils import _launcher, _rehearsal


def _task(name):
    """A task's name without its role prefix ('failsafe.deploy.verify : Check' -> 'Check')."""
    return str(name or '').split(' : ', 1)[-1]


def original_failure(incident):
    """(task, cause) of the incident's first failure that counted (in scope, not rescued), or (None, None)."""
    for failure in incident.get('failures') or ():
        if failure.get('in_scope', True) and not failure.get('rescued'):
            return failure.get('task'), failure.get('cause')
    return None, None


def verdict(incident, reports):
    """Whether the failure of ``incident`` reproduced in the runs whose incident reports are ``reports``: a failure
    at the same task with the same cause class."""
    task, cause = original_failure(incident)
    seen = [(f.get('task'), f.get('cause')) for r in reports for f in r.get('failures') or ()
            if f.get('in_scope', True) and not f.get('rescued')]
    same = bool(task) and any(_task(t) == _task(task) and c == cause for t, c in seen)
    return {'reproduced': same, 'original': {'task': task, 'cause': cause},
            'observed': [{'task': t, 'cause': c} for t, c in seen]}


def load(path):
    with open(path, 'rb') as handle:
        incident = json.loads(handle.read().decode('utf-8'))
    if not isinstance(incident, dict) or not incident.get('incident_id'):
        raise ValueError('%s is not an incident report of failsafe.deploy' % path)
    return incident


def append(path, incident, result):
    """Append ``result`` to the incident's report: ``reproductions`` in the JSON, a section in the Markdown."""
    incident = dict(incident)
    incident['reproductions'] = list(incident.get('reproductions') or []) + [result]
    atomic_write_bytes(path, json.dumps(incident, indent=2, sort_keys=True).encode('utf-8'), controller=True)
    markdown = path[:-len('.json')] + '.md' if path.endswith('.json') else None
    if markdown and os.path.exists(markdown):
        observed = '; '.join('%s (cause %s)' % (o['task'], o['cause']) for o in result['observed']) or 'no failure'
        with open(markdown, 'a') as handle:
            handle.write('\n## Reproduction in staging, %s\n\n%s\n\n| | |\n|---|---|\n| Staging hosts | %s |\n'
                         '| Original failure | %s (cause %s) |\n| Observed | %s |\n| Run log | %s |\n'
                         % (result['at'], result['words'], ', '.join(result['staging_hosts']),
                            result['original']['task'], result['original']['cause'], observed, result['log']))
    return incident


def reproduce(incident_path, hosts, staging_hosts, playbook, cliargs, env, timeout=1800, ansible_playbook=None,
              defaults=None):
    """Re-run the incident's release on the staging ``hosts`` and append the verdict to its report; returns it."""
    incident = load(incident_path)
    releases = (incident.get('summary') or {}).get('releases') or []
    if not releases:
        raise ValueError('incident %s names no release to re-run' % incident['incident_id'])
    release = releases[0]
    work = os.path.join(os.path.dirname(os.path.abspath(incident_path)), '%s.reproduce-%s' % (
        incident['incident_id'], time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())))
    os.makedirs(work, 0o700)
    reports_dir = os.path.join(work, 'reports')
    child_env = _launcher.build_env(env, os.path.join(work, 'rollback.json'),
                                    callbacks_enabled=(env.get('ANSIBLE_CALLBACKS_ENABLED') or '').split(','))
    for key in ('FAILSAFE_RUN_ID', 'FAILSAFE_CONTROLLER_PID', _launcher.CHILD_ENV, _launcher.RESULT_ENV):
        child_env.pop(key, None)
    child_env['FAILSAFE_REPORT_DIR'] = reports_dir
    cmd = _rehearsal.child_command(
        ansible_playbook or _launcher.default_ansible_playbook(), playbook, cliargs, hosts,
        {'failsafe_release_id': release, 'failsafe_force': True,
         'failsafe_force_reason': 'reproduction of incident %s in staging' % incident['incident_id']}, defaults)
    log = os.path.join(work, 'reproduce.log')
    rc, duration = _rehearsal._run(cmd, child_env, log, timeout)
    result = verdict(incident, _rehearsal._reports(reports_dir))
    original = result['original']
    result.update(at=time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime()), release=release, rc=rc, duration=duration,
                  staging_hosts=list(staging_hosts), log=log, reports=reports_dir)
    if result['reproduced']:
        result['words'] = ('REPRODUCED: release %s failed in staging at the same task (%s) with the same cause (%s).'
                           % (release, original['task'], original['cause']))
    else:
        result['words'] = ('DID NOT REPRODUCE: release %s %s in staging; the incident failed at %s (cause %s). The '
                           'cause may lie outside the release (a host, the network, the environment).'
                           % (release, 'deployed without failure' if rc == 0 and not result['observed'] else
                              'failed differently', original['task'], original['cause']))
    append(incident_path, incident, result)
    return result
