# -*- coding: utf-8 -*-
# Copyright: Contributors to failsafe.deploy
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Runs a module's main() as Ansible runs it: conftest.py makes exit_json/fail_json raise these exceptions for
every test here, and run_module catches them and returns the result."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import pytest

from ansible.module_utils.testing import patch_module_args


class AnsibleExitJson(Exception):
    """exit_json was called; args[0] is the result."""


class AnsibleFailJson(Exception):
    """fail_json was called; args[0] is the result, with failed=True and msg."""


def run_module(module, args, check=False, diff=False, expect=(AnsibleExitJson, AnsibleFailJson)):
    """Run module.main() with args (check/diff mode on request); return its result dict."""
    args = dict(args)
    if check:
        args['_ansible_check_mode'] = True
    if diff:
        args['_ansible_diff'] = True
    with patch_module_args(args):
        with pytest.raises(expect) as exc:
            module.main()
    return exc.value.args[0]
