# -*- coding: utf-8 -*-
# Copyright: Contributors to failsafe.deploy
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import re

# The options of one health check probe, written once: the health_check module's own options (DOCUMENTATION) and
# the suboptions of each check of the transaction module's check lists (CHECKS). The matching argument specs come
# from module_utils._argspec (probe_argument_spec, check_lists_argument_spec). Inside a check list a reference
# O(x) becomes O(<list>[].x), and the defaults are left out: an option a check does not set comes from the call's
# check defaults first.
_PROBE = r'''
  type:
    description:
      - The kind of probe.
      - When omitted it is inferred, V(http) when O(url) is set, V(tcp) when O(port) is set and V(command) when
        O(cmd) is set.
    type: str
    choices: [http, tcp, command]
  url:
    description:
      - URL to request for an V(http) probe.
      - Mutually exclusive with O(port) and O(cmd).
    type: str
  method:
    description: HTTP method of an V(http) probe.
    type: str
    default: GET
  status_code:
    description:
      - HTTP status codes that count as healthy. Redirects of V(GET) and V(HEAD) requests are followed first.
    type: list
    elements: int
    default: [200]
  body_regex:
    description:
      - A Python regular expression (multi-line mode) that must match somewhere in the response body of an V(http)
        probe or in the standard output of a V(command) probe.
    type: str
  json_query:
    description:
      - A JMESPath expression evaluated on the body (V(http)) or standard output (V(command)) parsed as JSON. The
        attempt passes only when the result is truthy in JMESPath terms. V(false), V(null), an empty string, an
        empty list and an empty object are false; every number, zero included, is true. Compare explicitly, for
        example V(status == 'ok') or V(errors == `0`).
      - Needs the C(jmespath) Python library on the target.
    type: str
  max_latency:
    description:
      - Slowest acceptable probe in seconds. An attempt that took longer fails even if everything else passed.
    type: float
  host:
    description: Host to connect to for a V(tcp) probe.
    type: str
    default: 127.0.0.1
  port:
    description:
      - TCP port for a V(tcp) probe.
      - Mutually exclusive with O(url) and O(cmd).
    type: int
  cmd:
    description:
      - Command of a V(command) probe, as an argument list or as a string that is split into words like a shell
        would, without ever running a shell.
      - Mutually exclusive with O(url) and O(port).
    type: raw
  expect_rc:
    description: Exit code of a healthy V(command) probe.
    type: int
    default: 0
  timeout:
    description:
      - Seconds one attempt may take (connect and read for V(http), connect for V(tcp), run time for V(command),
        after which the command and its process group are killed).
    type: float
    default: 5
  retries:
    description:
      - Further attempts after a failed first one. At most 1 + O(retries) attempts are made.
    type: int
    default: 10
  delay:
    description: Seconds to wait before the first attempt.
    type: float
    default: 0
  sleep:
    description: Seconds to wait between two attempts.
    type: float
    default: 1
  validate_certs:
    description: Whether an V(http) probe verifies the server's TLS certificate.
    type: bool
    default: true
  use_proxy:
    description:
      - Whether an V(http) probe uses a proxy from the environment (C(http_proxy), C(https_proxy), C(no_proxy)).
    type: bool
    default: true
  headers:
    description:
      - Extra HTTP request headers for an V(http) probe.
      - A header carrying a secret should come from a variable of a task with C(no_log), as with
        M(ansible.builtin.uri).
    type: dict
'''

_NAME = r'''
  name:
    description: Name of the check in messages and the report (else its URL, port or command).
    type: str
'''

_LISTS = r'''
options:
  checks:
    description:
      - Health checks, each a dict of the options of M(failsafe.deploy.health_check) and a C(name). Every option
        means the same in V(open), V(verify) and V(rollback).
      - An option a check does not set comes from O(check_defaults), else it has the default of
        M(failsafe.deploy.health_check).
    type: list
    elements: dict
    default: []
    suboptions: {checks}
  check_defaults:
    description: Values for the check options a check does not set.
    type: dict
    suboptions: {check_defaults}
  rollback_checks:
    description:
      - Checks for the rollback V(open) runs when it finishes a dead run's transaction; default O(checks).
      - An option a check does not set comes from O(rollback_check_defaults).
    type: list
    elements: dict
    suboptions: {rollback_checks}
  rollback_check_defaults:
    description: O(check_defaults) for O(rollback_checks).
    type: dict
    suboptions: {rollback_check_defaults}
'''


def _nested(prefix, named):
    """The probe options as suboptions of the option ``prefix`` (their references and indentation adjusted)."""
    text = (_NAME if named else '') + re.sub(r'\n    default: [^\n]*', '', _PROBE)
    text = text.replace('O(', 'O(%s' % prefix)
    return '\n'.join(('    ' + line) if line.strip() else '' for line in text.splitlines())


class ModuleDocFragment(object):
    """DOCUMENTATION (the probe options) and CHECKS (the check lists) are set below, from _PROBE: the class body
    holds literal strings only, as ansible-test's YAML check of doc fragments reads them."""


ModuleDocFragment.DOCUMENTATION = 'options:' + _PROBE
ModuleDocFragment.CHECKS = _LISTS.format(
    checks=_nested('checks[].', True), check_defaults=_nested('check_defaults.', False),
    rollback_checks=_nested('rollback_checks[].', True),
    rollback_check_defaults=_nested('rollback_check_defaults.', False))
