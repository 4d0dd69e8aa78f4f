#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Contributors to failsafe.deploy
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

DOCUMENTATION = r'''
---
module: release
short_description: Stage, switch, verify, quarantine, roll back and prune versioned releases
version_added: 0.1.0
description:
  - Manages versioned releases under an application root O(root), as C(releases/<id>/) directories with a
    C(current) symlink pointing at the active one, and a ledger C(.failsafe/ledger.json) that records the state of
    every release (V(staged), V(active), V(verified) or V(failed)) with timestamps and history.
  - V(staged) extracts a tar archive or copies a directory into a temporary directory beside the other releases and
    renames it into place, so a release directory is either complete or absent. Shared paths are linked in.
  - V(active) switches C(current) atomically with a temporary symlink and C(os.replace), then syncs the directory.
    It never goes through a moment without C(current).
  - V(rolled_back) quarantines a release and switches back to the most recently verified release that is not failed.
    A release that was staged or activated but never verified is never chosen, nor merely the previous directory.
  - A release marked V(failed) is quarantined. Staging, activating or verifying it again needs O(force=true).
  - Every write is atomic. The ledger is written to a temporary file, synced and renamed over the old one.
extends_documentation_fragment:
  - failsafe.deploy.common
attributes:
  check_mode:
    details: Every state plans and reports what it would change (including the ledger it would write) without
      touching the application root. V(staged) also checks the archive's members in check mode.
  diff_mode:
    support: full
    details: Before and after of C(current) and of the ledger entry of the release(s) concerned; for V(pruned) the
      list of releases.
options:
  root:
    description:
      - Application root on the target, holding C(releases/), C(current), C(shared/) and C(.failsafe/ledger.json).
    type: path
    required: true
  id:
    description:
      - Release id, the name of its directory under C(releases/). Letters, digits, V(.), V(_) and V(-) only, and
        neither V(.) nor V(..).
      - Required for V(staged), V(active), V(verified), V(failed) and V(absent).
      - For V(rolled_back) the release that failed; it is marked failed and never chosen as the target.
      - For V(pruned) a release that is kept whatever its state.
    type: str
  state:
    description:
      - V(staged) puts the release in C(releases/<id>/) from O(src) and records it as staged. Staging the same
        content again changes nothing; different content under an existing id is refused unless O(force=true).
      - V(active) makes C(current) point at the release. A verified release stays V(verified) in the ledger, any
        other becomes V(active). The release that was current before keeps its state.
      - V(verified) marks the release verified and makes it the last verified release.
      - V(failed) marks the release failed (quarantined) with O(reason). It does not switch C(current).
      - V(rolled_back) marks O(id) failed and switches C(current) to the most recently verified release other than
        O(id). When there is none, C(current) is removed if it pointed at O(id), and RV(target) is V(null).
      - V(absent) removes the release directory. The current release is refused. A failed release stays in the
        ledger, so it stays quarantined.
      - V(pruned) removes old releases, keeping the O(keep) most recently verified ones, the current release, the
        last verified release and failed releases (unless O(prune_failed=true)). Releases never verified and not
        current are removed. Leftover temporary directories of interrupted runs are removed too.
      - V(query) only reads.
    type: str
    choices: [staged, active, verified, failed, rolled_back, absent, pruned, query]
    default: query
  src:
    description:
      - Path on the target of a tar archive (V(.tar), V(.tar.gz), V(.tgz); any compression Python's C(tarfile)
        reads) or of a directory, for V(staged).
      - Archive members that would escape the release directory are refused, and nothing is staged. These are
        absolute names, names with V(..), symlinks whose target leaves the release, hard links to anything but a
        file extracted before them, and device or FIFO files.
      - Permission bits and modification times are kept; setuid, setgid and sticky bits and ownership are not.
        Files belong to the user the module runs as.
      - A directory is copied as it is, with symlinks copied as symlinks.
      - An archive is refused before anything is written when the sizes its members declare (what extracting it
        writes) add up to more than the free space of the file system of C(releases/), or than O(max_size).
    type: path
  max_size:
    description:
      - The largest release V(staged) extracts, as the sum of the sizes the members of the O(src) archive declare.
        Bytes, or a number with a unit (V(500M), V(2G); a unit is a power of 1024).
      - Unset or V(0), no limit beyond the free space of the file system of C(releases/).
    type: bytes
    version_added: 0.1.0
  shared:
    description:
      - Paths relative to the release that persist across releases. C(releases/<id>/<p>) becomes a relative
        symlink to C(shared/<p>) (for example V(../../shared/log)), replacing whatever the release had there.
        C(shared/<p>) is created as a directory if it does not exist.
    type: list
    elements: str
    default: []
  force:
    description:
      - Stage, activate or verify a release that the ledger marks V(failed) (quarantined). Staging it again
        extracts a fresh copy and resets its state to V(staged).
      - Replace a staged release whose content differs from O(src).
    type: bool
    default: false
  keep:
    description:
      - Number of the most recently verified releases that V(pruned) keeps.
    type: int
    default: 5
  prune_failed:
    description:
      - Let V(pruned) remove failed releases too. Their ledger entries stay, so they stay quarantined.
    type: bool
    default: false
  reason:
    description:
      - Why the release failed, stored in the ledger with V(failed) and V(rolled_back).
    type: str
  quarantine:
    description:
      - For V(rolled_back), whether O(id) is marked failed (quarantined).
      - V(false) switches back without marking O(id), for a release that was never shown bad (its deploy failed
        before it was activated, for a configuration, network or infrastructure cause). A corrected run deploys it
        again without O(force=true). A release already marked failed stays failed.
    type: bool
    default: true
notes:
  - Use one deploy lock (M(failsafe.deploy.deploy_state)) per application root. The module does not lock the
    ledger itself.
seealso:
  - module: failsafe.deploy.deploy_state
  - module: failsafe.deploy.snapshot
'''

EXAMPLES = r'''
- name: Stage release 1.4.2 from an uploaded archive, with persistent logs and uploads
  failsafe.deploy.release:
    root: /srv/app
    id: "1.4.2"
    state: staged
    src: /srv/app/artifacts/1.4.2.tar.gz
    shared:
      - log
      - public/uploads

- name: Switch current to it
  failsafe.deploy.release:
    root: /srv/app
    id: "1.4.2"
    state: active

- name: Mark it verified after the health checks passed
  failsafe.deploy.release:
    root: /srv/app
    id: "1.4.2"
    state: verified

- name: Quarantine it and go back to the last verified release
  failsafe.deploy.release:
    root: /srv/app
    id: "1.4.2"
    state: rolled_back
    reason: health check failed
  register: rollback

- name: Keep the five newest verified releases
  failsafe.deploy.release:
    root: /srv/app
    state: pruned
    keep: 5

- name: Read the ledger
  failsafe.deploy.release:
    root: /srv/app
  register: releases
'''

RETURN = r'''
id:
  description: The release id the call was about.
  returned: always
  type: str
  sample: "1.4.2"
current:
  description: Release that C(current) points at after the call (planned in check mode), V(null) if none.
  returned: always
  type: str
  sample: "1.4.2"
previous:
  description: Release that C(current) pointed at before the call.
  returned: always
  type: str
  sample: "1.4.1"
last_verified:
  description: The most recently verified release that is not failed.
  returned: always
  type: str
  sample: "1.4.1"
target:
  description: For V(rolled_back), the release switched to; V(null) when no verified release was available.
  returned: always
  type: str
  sample: "1.4.1"
ledger:
  description:
    - The ledger after the call, C(releases) maps each id to its C(state), C(history) (list of C(state), C(time),
      C(iso), C(event), C(reason)), epoch times C(staged), C(activated), C(verified), C(failed) with C(*_iso)
      strings, C(checksum) and C(reason).
  returned: always
  type: dict
  sample:
    current: "1.4.2"
    last_verified: "1.4.1"
    version: 1
    releases:
      "1.4.2":
        state: active
        checksum: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
        staged: 1767225600.0
        staged_iso: "2026-01-01T00:00:00Z"
        history: [{state: staged, time: 1767225600.0, iso: "2026-01-01T00:00:00Z", event: staged}]
releases:
  description: For V(query), the ledger's releases (the same as C(releases) in RV(ledger)).
  returned: when O(state=query)
  type: dict
free_bytes:
  description: Bytes available to unprivileged users on the file system of O(root).
  returned: when O(state=query)
  type: int
  sample: 10737418240
path:
  description: The release directory.
  returned: when O(state) is V(staged) or V(active)
  type: str
  sample: /srv/app/releases/1.4.2
checksum:
  description: sha256 of the archive, or of the directory tree (paths, modes, contents, link targets).
  returned: when O(state=staged)
  type: str
extracted:
  description: Whether the release directory was (or in check mode would be) written from O(src).
  returned: when O(state=staged)
  type: bool
linked:
  description: Shared paths whose link was (or would be) created or fixed.
  returned: when O(state=staged)
  type: list
  elements: str
removed:
  description: Release ids whose directory was (or would be) removed.
  returned: when O(state) is V(pruned) or V(absent)
  type: list
  elements: str
  sample: ["1.3.0", "1.3.1"]
kept:
  description: For V(pruned), the releases kept and why (newest verified, current, last verified, failed, protected).
  returned: when O(state=pruned)
  type: dict
cleaned:
  description: Temporary directories left in C(releases/) by interrupted runs that V(pruned) removed.
  returned: when O(state=pruned)
  type: list
  elements: str
quarantined:
  description:
    - Set when the call was refused because the release is failed.
    - For V(rolled_back), whether O(id) is marked failed after the call.
  returned: on refusal, and when O(state=rolled_back)
  type: bool
'''


from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.common.text.converters import to_native

# first: this collection's module_utils below load from the host's bytecode cache (module_utils/_bytecode.py)
from ansible_collections.failsafe.deploy.plugins.module_utils import _bytecode  # noqa: F401 pylint: disable=unused-import
from ansible_collections.failsafe.deploy.plugins.module_utils._release import (
    ReleaseError,
    ReleaseRoot,
    ensure_absent,
    ensure_active,
    ensure_failed,
    ensure_pruned,
    ensure_query,
    ensure_rolled_back,
    ensure_staged,
    ensure_verified,
)


def run(module):
    p = module.params
    rr = ReleaseRoot(p['root'])
    state = p['state']
    check = module.check_mode
    if state == 'query':
        return ensure_query(rr)
    if state == 'staged':
        return ensure_staged(rr, p['id'], p['src'], p['shared'], p['force'], check, max_size=p['max_size'] or None)
    if state == 'active':
        return ensure_active(rr, p['id'], p['force'], check)
    if state == 'verified':
        return ensure_verified(rr, p['id'], p['force'], check)
    if state == 'failed':
        return ensure_failed(rr, p['id'], p['reason'], check)
    if state == 'rolled_back':
        return ensure_rolled_back(rr, p['id'], p['reason'], check, quarantine=p['quarantine'])
    if state == 'absent':
        return ensure_absent(rr, p['id'], check)
    return ensure_pruned(rr, p['keep'], p['prune_failed'], p['id'], check)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            root=dict(type='path', required=True),
            id=dict(type='str'),
            state=dict(type='str', default='query',
                       choices=['staged', 'active', 'verified', 'failed', 'rolled_back', 'absent', 'pruned', 'query']),
            src=dict(type='path'),
            max_size=dict(type='bytes'),
            shared=dict(type='list', elements='str', default=[]),
            force=dict(type='bool', default=False),
            keep=dict(type='int', default=5),
            prune_failed=dict(type='bool', default=False),
            reason=dict(type='str'),
            quarantine=dict(type='bool', default=True),
        ),
        required_if=[
            ('state', 'staged', ('id', 'src')),
            ('state', 'active', ('id',)),
            ('state', 'verified', ('id',)),
            ('state', 'failed', ('id',)),
            ('state', 'absent', ('id',)),
        ],
        supports_check_mode=True,
    )
    if module.params['id'] == '':
        module.params['id'] = None
        if module.params['state'] in ('staged', 'active', 'verified', 'failed', 'absent'):
            module.fail_json(msg='id must not be empty for state=%s' % module.params['state'])
    try:
        result = run(module)
    except ReleaseError as e:
        module.fail_json(msg=e.msg, root=module.params['root'], **e.details)
    except (OSError, IOError) as e:
        module.fail_json(msg='%s: %s' % (getattr(e, 'filename', None) or module.params['root'], to_native(e)),
                         path=getattr(e, 'filename', None) or module.params['root'], errno=e.errno)
    if not module._diff:
        result.pop('diff', None)
    module.exit_json(**result)


if __name__ == '__main__':
    main()
