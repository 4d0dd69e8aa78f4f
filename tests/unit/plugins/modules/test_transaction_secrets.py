# -*- coding: utf-8 -*-
# Copyright: Contributors to failsafe.deploy
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The transaction module masks a layer's secret options in every output, each value of a dict of them too (the
environment of a Terraform layer: cloud keys), as it does no_log options."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import pytest

from ansible.module_utils import basic
from ansible.module_utils.common.parameters import remove_values

from ansible_collections.failsafe.deploy.plugins.modules import transaction
from ansible_collections.failsafe.deploy.tests.unit.plugins.modules.utils import AnsibleFailJson, run_module


@pytest.fixture
def masked(monkeypatch):
    """fail_json's result as Ansible prints it: with the module's no_log values masked."""
    def fail_json(self, msg, **kwargs):
        kwargs.update(failed=True, msg=msg, invocation={'module_args': self.params})
        raise AnsibleFailJson(remove_values(kwargs, self.no_log_values))
    monkeypatch.setattr(basic.AnsibleModule, 'fail_json', fail_json)


def test_each_cloud_key_of_a_terraform_layer_is_masked(tmp_path, masked):
    layer = {'kind': 'terraform', 'project_path': str(tmp_path / 'project'), 'source': str(tmp_path / 'none'),
             'environment': {'AWS_ACCESS_KEY_ID': 'AKIAEXAMPLE42', 'AWS_SECRET_ACCESS_KEY': 'sekret-42'}}
    res = run_module(transaction, {'phase': 'apply', 'state_dir': str(tmp_path / 'state'), 'name': 'infra',
                                   'run_id': 'run-1', 'layer': layer})
    assert res['failed']
    text = repr(res)
    assert 'AWS_SECRET_ACCESS_KEY' in text          # the option reached the output: the check is not vacuous
    assert 'sekret-42' not in text and 'AKIAEXAMPLE42' not in text


def test_the_credentials_of_a_cloudformation_layer_are_masked(tmp_path, masked):
    # a template that does not exist: the apply fails at once, and its output carries the options it was given
    layer = {'kind': 'cloudformation', 'stack_name': 'web', 'template': str(tmp_path / 'none.json'),
             'aws_access_key': 'AKIACFNEXAMPLE42', 'aws_secret_key': 'sekret-cfn-42', 'session_token': 'tok-cfn-42'}
    res = run_module(transaction, {'phase': 'apply', 'state_dir': str(tmp_path / 'state'), 'name': 'infra',
                                   'run_id': 'run-1', 'layer': layer})
    assert res['failed']
    text = repr(res)
    assert 'aws_secret_key' in text                 # the option reached the output: the check is not vacuous
    assert 'sekret-cfn-42' not in text and 'AKIACFNEXAMPLE42' not in text and 'tok-cfn-42' not in text
