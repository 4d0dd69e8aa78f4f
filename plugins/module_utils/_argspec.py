# -*- coding: utf-8 -*-
# Private to this collection: not a public API.
# Copyright: Contributors to failsafe.deploy
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Argument specs of the option groups several modules share, each beside the doc fragment that documents it
(plugins/doc_fragments): the deploy state (``failsafe.deploy.state``) and the health check probe
(``failsafe.deploy.health_check``). Ansible validates nested settings through ``options`` (suboptions)."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import copy

from ansible_collections.failsafe.deploy.plugins.module_utils._health import CHECK_OPTIONS

STATE_DIR = '/var/lib/failsafe-deploy'

# The type of each probe option; the defaults are CHECK_OPTIONS', the one list every check is normalized with.
_PROBE_TYPES = (
    ('type', dict(type='str', choices=['http', 'tcp', 'command'])),
    ('url', dict(type='str')),
    ('method', dict(type='str')),
    ('status_code', dict(type='list', elements='int')),
    ('body_regex', dict(type='str')),
    ('json_query', dict(type='str')),
    ('max_latency', dict(type='float')),
    ('host', dict(type='str')),
    ('port', dict(type='int')),
    ('cmd', dict(type='raw')),
    ('expect_rc', dict(type='int')),
    ('timeout', dict(type='float')),
    ('retries', dict(type='int')),
    ('delay', dict(type='float')),
    ('sleep', dict(type='float')),
    ('validate_certs', dict(type='bool')),
    ('use_proxy', dict(type='bool')),
    ('headers', dict(type='dict')),
)


def state_argument_spec():
    """``state_dir`` and ``name``: where a host keeps a deployment's journal, lock and history."""
    return dict(
        state_dir=dict(type='path', default=STATE_DIR),
        name=dict(type='str', default='app'),
    )


def probe_argument_spec(defaults=True):
    """The options of one health check probe. ``defaults=False`` for a check of a list, whose unset options come
    from the call's check defaults first (the engine fills in the rest from CHECK_OPTIONS)."""
    spec = {}
    for key, option in _PROBE_TYPES:
        option = dict(option)
        if defaults and CHECK_OPTIONS[key] is not None:
            option['default'] = copy.deepcopy(CHECK_OPTIONS[key])
        spec[key] = option
    return spec


def check_lists_argument_spec():
    """``checks``, ``check_defaults``, ``rollback_checks`` and ``rollback_check_defaults`` of a transaction."""
    return dict(
        checks=dict(type='list', elements='dict', default=[], options=_check()),
        check_defaults=dict(type='dict', options=probe_argument_spec(defaults=False)),
        rollback_checks=dict(type='list', elements='dict', options=_check()),
        rollback_check_defaults=dict(type='dict', options=probe_argument_spec(defaults=False)),
    )


def _check():
    """One check of a list: the probe options without defaults, and a name."""
    return dict(probe_argument_spec(defaults=False), name=dict(type='str'))
