#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Contributors to failsafe.deploy
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

DOCUMENTATION = r'''
---
module: reproduction
short_description: Reproduce an incident in staging and append the verdict to its report
version_added: 0.1.0
description:
  - Runs on the controller (an action plugin). Reads the incident report O(incident) (the JSON the
    C(failsafe.deploy.auto_rollback) callback wrote), re-runs its release with the deploy playbook O(playbook) on the
    staging hosts O(hosts), with the inventory, connection options and extra vars of this run (an
    C(ansible-playbook) of its own with the callback enabled, forced past a quarantine of the release in staging).
  - Says whether the failure reproduced - a failure at the same task with the same cause class - or not (the release
    deployed, or failed elsewhere or otherwise; the cause may then lie outside the release, a host crash or the
    network). The verdict is appended to the incident's report (C(reproductions) in the JSON, a section in the
    Markdown).
  - The playbook C(failsafe.deploy.reproduce) runs it.
extends_documentation_fragment:
  - failsafe.deploy.common
  - failsafe.deploy.common.action
attributes:
  action:
    details: Everything runs in the action plugin on the controller.
  check_mode:
    support: none
    details: A reproduction deploys to the staging hosts; it does not run under check mode.
  diff_mode:
    support: none
options:
  incident:
    description: The incident report (JSON) on the controller.
    type: path
    required: true
  hosts:
    description: The staging hosts, an inventory group (or one host) of this run's inventory.
    type: str
    required: true
  playbook:
    description: The deploy playbook that failed (a path, or a collection playbook by name).
    type: str
    default: failsafe.deploy.deploy
  step_timeout:
    description: Seconds the re-run may take.
    type: int
    default: 1800
'''

EXAMPLES = r'''
- name: Reproduce an incident on the staging group
  failsafe.deploy.reproduction:
    incident: /var/log/failsafe/inc-20260101T000000Z-ab12cd34.json
    hosts: staging
'''

RETURN = r'''
reproduction:
  description:
    - The verdict appended to the report - C(reproduced), C(words), C(original) and C(observed) failures (C(task),
      C(cause)), C(release), C(rc), C(duration), C(staging_hosts), C(log) and C(at).
  returned: always
  type: dict
reproduced:
  description: Whether the failure reproduced.
  returned: always
  type: bool
'''

from ansible.module_utils.basic import AnsibleModule

ARGUMENT_SPEC = dict(
    incident=dict(type='path', required=True),
    hosts=dict(type='str', required=True),
    playbook=dict(type='str', default='failsafe.deploy.deploy'),
    step_timeout=dict(type='int', default=1800),
)


def main():
    # Only reached when the action plugin was bypassed: a reproduction runs ansible-playbook from the controller.
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC)
    module.fail_json(msg='failsafe.deploy.reproduction runs on the controller through its action plugin; it cannot '
                         'run as a module on a host')


if __name__ == '__main__':
    main()
