#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Contributors to failsafe.deploy
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

DOCUMENTATION = r'''
---
module: rehearsal
short_description: Rehearse a release and its rollback in staging, and record the rehearsal
version_added: 0.1.0
description:
  - Runs on the controller (an action plugin). On the staging hosts O(hosts), with the inventory, the connection
    options and the extra vars of this run, it runs the deploy playbook O(playbook) as production will, in steps,
    each a C(ansible-playbook) of its own with the C(failsafe.deploy.auto_rollback) callback enabled.
  - C(drill) deploys the release over what the staging hosts run (as production will deploy it over what it runs)
    with a failure injected after the activation (the verify step's first task fails), and the callback rolls it
    back; C(restore_proven) reads the drill's incident report, which must say that the deploy was rolled back and
    the restore verified on every staging host; C(deploy) then deploys the release again and runs its checks (the
    playbook's verify step), forced past the quarantine the drill left in staging. A failed drill is a failed
    rehearsal, whatever the deploys did; a step after a failed one is not run.
  - The staging hosts should run a release other than the one rehearsed (the drill needs one to roll back to).
  - Writes the rehearsal record in O(store), named by the sha256 of O(archive) (C(<sha256>.json)), which the
    production preflight reads under C(failsafe_require_rehearsal) - the release, the archive's sha256, the
    collection's version, the git commit of the playbook's checkout, the staging hosts, each step's outcome,
    duration and log, and where the record lives. The drill's incident report and each step's log are kept beside
    it (C(<sha256>.d/)).
  - The playbook C(failsafe.deploy.rehearse) runs it.
extends_documentation_fragment:
  - failsafe.deploy.common
  - failsafe.deploy.common.action
attributes:
  action:
    details: Everything runs in the action plugin on the controller.
  check_mode:
    support: none
    details: A rehearsal deploys to the staging hosts; it does not run under check mode.
  diff_mode:
    support: none
options:
  release:
    description: The release to rehearse (the deploy's C(failsafe_release_id)).
    type: str
    required: true
  archive:
    description: The release archive on the controller (the deploy's C(failsafe_release_archive)); its sha256 names
      the record.
    type: path
    required: true
  hosts:
    description: The staging hosts, an inventory group (or one host) of this run's inventory.
    type: str
    required: true
  store:
    description: The directory on the controller of the rehearsal records (C(failsafe_rehearsal_store)).
    type: path
    required: true
  playbook:
    description: The deploy playbook production runs (a path, or a collection playbook by name).
    type: str
    default: failsafe.deploy.deploy
  step_timeout:
    description: Seconds each step may take before it is stopped and counted as failed.
    type: int
    default: 1800
'''

EXAMPLES = r'''
- name: Rehearse release 2.4.1 on the staging group
  failsafe.deploy.rehearsal:
    release: 2.4.1
    archive: dist/app-2.4.1.tar.gz
    hosts: staging
    store: /srv/failsafe/rehearsals
'''

RETURN = r'''
record:
  description:
    - The rehearsal record written (C(release), C(archive_sha256), C(collection_version), C(playbook_commit),
      C(playbook_dirty), C(staging_hosts), C(steps) with each C(name), C(outcome) (V(ok), V(failed) or V(not run)),
      C(duration), C(rc) and C(log), C(passed), C(started_iso), C(finished_iso) and C(record), its path).
  returned: always
  type: dict
passed:
  description: Whether the rehearsal passed (every step ok).
  returned: always
  type: bool
'''

from ansible.module_utils.basic import AnsibleModule

ARGUMENT_SPEC = dict(
    release=dict(type='str', required=True),
    archive=dict(type='path', required=True),
    hosts=dict(type='str', required=True),
    store=dict(type='path', required=True),
    playbook=dict(type='str', default='failsafe.deploy.deploy'),
    step_timeout=dict(type='int', default=1800),
)


def main():
    # Only reached when the action plugin was bypassed: a rehearsal runs ansible-playbook from the controller.
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC)
    module.fail_json(msg='failsafe.deploy.rehearsal runs on the controller through its action plugin; it cannot run '
                         'as a module on a host')


if __name__ == '__main__':
    main()
