#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Contributors to failsafe.deploy
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

DOCUMENTATION = r'''
---
module: history_info
short_description: Deploy history of a host, from its own journal, history and release ledger
version_added: 0.2.0
description:
  - Reads, on the managed host, what the deploys left there and lists it per deployment, newest first; every
    transaction (release, previous release, run, when it opened and closed, its steps, its outcome), the releases
    of the ledger (staged, activated, verified, failed, and why), and the incidents that rolled a transaction back.
  - Answers "when did this last work?" with RV(deployments[].last_success), the newest committed transaction, and
    with RV(deployments[].last_verified), the release the ledger last verified.
  - Reads C(<state_dir>/<name>/journal.json) (the open or last transaction), C(<state_dir>/<name>/history.jsonl)
    (every closed transaction), C(<state_dir>/<name>/lock.json) and C(<app_root>/.failsafe/ledger.json). A line or
    file that cannot be read is skipped and named in RV(warnings_skipped); the module never writes anything.
  - The playbook C(failsafe.deploy.history) runs it across hosts and prints one table for the whole fleet.
extends_documentation_fragment:
  - failsafe.deploy.common
  - failsafe.deploy.common.read_only
  - failsafe.deploy.state
options:
  name:
    description:
      - Deployment names (the roles' C(failsafe_name)) to list. Every deployment found under O(state_dir) when
        empty.
    type: list
    elements: str
    default: []
  app_root:
    description:
      - Application root whose C(.failsafe/ledger.json) holds the releases. When not set, the C(app_root) the
        deployment's transactions recorded.
    type: path
  limit:
    description: Newest transactions listed per deployment (C(0) for all of them).
    type: int
    default: 50
  release:
    description: List only the transactions of this release (and this release of the ledger).
    type: str
'''

EXAMPLES = r'''
- name: When did the web shop last deploy cleanly?
  failsafe.deploy.history_info:
    name: [web-shop]
    state_dir: /var/lib/failsafe-deploy
  register: history

- name: Show it
  ansible.builtin.debug:
    msg: "{{ history.deployments[0].last_success }}"
'''

RETURN = r'''
deployments:
  description: One entry per deployment found, by name.
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: The deployment name.
      type: str
    state_dir:
      description: Directory of its journal and history.
      type: str
    app_root:
      description: Its application root (from O(app_root) or its transactions), or null.
      type: str
    status:
      description: Status of the open or last transaction (C(open), C(committed), C(rolled_back), ...), or null.
      type: str
    locked_by:
      description: Holder of the deploy lock (owner, run id, expiry), or null when no run holds it.
      type: dict
    current_release:
      description: The release the ledger says is current, or null.
      type: str
    last_verified:
      description: The release the ledger last verified, or null.
      type: str
    last_verified_build:
      description:
        - The build of that release as its commit recorded it (C(archive_sha256), C(collection_version),
          C(playbook_commit), C(playbook_dirty)), or null.
      type: dict
      version_added: 0.1.0
    last_success:
      description: The newest committed transaction (C(release), C(txid), C(run_id), C(closed), C(closed_iso)), or null.
      type: dict
    transactions:
      description:
        - Transactions, newest first, each with C(txid), C(run_id), C(release), C(previous_release), C(status),
          C(opened_iso), C(closed_iso), C(duration) (seconds), C(steps) (names of the steps done), C(owner),
          C(reason) (of a rollback), C(incident) (the incident id that rolled it back, or null), C(build) (the
          build it deployed, C(archive_sha256), C(collection_version), C(playbook_commit) and C(playbook_dirty), as
          its journal recorded it; null for a transaction that recorded none), C(forced) (who forced the deploy,
          C(by), why, C(reason), the refusals it C(overrode) and when, C(iso); null when not forced) and C(rca) (the
          root-cause note attached to it, or null).
        - Each also has C(layers), the layers of its undo log in the order applied (C(kind), C(key) and C(stage),
          the rollback stage, V(infra) for infrastructure applied first and undone last), and C(stages), the
          rollback stages they need in the order a rollback undoes them.
      type: list
      elements: dict
    releases:
      description:
        - Releases of the ledger, newest activity first, each with C(release), C(state), C(staged_iso),
          C(activated_iso), C(verified_iso), C(failed_iso), C(reason) and C(build) (the build its last commit
          recorded, or null).
      type: list
      elements: dict
    incidents:
      description: Incidents that rolled back one of the transactions, newest first (C(incident), C(txid), C(release),
        C(status), C(at)).
      type: list
      elements: dict
    counts:
      description: Number of transactions by status (of all of them, not only those listed).
      type: dict
warnings_skipped:
  description: Files or lines that could not be read, and why.
  returned: always
  type: list
  elements: str
'''

import json
import os
import re

from ansible.module_utils.basic import AnsibleModule

# first: this collection's module_utils below load from the host's bytecode cache (module_utils/_bytecode.py)
from ansible_collections.failsafe.deploy.plugins.module_utils import _bytecode  # noqa: F401 pylint: disable=unused-import
from ansible_collections.failsafe.deploy.plugins.module_utils._argspec import state_argument_spec
from ansible_collections.failsafe.deploy.plugins.module_utils._layers import STAGES
from ansible_collections.failsafe.deploy.plugins.module_utils.kinds import stage_of

_INCIDENT = re.compile(r'\b(inc-[0-9A-Za-z]+T?[0-9A-Za-z]*-[0-9a-f]+)\b')
_NAME = re.compile(r'^[A-Za-z0-9_.-]+$')


def _read_json(path, skipped):
    try:
        with open(path, 'rb') as handle:
            return json.loads(handle.read().decode('utf-8'))
    except (OSError, IOError) as exc:
        if os.path.exists(path):
            skipped.append('%s: %s' % (path, exc))
    except ValueError as exc:
        skipped.append('%s: not JSON (%s)' % (path, exc))
    return None


def _read_lines(path, skipped):
    out = []
    try:
        with open(path, 'rb') as handle:
            for number, raw in enumerate(handle, 1):
                line = raw.strip()
                if not line:
                    continue
                try:
                    item = json.loads(line.decode('utf-8'))
                except ValueError:
                    skipped.append('%s line %d: not JSON (cut short by a crash?)' % (path, number))
                    continue
                if isinstance(item, dict):
                    out.append(item)
    except (OSError, IOError) as exc:
        if os.path.exists(path):
            skipped.append('%s: %s' % (path, exc))
    return out


def _incident_of(txn):
    outcome = txn.get('outcome') if isinstance(txn.get('outcome'), dict) else {}
    for text in (outcome.get('incident'), outcome.get('reason'), (txn.get('data') or {}).get('incident')
                 if isinstance(txn.get('data'), dict) else None):
        if text:
            match = _INCIDENT.search(str(text))
            if match:
                return match.group(1)
    return None


def _layers(txn):
    """The undo log's layers in the order applied: kind, key and rollback stage."""
    out = []
    for entry in txn.get('layers') or ():
        if isinstance(entry, dict) and entry.get('kind'):
            kind = str(entry['kind'])
            out.append({'kind': kind, 'key': entry.get('key') or kind, 'stage': stage_of(kind)})
    return out


def _transaction(txn):
    opened, closed = txn.get('opened'), txn.get('closed')
    outcome = txn.get('outcome') if isinstance(txn.get('outcome'), dict) else {}
    duration = None
    if isinstance(opened, (int, float)) and isinstance(closed, (int, float)):
        duration = round(closed - opened, 3)
    return {
        'txid': txn.get('txid'), 'run_id': txn.get('run_id'), 'release': txn.get('release'),
        'previous_release': txn.get('previous_release'), 'status': txn.get('status'),
        'opened': opened, 'opened_iso': txn.get('opened_iso'), 'closed': closed, 'closed_iso': txn.get('closed_iso'),
        'duration': duration,
        'steps': [s.get('step') for s in txn.get('steps') or () if isinstance(s, dict) and s.get('step')],
        'owner': txn.get('owner'), 'reason': outcome.get('reason'), 'incident': _incident_of(txn),
        'rolled_back_to': outcome.get('target'),
        'layers': _layers(txn), 'stages': [s for s in STAGES if any(e['stage'] == s for e in _layers(txn))],
        'build': txn.get('build') if isinstance(txn.get('build'), dict) else None,
        'forced': txn.get('forced') if isinstance(txn.get('forced'), dict) else None,
        'rca': txn.get('rca'),
    }


def _releases(ledger, only):
    out = []
    entries = (ledger or {}).get('releases') if isinstance(ledger, dict) else None
    for release, entry in (entries or {}).items():
        if not isinstance(entry, dict) or (only and release != only):
            continue
        times = [entry.get(k) for k in ('staged', 'activated', 'verified', 'failed')]
        latest = max([t for t in times if isinstance(t, (int, float))] or [0])
        out.append({'release': release, 'state': entry.get('state'), 'staged_iso': entry.get('staged_iso'),
                    'activated_iso': entry.get('activated_iso'), 'verified_iso': entry.get('verified_iso'),
                    'failed_iso': entry.get('failed_iso'), 'reason': entry.get('reason'),
                    'build': entry.get('build') if isinstance(entry.get('build'), dict) else None, '_latest': latest})
    out.sort(key=lambda r: r['_latest'], reverse=True)
    for entry in out:
        entry.pop('_latest')
    return out


def _build_of(ledger, release):
    entry = ((ledger.get('releases') or {}).get(release) or {}) if release else {}
    return entry.get('build') if isinstance(entry, dict) and isinstance(entry.get('build'), dict) else None


def deployment(state_dir, name, app_root, limit, only, skipped):
    folder = os.path.join(state_dir, name)
    journal = _read_json(os.path.join(folder, 'journal.json'), skipped)
    lock = _read_json(os.path.join(folder, 'lock.json'), skipped)
    records = _read_lines(os.path.join(folder, 'history.jsonl'), skipped)
    if isinstance(journal, dict) and journal.get('txid'):
        # the journal holds the open transaction, or again the last closed one: listed once, its newest state
        newest = (journal.get('txid'), journal.get('status'))
        records = [r for r in records if (r.get('txid'), r.get('status')) != newest]
        records.append(journal)
    transactions = [_transaction(r) for r in records]
    transactions.sort(key=lambda t: (t['closed'] or t['opened'] or 0, t['opened'] or 0), reverse=True)
    if only:
        transactions = [t for t in transactions if t['release'] == only]
    counts = {}
    for txn in transactions:
        counts[txn['status'] or 'unknown'] = counts.get(txn['status'] or 'unknown', 0) + 1
    success = next((t for t in transactions if t['status'] == 'committed'), None)
    root = app_root or next((r.get('app_root') for r in reversed(records) if r.get('app_root')), None)
    ledger = _read_json(os.path.join(root, '.failsafe', 'ledger.json'), skipped) if root else None
    incidents = [{'incident': t['incident'], 'txid': t['txid'], 'release': t['release'], 'status': t['status'],
                  'at': t['closed_iso']} for t in transactions if t['incident']]
    locked_by = None
    if isinstance(lock, dict):
        keys = ('owner', 'run_id', 'controller', 'pid', 'expires_iso', 'acquired_iso')
        locked_by = dict((k, lock.get(k)) for k in keys if lock.get(k) is not None)
    shown = transactions[:limit] if limit else transactions
    for txn in shown:
        txn.pop('opened')
        txn.pop('closed')
    return {
        'name': name, 'state_dir': folder, 'app_root': root,
        'status': journal.get('status') if isinstance(journal, dict) else None,
        'locked_by': locked_by,
        'current_release': ledger.get('current') if isinstance(ledger, dict) else None,
        'last_verified': ledger.get('last_verified') if isinstance(ledger, dict) else None,
        'last_verified_build': _build_of(ledger, ledger.get('last_verified')) if isinstance(ledger, dict) else None,
        'last_success': dict((k, success.get(k)) for k in ('release', 'txid', 'run_id', 'closed_iso'))
        if success else None,
        'transactions': shown, 'releases': _releases(ledger, only), 'incidents': incidents, 'counts': counts,
    }


def _is_deployment(folder):
    """A deployment's folder holds its journal, history or lock (the state dir also holds snapshots)."""
    return any(os.path.exists(os.path.join(folder, f)) for f in ('journal.json', 'history.jsonl', 'lock.json'))


def main():
    module = AnsibleModule(
        argument_spec=dict(
            state_argument_spec(),
            name=dict(type='list', elements='str', default=[]),
            app_root=dict(type='path'),
            limit=dict(type='int', default=50),
            release=dict(type='str'),
        ),
        supports_check_mode=True,
    )
    p = module.params
    if p['limit'] < 0:
        module.fail_json(msg='limit must be 0 (all) or more, not %d' % p['limit'])
    for name in p['name']:
        if not _NAME.match(name):
            module.fail_json(msg='name %r is not a deployment name (letters, digits, ".", "_" and "-")' % name)
    skipped = []
    names = list(p['name'])
    if not names:
        try:
            names = sorted(n for n in os.listdir(p['state_dir']) if _NAME.match(n) and _is_deployment(
                os.path.join(p['state_dir'], n)))
        except OSError as exc:
            if os.path.exists(p['state_dir']):
                module.fail_json(msg='cannot list the state directory %s: %s (option state_dir)'
                                 % (p['state_dir'], exc))
            names = []
    found = []
    for name in names:
        if not os.path.isdir(os.path.join(p['state_dir'], name)):
            skipped.append('%s: no deployment %r here' % (p['state_dir'], name))
            continue
        found.append(deployment(p['state_dir'], name, p['app_root'], p['limit'], p['release'], skipped))
    module.exit_json(changed=False, deployments=found, warnings_skipped=skipped)


if __name__ == '__main__':
    main()
