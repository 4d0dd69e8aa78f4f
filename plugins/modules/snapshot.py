#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Contributors to failsafe.deploy
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

DOCUMENTATION = r'''
---
module: snapshot
short_description: Snapshot paths before a change and restore them exactly
version_added: 0.1.0
description:
  - Captures files, directories and symlinks under the given paths (content, mode, owner, group, symlink target,
    and the absence of a path) into a content-addressed store on the target, and restores them exactly.
  - File contents are stored once per sha256 in C(<store>/objects/), shared by every snapshot. A stat cache (size,
    mtime, inode, ctime) means a file that did not change since the last snapshot is neither read nor copied again,
    so the cost of a snapshot follows what changed, not the size of the tree.
  - Each snapshot is a manifest C(<store>/manifests/<id>.json) that carries a sha256 over its own canonical JSON.
    A manifest that fails this check, or that names a path outside the roots it captured, is refused.
  - Restoring makes every captured root exactly what it was, whatever happened since. Modified files get their
    content back, deleted files, directories and symlinks are recreated, files and directories created later inside
    a captured directory are removed, and a root that did not exist is removed. Restoring is idempotent and can be
    re-run after it was interrupted.
options:
  store:
    description:
      - Directory of the snapshot store on the target. Created (mode C(0700)) by the first snapshot.
    type: path
    required: true
  state:
    description:
      - V(present) takes a snapshot of O(paths). With an O(id) that already exists, nothing is captured again
        (the first snapshot of a change is the one to keep) and the task reports no change. Without O(id), when
        the newest snapshot with the same O(paths), O(exclude) and O(labels) still matches the live paths exactly,
        that snapshot is returned (RV(id)) and the task reports no change, rather than storing an identical one.
      - V(restored) restores snapshot O(id), then re-reads every path and fails if anything still differs
        (unless O(verify=false)).
      - V(verified) compares the live paths with snapshot O(id), reading every file, and returns RV(drift). It
        fails when there is drift and O(verify=true); with O(verify=false) it only reports.
      - V(absent) removes snapshot O(id) and the stored contents no other snapshot uses.
      - V(query) returns every snapshot, newest first, and changes nothing.
      - V(pruned) keeps the O(keep) newest snapshots plus those in O(protect), removes the others and the stored
        contents no remaining snapshot uses.
    type: str
    choices: [present, restored, verified, absent, query, pruned]
    default: present
  id:
    description:
      - Snapshot id. Letters, digits, V(.), V(_) and V(-), at most 128 characters.
      - For O(state=present) it is generated when omitted, as V(<UTC yyyymmddTHHMMSSZ>-<8 hex digits>).
      - Required for O(state=restored), O(state=verified) and O(state=absent).
    type: str
  paths:
    description:
      - Absolute paths to capture (files, directories, symlinks, or paths that do not exist yet). Directories are
        captured recursively; symlinks are recorded as links and never followed.
      - Symlinks in the parent directories of a path are resolved when the snapshot is taken; the snapshot records
        the resolved roots (RV(roots)). A path below another path in the list is covered by it.
      - Required for O(state=present).
    type: list
    elements: path
  exclude:
    description:
      - Glob patterns of paths to leave out, relative to each root. A pattern without C(/) matches a name at any
        depth (V(*.log), V(cache)); a pattern with C(/) matches the whole relative path (V(var/tmp/*)).
        Excluding a directory excludes everything below it.
      - Excluded paths are neither captured nor touched by a restore.
    type: list
    elements: str
    default: []
  labels:
    description:
      - Free-form labels stored in the manifest and returned by O(state=query), for example the release and the
        transaction id.
    type: dict
    default: {}
  keep:
    description:
      - For O(state=pruned), the number of newest snapshots to keep (besides O(protect)).
    type: int
  protect:
    description:
      - For O(state=pruned), ids that are never removed.
    type: list
    elements: str
    default: []
  verify:
    description:
      - For O(state=restored), re-read every captured path after restoring and fail, listing the differences, if
        anything is not exactly as recorded.
      - For O(state=verified), fail when drift is found.
    type: bool
    default: true
notes:
  - Sockets, FIFOs and device files are not captured (a warning names them) and a restore leaves them alone.
  - Hard links are captured as separate files. Modification times of files and directories are not restored.
  - Changing owner or group on restore needs the privileges to do so (usually root).
  - The store holds copies of whatever it captures, possibly secrets. Keep it on the target, readable by root only.
  - Concurrent writers to one store are serialised by a lock file in the store.
extends_documentation_fragment:
  - failsafe.deploy.common
attributes:
  check_mode:
    details:
      - V(present) reads and hashes the paths and reports what would be captured, writing nothing.
      - V(restored) reports the drifting paths as RV(restored) without touching anything.
      - V(absent) and V(pruned) report what would be removed.
  diff_mode:
    support: full
    details:
      - V(restored) and V(verified) show the drifting paths before and none after; V(present), V(absent) and
        V(pruned) show the snapshot ids before and after.
seealso:
  - module: failsafe.deploy.release
  - module: failsafe.deploy.deploy_state
'''

EXAMPLES = r'''
- name: Snapshot the configuration and the current release pointer before the change
  failsafe.deploy.snapshot:
    store: /var/lib/failsafe-deploy/snapshots
    id: "{{ failsafe_run_id }}"
    paths:
      - /etc/myapp
      - /srv/app/current
      - /srv/app/shared/config
    exclude:
      - '*.log'
      - cache
    labels:
      release: "{{ failsafe_release_id }}"
  register: before_change

- name: Put everything back exactly as it was, and prove it
  failsafe.deploy.snapshot:
    store: /var/lib/failsafe-deploy/snapshots
    state: restored
    id: "{{ before_change.id }}"

- name: Check for drift without failing
  failsafe.deploy.snapshot:
    store: /var/lib/failsafe-deploy/snapshots
    state: verified
    id: "{{ before_change.id }}"
    verify: false
  register: drift_report

- name: List snapshots, newest first
  failsafe.deploy.snapshot:
    store: /var/lib/failsafe-deploy/snapshots
    state: query
  register: all_snapshots

- name: Keep the five newest snapshots and the one of the running transaction
  failsafe.deploy.snapshot:
    store: /var/lib/failsafe-deploy/snapshots
    state: pruned
    keep: 5
    protect:
      - "{{ before_change.id }}"
'''

RETURN = r'''
id:
  description: The snapshot id.
  returned: state is present, restored, verified or absent
  type: str
  sample: 20250101T120000Z-1a2b3c4d
manifest:
  description: Path of the snapshot manifest.
  returned: state is present, restored or verified
  type: str
  sample: /var/lib/failsafe-deploy/snapshots/manifests/20250101T120000Z-1a2b3c4d.json
roots:
  description: The captured roots (absolute, with symlinks in their parent directories resolved).
  returned: state is present
  type: list
  elements: str
entries:
  description: Number of entries (files, directories, symlinks, absent roots) in the snapshot.
  returned: state is present, restored or verified
  type: int
  sample: 1042
bytes_new:
  description: Bytes newly added to the content store by this snapshot (0 when nothing changed since the last one).
  returned: state is present
  type: int
  sample: 0
hashed:
  description: Number of files read and hashed. An unchanged file known to the stat cache is not read at all.
  returned: state is present, restored or verified
  type: int
  sample: 0
stats:
  description: Counters of the operation.
  returned: state is present, restored or verified
  type: dict
  contains:
    files:
      description: Files captured.
      type: int
    dirs:
      description: Directories captured.
      type: int
    links:
      description: Symlinks captured.
      type: int
    hashed:
      description: Files read and hashed.
      type: int
    bytes_hashed:
      description: Bytes read and hashed.
      type: int
    bytes_new:
      description: Bytes added to the content store.
      type: int
    objects_new:
      description: Objects added to the content store.
      type: int
    cache_hits:
      description: Files whose stat matched the stat cache (not read).
      type: int
drift:
  description:
    - For V(verified), every difference between the live paths and the snapshot.
    - For V(restored), the differences found before restoring. When the verification after the restore fails,
      the differences that remain.
    - One item per path and kind; a path can appear with several kinds.
  returned: state is restored or verified
  type: list
  elements: dict
  contains:
    path:
      description: The path.
      type: str
    kind:
      description: What differs.
      type: str
      choices: [content, mode, owner, group, type, target, missing, unexpected]
  sample: [{path: /etc/myapp/app.conf, kind: content}, {path: /etc/myapp/new.conf, kind: unexpected}]
restored:
  description: Paths changed (or, in check mode, that would be changed) by the restore.
  returned: state is restored
  type: list
  elements: str
snapshots:
  description: Every snapshot, newest first.
  returned: state is query
  type: list
  elements: dict
  contains:
    id:
      description: Snapshot id.
      type: str
    created:
      description: Creation time, epoch seconds.
      type: float
    created_iso:
      description: Creation time, ISO-8601 UTC.
      type: str
    labels:
      description: Labels given when it was taken.
      type: dict
    entries:
      description: Number of entries.
      type: int
    roots:
      description: Captured roots.
      type: list
      elements: str
    valid:
      description: Whether the manifest passes its checksum.
      type: bool
removed:
  description: Ids of the snapshots removed (or, in check mode, that would be removed).
  returned: state is absent or pruned
  type: list
  elements: str
objects_removed:
  description: Stored contents no longer referenced and removed.
  returned: state is absent or pruned
  type: int
bytes_freed:
  description: Bytes freed in the content store.
  returned: state is absent or pruned
  type: int
'''

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.common.text.converters import to_native

# first: this collection's module_utils below load from the host's bytecode cache (module_utils/_bytecode.py)
from ansible_collections.failsafe.deploy.plugins.module_utils import _bytecode  # noqa: F401 pylint: disable=unused-import
from ansible_collections.failsafe.deploy.plugins.module_utils._snapshot import (
    SnapshotError, SnapshotStore, check_id, describe_drift,
)


def _drift_text(drift):
    return ''.join('%s: %s\n' % (d['path'], d['kind']) for d in drift)


def _ids_text(ids):
    return ''.join('%s\n' % i for i in ids)


def _removal_diff(store, before_ids, removed):
    header = 'snapshots in %s' % store.root
    return dict(before_header=header, before=_ids_text(before_ids),
                after_header=header, after=_ids_text([i for i in before_ids if i not in removed]))


def _with_stats(result, store):
    result['hashed'] = store.counters['hashed']
    result['stats'] = dict(store.counters)
    return result


def ensure_present(module, store):
    p = module.params
    before_ids = store.list_ids()
    res = store.capture(p['paths'], exclude=p['exclude'], labels=p['labels'], snapshot_id=p['id'],
                        check_mode=module.check_mode)
    after_ids = before_ids if res['existed'] else sorted(before_ids + [res['id']])
    result = dict(changed=res['changed'], id=res['id'], manifest=res['manifest'], roots=res['roots'],
                  entries=res['entries'], bytes_new=store.counters['bytes_new'],
                  diff=dict(before_header='snapshots in %s' % store.root, before=_ids_text(before_ids),
                            after_header='snapshots in %s' % store.root, after=_ids_text(after_ids)))
    return _with_stats(result, store)


def ensure_restored(module, store):
    res = store.restore(module.params['id'], verify=module.params['verify'], check_mode=module.check_mode)
    res['diff'] = dict(before_header='drift from snapshot %s' % res['id'], before=_drift_text(res['drift']),
                       after_header='drift from snapshot %s' % res['id'], after='')
    return _with_stats(res, store)


def ensure_verified(module, store):
    res = store.verify(module.params['id'])
    text = _drift_text(res['drift'])
    res['diff'] = dict(before_header='drift from snapshot %s' % res['id'], before=text,
                       after_header='drift from snapshot %s' % res['id'], after=text)
    _with_stats(res, store)
    if res['drift'] and module.params['verify']:
        raise SnapshotError('paths differ from snapshot %s: %s' % (res['id'], describe_drift(res['drift'])),
                            **dict((k, v) for k, v in res.items() if k != 'changed'))
    return res


def ensure_absent(module, store):
    before_ids = store.list_ids()
    res = store.remove([check_id(module.params['id'])], check_mode=module.check_mode)
    res['id'] = module.params['id']
    res['diff'] = _removal_diff(store, before_ids, res['removed'])
    return res


def ensure_query(module, store):
    return dict(changed=False, snapshots=store.summaries())


def ensure_pruned(module, store):
    p = module.params
    if p['keep'] < 0:
        raise SnapshotError('keep must be 0 or more, got %d' % p['keep'])
    before_ids = store.list_ids()
    res = store.prune(p['keep'], protect=p['protect'], check_mode=module.check_mode)
    res['diff'] = _removal_diff(store, before_ids, res['removed'])
    return res


STATES = dict(present=ensure_present, restored=ensure_restored, verified=ensure_verified, absent=ensure_absent,
              query=ensure_query, pruned=ensure_pruned)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            store=dict(type='path', required=True),
            state=dict(type='str', default='present', choices=list(STATES)),
            id=dict(type='str'),
            paths=dict(type='list', elements='path'),
            exclude=dict(type='list', elements='str', default=[]),
            labels=dict(type='dict', default={}),
            keep=dict(type='int'),
            protect=dict(type='list', elements='str', default=[]),
            verify=dict(type='bool', default=True),
        ),
        required_if=[
            ('state', 'present', ['paths']),
            ('state', 'restored', ['id']),
            ('state', 'verified', ['id']),
            ('state', 'absent', ['id']),
            ('state', 'pruned', ['keep']),
        ],
        supports_check_mode=True,
    )
    store = SnapshotStore(module.params['store'])
    try:
        result = STATES[module.params['state']](module, store)
    except SnapshotError as e:
        details = dict(e.details)
        details.pop('msg', None)
        details.pop('changed', None)
        for warning in store.warnings:
            module.warn(warning)
        module.fail_json(msg=e.msg, store=store.root, **details)
    except (IOError, OSError) as e:
        for warning in store.warnings:
            module.warn(warning)
        where = getattr(e, 'filename', None)
        module.fail_json(msg='snapshot store %s: %s%s' % (store.root, to_native(e.strerror or e),
                                                          ' (%s)' % where if where else ''),
                         path=where, store=store.root)
    for warning in store.warnings:
        module.warn(warning)
    if not module._diff:
        result.pop('diff', None)
    module.exit_json(**result)


if __name__ == '__main__':
    main()
