#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Contributors to failsafe.deploy
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

DOCUMENTATION = r'''
---
module: health_check
short_description: Probe a service over HTTP, TCP or a command until it is healthy
version_added: 0.1.0
description:
  - Runs one probe repeatedly until it passes or the attempts run out, and reports every attempt.
  - An V(http) probe sends one request with C(ansible.module_utils.urls) and checks the status code, and optionally
    the body against a regular expression, a JMESPath expression over the JSON body, and the response latency.
  - A V(tcp) probe opens a TCP connection and closes it again.
  - A V(command) probe runs a program without a shell and checks its exit code, and optionally its standard output
    with the same body and JSON assertions as an HTTP probe.
  - Timing follows the M(ansible.builtin.wait_for) and task C(until) vocabulary. O(delay) is waited once before the
    first attempt, O(sleep) between attempts, and at most 1 + O(retries) attempts are made, each limited to
    O(timeout) seconds.
  - The module only reads. It never reports a change, and it runs its probe in check mode too.
extends_documentation_fragment:
  - failsafe.deploy.common
  - failsafe.deploy.common.read_only
  - failsafe.deploy.health_check
notes:
  - The probe runs on the target host, so V(127.0.0.1) is the target itself.
seealso:
  - module: ansible.builtin.uri
  - module: ansible.builtin.wait_for
'''

EXAMPLES = r'''
- name: Wait until the new release answers on /health with status ok
  failsafe.deploy.health_check:
    url: http://127.0.0.1:8080/health
    json_query: "status == 'ok'"
    max_latency: 0.5
    retries: 20
    sleep: 0.5

- name: Accept a 204 or a 200 that mentions ready
  failsafe.deploy.health_check:
    url: https://127.0.0.1:8443/ready
    status_code: [200, 204]
    body_regex: ready
    validate_certs: false
    headers:
      Authorization: "Bearer {{ health_token }}"

- name: Wait for the database port
  failsafe.deploy.health_check:
    port: 5432
    timeout: 2
    retries: 30

- name: Ask the service itself
  failsafe.deploy.health_check:
    cmd: [/usr/bin/supervisorctl, status, app]
    body_regex: RUNNING
    retries: 5
  register: app_health
'''

RETURN = r'''
elapsed:
  description: Seconds from the start of the module until the last attempt ended, O(delay) included.
  returned: always
  type: float
  sample: 1.532
attempts:
  description: Every attempt made, oldest first.
  returned: always
  type: list
  elements: dict
  contains:
    n:
      description: Attempt number, from 1.
      type: int
    ok:
      description: Whether the attempt passed.
      type: bool
    elapsed:
      description: Seconds since the start of the module when this attempt ended.
      type: float
    latency:
      description: Seconds the probe itself took.
      type: float
    error:
      description: Why the attempt failed, V(null) when it passed.
      type: str
    status:
      description: HTTP status, V(http) probes that got an answer only.
      type: int
    rc:
      description: Exit code, V(command) probes that ran only.
      type: int
  sample:
    - {n: 1, ok: false, elapsed: 0.002, latency: 0.001, error: "status 503 not in status_code [200]", status: 503}
    - {n: 2, ok: true, elapsed: 1.004, latency: 0.001, error: null, status: 200}
status:
  description: HTTP status of the last attempt, V(null) for other probes or when no answer came.
  returned: always
  type: int
  sample: 200
body:
  description: Response body or command output of the last attempt, cut to 4 KiB.
  returned: always
  type: str
  sample: '{"status": "ok", "version": "2.0.0"}'
json:
  description: The last body or command output parsed as JSON, V(null) when it is not JSON.
  returned: always
  type: raw
  sample: {status: ok, version: 2.0.0}
rc:
  description: Exit code of the last attempt of a V(command) probe that ran.
  returned: when a command probe ran
  type: int
  sample: 0
'''

import traceback

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

# first: this collection's module_utils below load from the host's bytecode cache (module_utils/_bytecode.py)
from ansible_collections.failsafe.deploy.plugins.module_utils import _bytecode  # noqa: F401 pylint: disable=unused-import
from ansible_collections.failsafe.deploy.plugins.module_utils._argspec import probe_argument_spec
from ansible_collections.failsafe.deploy.plugins.module_utils._health import (
    CHECK_OPTIONS, HAS_JMESPATH, JMESPATH_IMPORT_ERROR, CheckError, Matchers, command_argv, normalize_check,
    probe_command, probe_http, probe_tcp, run_probe, summarize,
)


def infer_type(params):
    if params['type']:
        return params['type']
    if params['url'] is not None:
        return 'http'
    if params['port'] is not None:
        return 'tcp'
    return 'command'


def build_probe(module, probe_type, matchers):
    p = module.params
    timeout = p['timeout']
    if probe_type == 'http':
        return lambda: probe_http(p['url'], matchers, method=p['method'].upper(), status_code=p['status_code'],
                                  headers=p['headers'], timeout=timeout, validate_certs=p['validate_certs'],
                                  use_proxy=p['use_proxy'])
    if probe_type == 'tcp':
        return lambda: probe_tcp(p['host'], p['port'], matchers, timeout=timeout)
    if not isinstance(p['cmd'], (list, str)):
        module.fail_json(msg='cmd must be a list of arguments or a string, got %s' % type(p['cmd']).__name__)
    argv = command_argv(p['cmd'])
    if not argv:
        module.fail_json(msg='cmd is empty')
    return lambda: probe_command(argv, matchers, expect_rc=p['expect_rc'], timeout=timeout)


def validate(module, probe_type):
    """The same rules as every check list of the collection (verify, preflight, rollback): one definition."""
    p = module.params
    if p['json_query'] is not None and not HAS_JMESPATH:
        module.fail_json(msg=missing_required_lib('jmespath', reason='for json_query'),
                         exception=''.join(traceback.format_exception(
                             type(JMESPATH_IMPORT_ERROR), JMESPATH_IMPORT_ERROR,
                             JMESPATH_IMPORT_ERROR.__traceback__)))
    spec = dict((k, p[k]) for k in CHECK_OPTIONS if k in p and k != 'name')
    spec['type'] = probe_type
    try:
        normalize_check(spec)
    except CheckError as e:
        module.fail_json(msg=e.msg.split(': ', 1)[-1])


def ensure_healthy(module):
    p = module.params
    probe_type = infer_type(p)
    validate(module, probe_type)
    matchers = Matchers(body_regex=p['body_regex'], json_query=p['json_query'], max_latency=p['max_latency'])
    probe = build_probe(module, probe_type, matchers)
    run = run_probe(probe, retries=p['retries'], delay=p['delay'], sleep=p['sleep'])
    result = dict(changed=False, type=probe_type, elapsed=run['elapsed'], attempts=run['attempts'])
    result.update(summarize(run['last']))
    return run['ok'], run['last'], result


def main():
    module = AnsibleModule(
        argument_spec=probe_argument_spec(),
        mutually_exclusive=[('url', 'port', 'cmd')],
        required_one_of=[('url', 'port', 'cmd')],
        required_if=[
            ('type', 'http', ('url',)),
            ('type', 'tcp', ('port',)),
            ('type', 'command', ('cmd',)),
        ],
        supports_check_mode=True,
    )
    ok, last, result = ensure_healthy(module)
    if not ok:
        attempts = len(result['attempts'])
        module.fail_json(msg='health check failed after %d attempts: %s' % (attempts, last.error), **result)
    module.exit_json(**result)


if __name__ == '__main__':
    main()
