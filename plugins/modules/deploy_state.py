#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Contributors to failsafe.deploy
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

DOCUMENTATION = r'''
---
module: deploy_state
short_description: Deploy lock and per-host transaction journal
version_added: 0.1.0
description:
  - Keeps, on the managed host itself, who is deploying (the lock) and what the deploy has done so far (the
    journal), so a run that dies half way can be detected and finished or rolled back by the next one.
  - The lock lives in C(<path>/<name>/lock.json) and names its holder (owner, controller, pid, run id) and when it
    expires. A second run fails fast while the lock is held; an expired lock is taken over with a warning.
  - The journal C(<path>/<name>/journal.json) holds the open transaction, or the last one once closed. Every closed
    transaction is appended to C(<path>/<name>/history.jsonl).
  - V(open), V(step), V(committed), V(rolled_back) and V(rollback_failed) return RV(failsafe_transaction), which
    the P(failsafe.deploy.auto_rollback#callback) callback watches to know which hosts have a transaction open.
  - Every file is written atomically. A temporary file in the same directory is synced and renamed over the old
    one, and a new lock is created with a hard link so two runs cannot both take a free lock.
extends_documentation_fragment:
  - failsafe.deploy.common
attributes:
  check_mode:
    details:
      - Nothing is written in check mode. The result says what would change.
      - In check mode RV(failsafe_transaction.status) is V(planned) when the call would write, so that a check run
        is never mistaken for an open transaction.
  diff_mode:
    support: full
    details: Before and after of the lock holder and of a summary of the journal (txid, run, status, steps).
options:
  path:
    description:
      - The state directory on the target, for example C(/var/lib/failsafe-deploy).
    type: path
    required: true
  name:
    description:
      - Deployment name. Each name has its own lock, journal and history under O(path).
    type: str
    default: app
  state:
    description:
      - V(locked) takes the deploy lock for O(run_id). If the same run already holds it, nothing is reported as
        changed; its expiry is pushed O(ttl) seconds ahead once less than half of O(ttl) is left (or when the
        holder's details or O(ttl) differ), otherwise the lock file is left untouched. If another run holds it and it has not expired,
        the module fails at once naming the holder (RV(holder)). An expired lock is taken over with a warning and
        RV(stale_takeover=true).
      - V(unlocked) releases the lock if O(run_id) holds it (or with O(force=true) whoever holds it; an expired
        lock is removed with a warning). No lock is no change. A live lock of another run is refused.
      - V(open) starts a transaction. If the journal already holds an open transaction of the same O(run_id) and
        O(release), nothing changes. An open transaction of another run is refused (RV(open_transaction)) because
        it must be recovered first. O(force=true) records it as V(abandoned) in the history instead.
      - V(step) records a step (O(step), O(status), O(data)) in the open transaction and merges O(snapshots).
        When the latest record of that step already has the same O(status) and O(data) and the journal already
        holds O(snapshots), nothing is written and nothing is reported as changed.
      - V(committed), V(rolled_back) and V(rollback_failed) close the transaction with that outcome (O(data) is
        stored as its C(outcome)), append it to the history and release the lock if this run or the transaction's
        run holds it. V(committed) needs an open transaction. V(rolled_back) and V(rollback_failed) also close a
        committed or failed-rollback transaction again. Closing with the same outcome twice changes nothing.
      - V(query) only reads. It returns RV(journal), RV(lock), RV(lock_expired), RV(open) and RV(history_tail).
    type: str
    choices: [locked, unlocked, open, step, committed, rolled_back, rollback_failed, query]
    default: query
  owner:
    description:
      - Who is deploying, recorded in the lock and the journal.
      - Defaults to C(<user>@<host>) of the process running the module on the target. Pass the controller user
        and host, as the roles do.
    type: str
  controller:
    description: Controller host name, recorded in the lock and the journal.
    type: str
  pid:
    description: Process id of the controller's ansible-playbook, recorded in the lock and the journal.
    type: int
  run_id:
    description:
      - Identifies the Ansible run. The lock and the transaction belong to it.
      - Required for every O(state) except V(query) and V(unlocked) with O(force=true).
    type: str
  ttl:
    description:
      - Seconds after which the lock counts as stale and another run may take it over.
    type: int
    default: 1800
  release:
    description:
      - Release id the transaction deploys, for V(open).
      - In check mode, for V(step), V(committed), V(rolled_back) and V(rollback_failed) when no transaction is open
        yet (the check mode V(open) before it wrote nothing), the release of the transaction that would be open,
        shown in the diff and in RV(journal) with C(would_open). Ignored otherwise.
    type: str
  previous_release:
    description: Release that was current before the transaction, for V(open).
    type: str
  app_root:
    description: Application root of the release, for V(open).
    type: path
  snapshots:
    description:
      - Snapshot ids taken for the transaction, by kind (for example V(files)). Stored with V(open) and merged in
        with V(step).
    type: dict
  step:
    description: Name of the step to record, for V(step).
    type: str
  status:
    description: Outcome of the step, for V(step).
    type: str
    default: ok
  data:
    description:
      - Free-form details. With V(open) and V(step) stored with the transaction or the step, with V(committed),
        V(rolled_back) and V(rollback_failed) stored as the transaction's C(outcome), for example the restored
        paths and the target release of a rollback.
      - Do not put secrets here. The journal and the history are plain files on the host.
    type: dict
  force:
    description:
      - With V(locked) or V(unlocked), break a lock another run holds even though it has not expired.
      - With V(open), abandon another run's open transaction. With V(step) and the closing states, act on a
        transaction of another run.
    type: bool
    default: false
seealso:
  - module: failsafe.deploy.release
  - module: failsafe.deploy.snapshot
'''

EXAMPLES = r'''
- name: Take the deploy lock for this run
  failsafe.deploy.deploy_state:
    path: /var/lib/failsafe-deploy
    name: app
    state: locked
    owner: "alice@ctl1"
    controller: ctl1
    run_id: "20260101T120000Z-1a2b3c4d"
    ttl: 1800

- name: Open the transaction
  failsafe.deploy.deploy_state:
    path: /var/lib/failsafe-deploy
    state: open
    run_id: "20260101T120000Z-1a2b3c4d"
    release: "1.4.2"
    previous_release: "1.4.1"
    app_root: /srv/app

- name: Record the snapshot taken before the change
  failsafe.deploy.deploy_state:
    path: /var/lib/failsafe-deploy
    state: step
    run_id: "20260101T120000Z-1a2b3c4d"
    step: snapshot
    snapshots:
      files: "20260101T120001Z-9f8e7d6c"

- name: Commit and release the lock
  failsafe.deploy.deploy_state:
    path: /var/lib/failsafe-deploy
    state: committed
    run_id: "20260101T120000Z-1a2b3c4d"

- name: Is a transaction left open?
  failsafe.deploy.deploy_state:
    path: /var/lib/failsafe-deploy
  register: deploy_state
'''

RETURN = r'''
failsafe_transaction:
  description:
    - The transaction this call opened, recorded a step in or closed. The C(auto_rollback) callback reads it.
    - O(path) is returned as C(state_dir).
  returned: when O(state) is V(open), V(step), V(committed), V(rolled_back) or V(rollback_failed)
  type: dict
  contains:
    txid:
      description: Transaction id, C(<UTC yyyymmddTHHMMSSZ>-<8 hex>).
      type: str
    run_id:
      description: Run that owns the transaction.
      type: str
    name:
      description: Deployment name.
      type: str
    state_dir:
      description: The state directory O(path).
      type: str
    release:
      description: Release being deployed.
      type: str
    previous_release:
      description: Release that was current before.
      type: str
    app_root:
      description: Application root.
      type: str
    status:
      description: V(open), V(committed), V(rolled_back), V(rollback_failed), or V(planned) in check mode.
      type: str
  sample:
    txid: "20260101T120000Z-5e6f7a8b"
    run_id: "20260101T120000Z-1a2b3c4d"
    name: app
    state_dir: /var/lib/failsafe-deploy
    release: "1.4.2"
    previous_release: "1.4.1"
    app_root: /srv/app
    status: open
journal:
  description:
    - The journal after the call (planned in check mode), V(null) when there is none.
    - Keys are C(txid), C(run_id), C(name), C(status), C(release), C(previous_release), C(app_root), C(snapshots),
      C(steps) (list of C(step), C(status), C(time), C(iso), C(data)), C(opened), C(opened_iso), C(owner),
      C(controller), C(pid), C(data), C(status_history), and once closed C(closed), C(closed_iso) and C(outcome).
  returned: always except for V(locked) and V(unlocked)
  type: dict
lock:
  description:
    - The lock after the call, V(null) when nobody holds it. Keys are C(owner), C(controller), C(pid), C(run_id),
      C(ttl), C(acquired), C(acquired_iso), C(expires), C(expires_iso) and C(host).
  returned: always
  type: dict
lock_expired:
  description: Whether the lock has passed its expiry.
  returned: when O(state=query)
  type: bool
open:
  description: Whether the journal holds an open transaction.
  returned: when O(state=query)
  type: bool
history_tail:
  description: The last five closed transactions, oldest first.
  returned: when O(state=query)
  type: list
  elements: dict
stale_takeover:
  description: Whether V(locked) took over an expired lock of another run.
  returned: when O(state=locked)
  type: bool
previous_holder:
  description: Who held the lock before this call, when it was taken over or released.
  returned: when O(state) is V(locked) or V(unlocked)
  type: dict
holder:
  description: Who holds the lock, when V(locked) or V(unlocked) is refused.
  returned: failure
  type: dict
open_transaction:
  description: The journal of another run's open transaction that refused V(open).
  returned: failure
  type: dict
lock_released:
  description: Whether closing the transaction released the lock.
  returned: when O(state) is V(committed), V(rolled_back) or V(rollback_failed), not in check mode
  type: bool
step:
  description: The step record V(step) appended, or the record already there when nothing changed.
  returned: when O(state=step)
  type: dict
'''

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.common.text.converters import to_native

# first: this collection's module_utils below load from the host's bytecode cache (module_utils/_bytecode.py)
from ansible_collections.failsafe.deploy.plugins.module_utils import _bytecode  # noqa: F401 pylint: disable=unused-import
from ansible_collections.failsafe.deploy.plugins.module_utils._journal import (
    DeployState,
    JournalError,
    ensure_closed,
    ensure_locked,
    ensure_open,
    ensure_query,
    ensure_step,
    ensure_unlocked,
)


def run(module):
    p = module.params
    ds = DeployState(p['path'], p['name'])
    state = p['state']
    check = module.check_mode
    owner = p['owner']
    if state == 'query':
        return ensure_query(ds)
    if state == 'locked':
        return ensure_locked(ds, p['run_id'], owner, p['controller'], p['pid'], p['ttl'], p['force'], check,
                             module.warn)
    if state == 'unlocked':
        return ensure_unlocked(ds, p['run_id'], p['force'], check, module.warn)
    if state == 'open':
        return ensure_open(ds, p['run_id'], p['release'], p['previous_release'], p['app_root'], p['snapshots'],
                           p['data'], owner, p['controller'], p['pid'], p['force'], check, module.warn)
    if state == 'step':
        return ensure_step(ds, p['run_id'], p['step'], p['status'], p['snapshots'], p['data'], p['force'], check,
                           release=p['release'])
    return ensure_closed(ds, state, p['run_id'], p['data'], p['force'], check, release=p['release'])


def main():
    module = AnsibleModule(
        argument_spec=dict(
            path=dict(type='path', required=True),
            name=dict(type='str', default='app'),
            state=dict(type='str', default='query',
                       choices=['locked', 'unlocked', 'open', 'step', 'committed', 'rolled_back', 'rollback_failed',
                                'query']),
            owner=dict(type='str'),
            controller=dict(type='str'),
            pid=dict(type='int'),
            run_id=dict(type='str'),
            ttl=dict(type='int', default=1800),
            release=dict(type='str'),
            previous_release=dict(type='str'),
            app_root=dict(type='path'),
            snapshots=dict(type='dict'),
            step=dict(type='str'),
            status=dict(type='str', default='ok'),
            data=dict(type='dict'),
            force=dict(type='bool', default=False),
        ),
        required_if=[
            ('state', 'locked', ('run_id',)),
            ('state', 'open', ('run_id',)),
            ('state', 'step', ('run_id', 'step')),
            ('state', 'committed', ('run_id',)),
            ('state', 'rolled_back', ('run_id',)),
            ('state', 'rollback_failed', ('run_id',)),
        ],
        supports_check_mode=True,
    )
    p = module.params
    if p['state'] == 'unlocked' and not p['run_id'] and not p['force']:
        module.fail_json(msg='state=unlocked needs run_id (the run that holds the lock) or force=true')
    if p['state'] in ('locked', 'open', 'step', 'committed', 'rolled_back', 'rollback_failed') and p['run_id'] == '':
        module.fail_json(msg='run_id must not be empty for state=%s' % p['state'])
    try:
        result = run(module)
    except JournalError as e:
        module.fail_json(msg=e.msg, **e.details)
    except (OSError, IOError) as e:
        path = getattr(e, 'filename', None) or p['path']
        module.fail_json(msg='%s: %s' % (path, to_native(e)), path=path, errno=e.errno)
    if not module._diff:
        result.pop('diff', None)
    module.exit_json(**result)


if __name__ == '__main__':
    main()
