# -*- coding: utf-8 -*-
# Copyright: Contributors to failsafe.deploy
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The cloudformation layer kind through the engine's apply phase and rollback, with boto3 against moto's server on
127.0.0.1 (tests/moto_cli.py): one server for the test process, a stack of its own per test.

Emulated: AWS itself. moto runs CloudFormation, S3 and SQS in one local process; it applies change sets at once,
never rolls a stack back by itself (the layer's wait for CloudFormation's own rollback is not exercised here) and
keeps the outputs a stack had when create_stack made it. What is real: boto3, the change sets, the buckets, their
tags and the queues as moto's S3 and SQS serve them, the journal and the rollback.
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import json
import os
import uuid

import pytest

from ansible_collections.failsafe.deploy.plugins.module_utils import _engine as engine
from ansible_collections.failsafe.deploy.plugins.module_utils import kinds
from ansible_collections.failsafe.deploy.plugins.module_utils._errors import FailsafeError
from ansible_collections.failsafe.deploy.plugins.module_utils._journal import DeployState
from ansible_collections.failsafe.deploy.plugins.module_utils._layers import KINDS

from ansible_collections.failsafe.deploy.tests.moto_cli import aws_env, shared_moto


def template(bucket, queue=None):
    """v1: a bucket tagged with the Env parameter; v2 (``queue``) adds a queue."""
    doc = {'Parameters': {'Env': {'Type': 'String'}},
           'Resources': {'Site': {'Type': 'AWS::S3::Bucket', 'Properties': {
               'BucketName': bucket, 'Tags': [{'Key': 'env', 'Value': {'Ref': 'Env'}}]}}},
           'Outputs': {'Bucket': {'Value': {'Ref': 'Site'}}}}
    if queue:
        doc['Resources']['Jobs'] = {'Type': 'AWS::SQS::Queue', 'Properties': {'QueueName': queue}}
    return json.dumps(doc, indent=1)


def _run(argv):
    return 0, '', ''


@pytest.fixture(scope='module')
def aws():
    saved = dict(os.environ)
    endpoint = shared_moto()
    # dummy keys: boto3's chain finds them in the environment (the layer's own default), never a real one
    os.environ.update(aws_env())
    os.environ.pop('AWS_PROFILE', None)
    import boto3
    try:
        yield {'endpoint': endpoint,
               'cf': boto3.client('cloudformation', endpoint_url=endpoint, region_name='us-east-1'),
               's3': boto3.client('s3', endpoint_url=endpoint, region_name='us-east-1'),
               'sqs': boto3.client('sqs', endpoint_url=endpoint, region_name='us-east-1')}
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _open(tmp_path):
    p = {'state_dir': str(tmp_path / 'state'), 'name': 'infra', 'run_id': 'run-1', 'owner': 'ops@ctl',
         'controller': 'ctl', 'pid': 1, 'ttl': 600, 'recover': True, 'service': {'manager': 'none'}}
    engine.open_phase(p, _run)
    return p


@pytest.fixture
def site(tmp_path, aws):
    """A stack on v1 (Env=v1, the bucket tagged env=v1), and v2's template (the queue added)."""
    name = 'site-%s' % uuid.uuid4().hex[:8]
    aws['cf'].create_stack(StackName=name, TemplateBody=template(name + '-b'),
                           Parameters=[{'ParameterKey': 'Env', 'ParameterValue': 'v1'}],
                           Tags=[{'Key': 'team', 'Value': 'web'}])
    v2 = tmp_path / 'v2.json'
    v2.write_text(template(name + '-b', queue=name + '-jobs'))
    return _open(tmp_path), name, str(v2)


def _layer(aws, name, path, env='v2', **extra):
    spec = {'kind': 'cloudformation', 'id': name, 'stack_name': name, 'template': path,
            'parameters': {'Env': env}, 'tags': {'team': 'web'}, 'endpoint_url': aws['endpoint'],
            'region': 'us-east-1', 'poll_interval': 0.5}
    spec.update(extra)
    return spec


def _live(aws, name):
    """What the stack and the services say now: parameters, tags, resources, the bucket's tags, the queues."""
    stack = aws['cf'].describe_stacks(StackName=name)['Stacks'][0]
    resources = dict((r['LogicalResourceId'], r['PhysicalResourceId'])
                     for r in aws['cf'].list_stack_resources(StackName=name)['StackResourceSummaries'])
    return {'status': stack['StackStatus'],
            'parameters': dict((x['ParameterKey'], x['ParameterValue']) for x in stack['Parameters']),
            'outputs': dict((x['OutputKey'], x['OutputValue']) for x in stack.get('Outputs') or []),
            'resources': resources,
            'bucket_tags': dict((t['Key'], t['Value']) for t in
                                aws['s3'].get_bucket_tagging(Bucket=name + '-b')['TagSet']),
            'queues': [u.rsplit('/', 1)[-1] for u in aws['sqs'].list_queues().get('QueueUrls') or []
                       if u.rsplit('/', 1)[-1].startswith(name)]}


def _gone(aws, name):
    try:
        stacks = aws['cf'].describe_stacks(StackName=name)['Stacks']
    except Exception as e:  # pylint: disable=broad-except
        return 'does not exist' in str(e)
    return not stacks or stacks[0]['StackStatus'] == 'DELETE_COMPLETE'


def test_the_kind_is_registered_in_the_infra_stage():
    assert kinds.kind_class('cloudformation') is KINDS['cloudformation']
    assert KINDS['cloudformation'].stage == 'infra'


def test_apply_then_rollback_updates_the_stack_back_proven_by_describing_it(site, aws):
    p, name, v2 = site
    before = _live(aws, name)
    assert before['parameters'] == {'Env': 'v1'} and before['bucket_tags'] == {'env': 'v1'}
    assert before['outputs'] == {'Bucket': name + '-b'} and list(before['resources']) == ['Site']
    res = engine.apply_phase(dict(p, layer=_layer(aws, name, v2)), _run)
    assert res['changed'] and res['failsafe_layer_stages'] == ['infra']
    record = res['record']
    assert record['existed'] and record['parameters'] == {'Env': 'v1'} and record['tags'] == {'team': 'web'}
    assert json.loads(record['template_body']) == json.loads(template(name + '-b'))
    assert [r['logical_id'] for r in record['resources']] == ['Site']
    # the new version is live: the parameter and the bucket's tag changed, the queue added
    during = _live(aws, name)
    assert during['parameters'] == {'Env': 'v2'} and during['bucket_tags'] == {'env': 'v2'}
    assert sorted(during['resources']) == ['Jobs', 'Site'] and during['queues'] == [name + '-jobs']
    assert during['resources']['Site'] == before['resources']['Site']
    out = engine.rollback(p, _run)
    assert out['failsafe_rollback']['verified']
    layers = out['failsafe_rollback']['layers']
    assert [e['kind'] for e in layers] == ['cloudformation'] and 'updated back' in layers[0]['undid']
    # the recorded version is back, as the services tell it: v1, the queue v2 added is gone, the same bucket
    after = _live(aws, name)
    assert after['parameters'] == {'Env': 'v1'} and after['bucket_tags'] == {'env': 'v1'}
    assert after['resources'] == before['resources'] and after['queues'] == [] and after['outputs'] == before['outputs']
    body = aws['cf'].get_template(StackName=name)['TemplateBody']
    assert (body if isinstance(body, dict) else json.loads(body)) == json.loads(template(name + '-b'))
    assert DeployState(p['state_dir'], 'infra').read_journal()['status'] == 'rolled_back'
    # history_info shows the transaction's layer in the infra stage
    from ansible_collections.failsafe.deploy.plugins.modules.history_info import deployment
    txn = deployment(p['state_dir'], 'infra', None, 5, None, [])['transactions'][0]
    assert txn['status'] == 'rolled_back' and txn['stages'] == ['infra']
    assert txn['layers'] == [{'kind': 'cloudformation', 'key': 'cloudformation:' + name, 'stage': 'infra'}]
    # a second undo (a rollback run again) finds the recorded version live and changes nothing
    layer = KINDS['cloudformation'](_layer(aws, name, v2), None)
    assert 'already' in layer.undo(record)['report']['undid'] and layer.verify(record) == []


def test_a_stack_the_deploy_created_is_deleted_by_the_rollback(tmp_path, aws):
    p = _open(tmp_path)
    name = 'fresh-%s' % uuid.uuid4().hex[:8]
    v1 = tmp_path / 'v1.json'
    v1.write_text(template(name + '-b', queue=name + '-jobs'))
    res = engine.apply_phase(dict(p, layer=_layer(aws, name, str(v1))), _run)
    assert not res['record']['existed'] and res['changed']
    live = _live(aws, name)
    assert live['status'] == 'CREATE_COMPLETE' and live['bucket_tags'] == {'env': 'v2'}
    assert live['queues'] == [name + '-jobs']
    out = engine.rollback(p, _run)
    assert out['failsafe_rollback']['verified'] and 'deleted' in out['failsafe_rollback']['layers'][0]['undid']
    assert _gone(aws, name)
    assert name + '-b' not in [b['Name'] for b in aws['s3'].list_buckets()['Buckets']]
    assert not [u for u in aws['sqs'].list_queues().get('QueueUrls') or [] if name in u]


def test_the_verify_finds_a_stack_that_was_not_put_back(site, aws):
    # the proof is the describe, not the undo's word: the stack left on v2 is named as not the recorded one
    p, name, v2 = site
    res = engine.apply_phase(dict(p, layer=_layer(aws, name, v2)), _run)
    problems = KINDS['cloudformation'](_layer(aws, name, v2), None).verify(res['record'])
    text = ' '.join(problems)
    assert 'template' in text and '"Env": "v2"' in text and 'Jobs=' in text, problems
    engine.rollback(p, _run)


def test_no_changes_protected_resources_and_bad_input(site, aws, tmp_path):
    p, name, v2 = site
    same = tmp_path / 'same.json'
    same.write_text(template(name + '-b'))
    # the live template and parameters again: a change set with no changes is not an error
    res = engine.apply_phase(dict(p, layer=_layer(aws, name, str(same), env='v1', id='same')), _run)
    assert not res['changed'] and res['planned'] == []
    # a change set that removes a protected resource is refused before it runs
    gone = tmp_path / 'gone.json'
    doc = json.loads(template(name + '-b', queue=name + '-jobs'))
    del doc['Resources']['Site']
    doc['Outputs'] = {}
    gone.write_text(json.dumps(doc))
    with pytest.raises(FailsafeError, match='would remove or replace protected resource'):
        engine.apply_phase(dict(p, layer=_layer(aws, name, str(gone), protected=['Site'], id='gone')), _run)
    assert _live(aws, name)['resources'].keys() == {'Site'}
    # a template that is not well-formed JSON: moto's server answers create_change_set with an HTML error page
    # (CloudFormation with a ValidationError); either way the layer fails naming the call and the stack
    broken = tmp_path / 'broken.json'
    broken.write_text(template(name + '-b')[:-20])
    with pytest.raises(FailsafeError, match='create_change_set failed for stack %s' % name):
        engine.apply_phase(dict(p, layer=_layer(aws, name, str(broken), id='broken')), _run)
    assert _live(aws, name)['parameters'] == {'Env': 'v1'}
    with pytest.raises(FailsafeError, match='needs template'):
        engine.apply_phase(dict(p, layer=_layer(aws, name, str(tmp_path / 'nosuch.json'), id='nosuch')), _run)
    out = engine.rollback(p, _run)
    assert out['failsafe_rollback']['verified']
    assert _live(aws, name)['parameters'] == {'Env': 'v1'}


def test_the_credentials_never_reach_the_journal(site, aws):
    p, name, v2 = site
    spec = _layer(aws, name, v2, aws_access_key='AKIAFAILSAFETEST42', aws_secret_key='sekret-cfn-42')
    engine.apply_phase(dict(p, layer=spec), _run)
    with open(DeployState(p['state_dir'], 'infra').journal_path) as handle:
        text = handle.read()
    assert 'sekret-cfn-42' not in text and 'AKIAFAILSAFETEST42' not in text
    # the rollback gets them again from layer_secrets (or from boto3's own chain, as here)
    out = engine.rollback(dict(p, layer_secrets={'cloudformation:' + name: {'aws_secret_key': 'sekret-cfn-42',
                                                                            'aws_access_key': 'AKIAFAILSAFETEST42'}}),
                          _run)
    assert out['failsafe_rollback']['verified'] and _live(aws, name)['parameters'] == {'Env': 'v1'}
