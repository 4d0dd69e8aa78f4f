#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Contributors to failsafe.deploy
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

DOCUMENTATION = r'''
---
module: metric_gate
short_description: Judge a canary wave by Prometheus metrics, pass, pause for a person or fail
version_added: 0.3.0
description:
  - Runs on the controller (an action plugin; nothing runs on the managed host). Queries a Prometheus server over
    its HTTP API and decides whether a deploy may go on.
  - Absolute thresholds (O(thresholds)) make O(count) instant queries (C(/api/v1/query)), O(interval) seconds
    apart, after O(bake) seconds; each value outside C(min)/C(max) is a failure; more than the failure limit fails
    the gate. When a query returns several series, each bound is judged on its worst series (the lowest against
    C(min), the highest against C(max)), so no series hides another; the result names the series that breached.
  - Comparisons (O(comparisons)) judge the canary against the baseline in the manner of Kayenta with range queries
    (C(/api/v1/query_range)) over O(window) seconds. Per metric, a Mann-Whitney U test and the Hodges-Lehmann
    shift against a C(tolerance) in the metric's bad C(direction); a metric fails when its shift is beyond the
    tolerance and the test is significant at O(confidence), or the canary dominates the baseline (O(dominance)),
    or most canary values lie beyond the baseline's whole range (a gross regression, such as a canary 100 times
    worse on 7 of 10 samples). A failed C(critical) metric fails the gate; otherwise the weighted score decides
    against O(pass_score) and O(marginal_score). Each metric's reason says which way is bad for it.
  - The shift is relative to the baseline's median C(m); for a fall of a share (every value of both sides between
    0 and 1, such as a success rate) it is relative to the square root of C(m) times C(1-m) when that is smaller,
    since near 1 what a share can lose is its distance to 1. A success rate falling from 0.99 to 0.80 is then a fall of 191% and fails
    at the default tolerance; 0.99 to 0.985 is 5% and passes.
  - Missing samples (NaN, infinity) of a comparison are dropped; fewer than C(min_samples) valid values on a side, or
    valid values below C(min_valid_share) of a side's samples, is no data for that metric.
  - In the queries, C($canary) and C($baseline) become regular expressions matching the C(instance) labels of the
    canary and baseline hosts (O(instance_format)), for example C(instance=~"$canary").
  - "No data (an empty result, NaN, a query that does not parse, a Prometheus that does not answer) is decided by
    the no-data policy: V(fail), V(pause) (inconclusive: a person decides) or V(ignore) (left out; nothing left is
    inconclusive). It is never a silent pass, and the result says which policy decided."
  - "A marginal or inconclusive result with O(on_marginal=pause) waits for a person: C(promote) or C(abort) written
    to O(decision_file), which the C(failsafe.deploy.canary_decision) playbook does. The gate never proceeds by
    itself; after O(pause_timeout) seconds without a decision it aborts (fails)."
  - The result, C(failsafe_metric_gate), carries every query, value, threshold and the verdict; the
    C(failsafe.deploy.auto_rollback) callback classifies a failed gate as a health/metric regression and shows them
    in the incident report.
extends_documentation_fragment:
  - failsafe.deploy.common
  - failsafe.deploy.common.action
attributes:
  action:
    details: Everything runs in the action plugin on the controller.
  check_mode:
    details: Check mode queries nothing and reports what the gate would query.
  diff_mode:
    support: none
options:
  prometheus_url:
    description: Base URL of the Prometheus server (C(/api/v1/...) is added).
    type: str
    required: true
  thresholds:
    description: Absolute thresholds, each judged on O(count) instant queries.
    type: list
    elements: dict
    default: []
    suboptions:
      name: &metric_name
        description: Name of the metric in the result and the report (unique within the gate).
        type: str
        required: true
      query:
        description: PromQL instant query; C($canary) and C($baseline) are replaced as described above.
        type: str
        required: true
      min:
        description: Lowest acceptable value.
        type: float
      max:
        description: Highest acceptable value.
        type: float
      failure_limit:
        description: Failed measurements allowed for this metric (O(failure_limit) when not set).
        type: int
      no_data: &metric_no_data
        description: No-data policy of this metric (O(no_data) when not set).
        type: str
        choices: [fail, pause, ignore]
  comparisons:
    description: Canary-versus-baseline comparisons, each judged on range queries over O(window) seconds.
    type: list
    elements: dict
    default: []
    suboptions:
      name: *metric_name
      canary_query:
        description: PromQL for the canary's samples (usually with C(instance=~"$canary")).
        type: str
        required: true
      baseline_query:
        description: PromQL for the baseline's samples (usually with C(instance=~"$baseline")).
        type: str
        required: true
      direction:
        description: Which change is bad. V(increase) (errors, latency), V(decrease) (throughput, success rate) or
          V(either).
        type: str
        default: increase
        choices: [increase, decrease, either]
      tolerance:
        description: Relative shift of the canary against the baseline's median that is still acceptable (0.25 is 25%).
        type: float
        default: 0.25
      critical:
        description: A failure of this metric fails the gate whatever the score.
        type: bool
        default: false
      weight:
        description: Weight of this metric in the score.
        type: float
        default: 1.0
      no_data: *metric_no_data
      min_samples:
        description: Fewer valid samples than this on either side count as no data.
        type: int
        default: 3
      min_valid_share:
        description:
          - Lowest share (0 to 1) of a side's samples that must be valid (not NaN or infinite); below it the
            metric has no data and its no-data policy decides. The result says how many samples were missing.
          - V(0) judges whatever valid samples there are (at least C(min_samples)).
        type: float
        default: 0.5
  canary_hosts:
    description:
      - Inventory hosts whose instances are C($canary).
      - Default, every host of the play's waves done so far (this one included).
    type: list
    elements: str
  baseline_hosts:
    description:
      - Inventory hosts whose instances are C($baseline).
      - Default, the play's hosts not deployed yet (none in the last wave, where comparisons are then not run and
        the result says so).
    type: list
    elements: str
  instance_format:
    description: The C(instance) label of a host; C({host}) is its C(ansible_host) (else its name), C({name}) its name.
    type: str
    default: '{host}:8080'
  bake:
    description: Seconds to wait before the first measurement (the bake time).
    type: float
    default: 0
  interval:
    description: Seconds between two measurements of a threshold.
    type: float
    default: 10
  count:
    description: Measurements per threshold.
    type: int
    default: 3
  failure_limit:
    description: Failed measurements a threshold may have and still pass.
    type: int
    default: 0
  no_data:
    description: What a measurement or metric without data means. V(fail), V(pause) or V(ignore).
    type: str
    default: fail
    choices: [fail, pause, ignore]
  window:
    description: Seconds of history the comparisons read (default, the time since the gate started, at least 30).
    type: float
  step:
    description: Seconds between two samples of a comparison's range query (default, a thirtieth of the window).
    type: float
  confidence:
    description: Confidence level of the Mann-Whitney U test.
    type: float
    default: 0.98
  dominance:
    description: Share of canary-baseline pairs in which the canary is worse that fails a metric beyond its tolerance.
    type: float
    default: 0.75
  pass_score:
    description: Lowest score (percent of the comparisons' weight that passed) that passes.
    type: float
    default: 95
  marginal_score:
    description: Lowest score that is marginal rather than failed.
    type: float
    default: 75
  on_marginal:
    description: V(pause) waits for a person's decision; V(fail) fails the gate.
    type: str
    default: pause
    choices: [pause, fail]
  decision_file:
    description:
      - File on the controller the decision is read from (C(promote) or C(abort)); C(<file>.paused) says the gate
        waits. Default C(failsafe-canary/<failsafe_run_id>.decision) in the current directory.
    type: path
  pause_timeout:
    description: Seconds to wait for a decision before aborting; 0 waits for ever.
    type: float
    default: 0
  timeout:
    description: Seconds per Prometheus request.
    type: float
    default: 5
  headers:
    description: HTTP headers sent to Prometheus (for example an C(Authorization) header). Never logged.
    type: dict
    default: {}
  validate_certs:
    description: Verify the TLS certificate of an https Prometheus.
    type: bool
    default: true
seealso:
  - name: Canary waves
    description: The playbook that deploys in waves with this gate between them (playbooks/canary.yml).
    link: https://github.com/failsafe-deploy/failsafe.deploy/blob/main/docs/canary.md
'''

EXAMPLES = r'''
# Once per wave, inside a deploy play. The auto_rollback callback counts a failure only on a host with an open
# transaction: run the gate on such a host (failsafe.deploy.canary picks the wave's first host that deployed);
# run_once is enough when every host of the wave deploys.
- name: Judge this wave by its error rate and against the hosts not deployed yet
  failsafe.deploy.metric_gate:
    prometheus_url: http://prometheus.example.com:9090
    bake: 60
    interval: 10
    count: 3
    no_data: fail
    thresholds:
      - name: error_rate
        query: >-
          sum(rate(app_errors_total{instance=~"$canary"}[1m]))
          / sum(rate(app_request_duration_seconds_count{instance=~"$canary"}[1m]))
        max: 0.02
      - name: p99_latency
        query: >-
          histogram_quantile(0.99, sum by (le) (rate(app_request_duration_seconds_bucket{instance=~"$canary"}[1m])))
        max: 0.5
    comparisons:
      - name: error_ratio
        canary_query: sum(rate(app_errors_total{instance=~"$canary"}[30s]))
        baseline_query: sum(rate(app_errors_total{instance=~"$baseline"}[30s]))
        direction: increase
        critical: true
  run_once: true
'''

RETURN = r'''
verdict:
  description: V(pass), V(marginal) or V(fail).
  returned: always
  type: str
  sample: fail
failsafe_metric_gate:
  description: What decided the gate, for the incident report.
  returned: always
  type: dict
  contains:
    verdict:
      description: V(pass), V(marginal) or V(fail).
      type: str
    reason:
      description: Why, naming the metrics, values, thresholds and no-data policies that decided it.
      type: str
    prometheus_url:
      description: The server queried.
      type: str
    canary_instances:
      description: Instance labels that C($canary) matched.
      type: list
      elements: str
    baseline_instances:
      description: Instance labels that C($baseline) matched.
      type: list
      elements: str
    analyses:
      description:
        - One entry per threshold (C(kind=threshold)) with C(query), C(values), C(thresholds), C(failures),
          C(breaching_series) (each series outside a bound, with its labels, the bound, its worst value and in how many
          measurements) and C(verdict), and one for the comparisons (C(kind=canary)) with C(score) and C(metrics)
          (each with its queries, sample values, how many samples each side had and how many were missing
          (C(total), C(dropped)), statistics, C(bad) (which way is bad), status and reason).
      type: list
      elements: dict
    decision:
      description: After a pause, the person's decision (C(promote) or C(abort)), the seconds waited and the file.
      type: dict
      returned: when the gate paused
    wave:
      description: Hosts of this wave, done so far and not deployed yet.
      type: dict
  sample:
    verdict: fail
    reason: "error_rate: 3 of 3 measurement(s) failed (limit 0): 3 outside <= 0.05"
msg:
  description: One line saying what the gate decided and why.
  returned: always
  type: str
'''

from ansible.module_utils.basic import AnsibleModule

NO_DATA_POLICIES = ('fail', 'pause', 'ignore')
THRESHOLD_SPEC = dict(
    name=dict(type='str', required=True),
    query=dict(type='str', required=True),
    min=dict(type='float'),
    max=dict(type='float'),
    failure_limit=dict(type='int'),
    no_data=dict(type='str', choices=list(NO_DATA_POLICIES)),
)
COMPARISON_SPEC = dict(
    name=dict(type='str', required=True),
    canary_query=dict(type='str', required=True),
    baseline_query=dict(type='str', required=True),
    direction=dict(type='str', default='increase', choices=['increase', 'decrease', 'either']),
    tolerance=dict(type='float', default=0.25),
    critical=dict(type='bool', default=False),
    weight=dict(type='float', default=1.0),
    no_data=dict(type='str', choices=list(NO_DATA_POLICIES)),
    min_samples=dict(type='int', default=3),
    min_valid_share=dict(type='float', default=0.5),
)
ARGUMENT_SPEC = dict(
    prometheus_url=dict(type='str', required=True),
    thresholds=dict(type='list', elements='dict', default=[], options=THRESHOLD_SPEC),
    comparisons=dict(type='list', elements='dict', default=[], options=COMPARISON_SPEC),
    canary_hosts=dict(type='list', elements='str'),
    baseline_hosts=dict(type='list', elements='str'),
    instance_format=dict(type='str', default='{host}:8080'),
    bake=dict(type='float', default=0),
    interval=dict(type='float', default=10),
    count=dict(type='int', default=3),
    failure_limit=dict(type='int', default=0),
    no_data=dict(type='str', default='fail', choices=list(NO_DATA_POLICIES)),
    window=dict(type='float'),
    step=dict(type='float'),
    confidence=dict(type='float', default=0.98),
    dominance=dict(type='float', default=0.75),
    pass_score=dict(type='float', default=95, no_log=False),
    marginal_score=dict(type='float', default=75),
    on_marginal=dict(type='str', default='pause', choices=['pause', 'fail']),
    decision_file=dict(type='path'),
    pause_timeout=dict(type='float', default=0),
    timeout=dict(type='float', default=5),
    headers=dict(type='dict', default={}, no_log=True),
    validate_certs=dict(type='bool', default=True),
)


def main():
    # Only reached when the action plugin was bypassed: this gate queries Prometheus from the controller.
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    module.fail_json(msg='failsafe.deploy.metric_gate runs on the controller through its action plugin; it cannot '
                         'run as a module on a host')


if __name__ == '__main__':
    main()
