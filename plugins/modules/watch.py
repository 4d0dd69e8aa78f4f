#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Contributors to failsafe.deploy
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

DOCUMENTATION = r'''
---
module: watch
short_description: Open the watch window of a committed deploy, or act on an alert inside it
version_added: 0.1.0
description:
  - Runs on the controller (an action plugin). See docs/watch.md.
  - O(state=open) records that the committed deploy O(run_id) of O(service) is watched for O(duration) seconds
    from now, in C(<dir>/<service>.json), with the hosts to roll back and where each keeps its journal. The
    C(failsafe.deploy.commit) role calls it when C(failsafe_watch) is set. A newer deploy of the service replaces it.
  - O(state=alert) decides what an Alertmanager webhook body O(payload) does (the rulebook
    C(failsafe.deploy.watch) calls it through the playbook C(failsafe.deploy.watch)). For each service its firing
    alerts name (label C(service), C(failsafe_service) or C(deployment)), the first alert the window watches
    (by C(alertname), or by its rule's expression, C(g0.expr) of its C(generatorURL)) inside the window claims the
    deploy (a claim file created with O_EXCL, so that of any number of alerts arriving at once exactly one wins) and
    runs the rollback playbook O(rollback_playbook) for that deploy's run id on its hosts, then writes an incident
    report that says the watch triggered it and which alert. A later alert for the same deploy does nothing; an
    alert after the window only notifies (the webhook of E(FAILSAFE_WEBHOOK_URL), if set).
  - A body that is not an Alertmanager notification, an alert naming no service, and an alert for a service no
    window was opened for are refused with a message saying why; nothing is rolled back and nothing is written but
    the decision log C(<dir>/watch.log).
extends_documentation_fragment:
  - failsafe.deploy.common
  - failsafe.deploy.common.action
attributes:
  action:
    details: Everything runs in the action plugin on the controller.
  check_mode:
    support: none
    details: It records a window or rolls a deploy back; it does not run under check mode.
  diff_mode:
    support: none
options:
  state:
    description: V(open) records a window, V(alert) acts on an alert.
    type: str
    choices: [open, alert]
    required: true
  dir:
    description:
      - Directory of the windows, the claims and the decision log on the controller. The deploy and the rulebook
        must share it.
      - Defaults to E(FAILSAFE_WATCH_DIR), else C(~/.failsafe-deploy/watch).
    type: path
  service:
    description: The service (the deployment's name) the window is about. O(state=open) only.
    type: str
  run_id:
    description: The run id of the committed deploy. O(state=open) only.
    type: str
  release:
    description: The release that deploy committed. O(state=open) only.
    type: str
  hosts:
    description:
      - The hosts to roll back, each with where it keeps its journal (C(state_dir), C(name)). O(state=open) only.
    type: dict
  duration:
    description: Seconds the window lasts from now. O(state=open) only.
    type: int
  alerts:
    description: Alert names (C(alertname)) the window counts. With O(queries) empty too, every alert counts.
    type: list
    elements: str
    default: []
  queries:
    description: Prometheus rule expressions the window counts (compared with whitespace collapsed).
    type: list
    elements: str
    default: []
  inventory:
    description: Inventory sources the rollback runs with (the deploy's, recorded in the window). O(state=open) only.
    type: list
    elements: str
    default: []
  payload:
    description: The Alertmanager webhook body (C(ansible_eda.event.payload)). O(state=alert) only.
    type: raw
  report_dir:
    description:
      - Where the incident report of a rollback goes. O(state=alert) only.
      - Defaults to E(FAILSAFE_REPORT_DIR), else C(<dir>/incidents).
    type: path
  rollback_playbook:
    description: The rollback playbook, run as C(ansible-playbook) of its own. O(state=alert) only.
    type: str
    default: failsafe.deploy.rollback
  step_timeout:
    description: Seconds the rollback may take. O(state=alert) only.
    type: int
    default: 900
'''

EXAMPLES = r'''
- name: Watch this deploy for ten minutes
  failsafe.deploy.watch:
    state: open
    service: web
    run_id: "{{ failsafe_run_id }}"
    release: 1.4.2
    hosts: {web-1: {state_dir: /var/lib/failsafe-deploy, name: web}}
    duration: 600
    alerts: [HighErrorRate]

- name: Act on an alert from Alertmanager (the rulebook's playbook)
  failsafe.deploy.watch:
    state: alert
    payload: "{{ ansible_eda.event.payload }}"
'''

RETURN = r'''
window:
  description: The window recorded (O(state=open)).
  returned: when state is open
  type: dict
decisions:
  description:
    - One per service the alerts name (and per refused alert) - C(decision) (rollback, duplicate, after_window,
      not_watched, resolved, refused), C(message), C(service), C(alert), C(incident_id), and for a rollback
      C(report) and C(rollback) (C(rc), C(hosts), C(reason)).
  returned: when state is alert
  type: list
  elements: dict
'''

from ansible.module_utils.basic import AnsibleModule

ARGUMENT_SPEC = dict(
    state=dict(type='str', choices=['open', 'alert'], required=True),
    dir=dict(type='path'),
    service=dict(type='str'),
    run_id=dict(type='str'),
    release=dict(type='str'),
    hosts=dict(type='dict'),
    duration=dict(type='int'),
    alerts=dict(type='list', elements='str', default=[]),
    queries=dict(type='list', elements='str', default=[]),
    inventory=dict(type='list', elements='str', default=[]),
    payload=dict(type='raw'),
    report_dir=dict(type='path'),
    rollback_playbook=dict(type='str', default='failsafe.deploy.rollback'),
    step_timeout=dict(type='int', default=900),
)
REQUIRED_IF = [('state', 'open', ('service', 'run_id', 'release', 'hosts', 'duration'))]


def main():
    # Only reached when the action plugin was bypassed: the watch lives on the controller.
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, required_if=REQUIRED_IF)
    module.fail_json(msg='failsafe.deploy.watch runs on the controller through its action plugin; it cannot run as '
                         'a module on a host')


if __name__ == '__main__':
    main()
