"""Infrastructure in the same transaction as the code: CloudFormation stacks changed by the deploy, rolled back after
the code.

Real ansible-playbook runs of failsafe.deploy.deploy on this machine (the examples/demo setup in a private directory,
a real supervisord and the example app). The stacks run on the inventory host ``infra`` (this machine,
``ansible_connection=local``), as they would on the controller, through boto3.

Emulated: AWS. moto's server (tests/moto_cli.py) answers CloudFormation, S3 and SQS on 127.0.0.1 with dummy
credentials; it applies change sets at once and never rolls a stack back by itself, so CloudFormation's own
rollback (``UPDATE_ROLLBACK_*``), which the layer waits for and reports, is not exercised here.

- a first deploy creates a stack (a bucket tagged with a parameter) and commits;
- a deploy that changes that stack (the parameter and so the bucket's tag, a queue added) and creates a second one,
  and whose release fails its health check, is rolled back in order, the code first and the infrastructure last:
  the first stack is back on its template and parameter (the same bucket, its tag back, the queue gone), proven by
  describing it, and the stack the deploy created is deleted with its bucket; the host serves the previous release;
- the AWS secret key given to a stack as an option is in none of the journal, the incident reports, the alerts
  and the playbook's output;
- the controller SIGKILLed after the stacks were changed (the whole process group, while the deploy went on):
  recover.yml finishes the rollback of the code and of the stacks, the changed one updated back and the one the
  deploy created deleted;
- an apply that fails half-way: the first stack's change set executed, the second's refused (its template is not
  well-formed JSON): the first stack is updated back to its recorded template, parameters and tags, the second is
  left as it was, the code stays on its release.
"""
import json
import os
import re
import signal
import subprocess
import time

import pytest

from support import DEMO, code_then_infra_rolled_back
from tests.moto_cli import aws_env, start_moto, stop_moto

pytestmark = pytest.mark.slow

SECRET = 'sekret-cfn-behaviour-7781'


def template(bucket, queue=None, queue_id='Jobs'):
    doc = {'Parameters': {'Env': {'Type': 'String'}},
           'Resources': {'Site': {'Type': 'AWS::S3::Bucket', 'Properties': {
               'BucketName': bucket, 'Tags': [{'Key': 'env', 'Value': {'Ref': 'Env'}}]}}},
           'Outputs': {'Bucket': {'Value': {'Ref': 'Site'}}}}
    if queue:
        doc['Resources'][queue_id] = {'Type': 'AWS::SQS::Queue', 'Properties': {'QueueName': queue}}
    return json.dumps(doc, indent=1)


def _write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'w') as handle:
        handle.write(text)
    return path


@pytest.fixture(scope='module')
def site(module_deploy):
    d = module_deploy
    d.moto, d.endpoint = start_moto(os.path.join(d.dir, 'moto'))
    d.env.update(aws_env())
    d.env.pop('AWS_PROFILE', None)
    import boto3
    d.cf = boto3.client('cloudformation', endpoint_url=d.endpoint, region_name='us-east-1', **_keys())
    d.s3 = boto3.client('s3', endpoint_url=d.endpoint, region_name='us-east-1', **_keys())
    d.sqs = boto3.client('sqs', endpoint_url=d.endpoint, region_name='us-east-1', **_keys())
    d.infra_inventory = os.path.join(d.dir, 'infra-inventory.yml')
    with open(d.infra_inventory, 'w') as handle:
        handle.write('all:\n  hosts:\n    infra:\n      ansible_connection: local\n'
                     '      ansible_python_interpreter: "{{ ansible_playbook_python }}"\n'
                     '      failsafe_name: infra\n')
    yield d
    stop_moto(d.moto)


def _keys():
    env = aws_env()
    return {'aws_access_key_id': env['AWS_ACCESS_KEY_ID'], 'aws_secret_access_key': env['AWS_SECRET_ACCESS_KEY']}


def deploy(d, version, stacks, after=None):
    data = {'failsafe_hosts': 'localhost', 'failsafe_infra_host': 'infra', 'failsafe_infra_cloudformation': [
        dict({'endpoint_url': d.endpoint, 'region': 'us-east-1', 'poll_interval': 1}, **s) for s in stacks]}
    if after:
        data['failsafe_infra_after_tasks'] = after
    path = os.path.join(d.dir, 'infra-vars.json')
    with open(path, 'w') as handle:
        json.dump(data, handle)
    if after:
        cmd = ['ansible-playbook', '-i', os.path.join(DEMO, 'inventory.yml'), '-i', d.infra_inventory,
               'failsafe.deploy.deploy', '-e', 'release_version=%s' % version, '-e', '@' + path]
        return subprocess.Popen(cmd, env=d.env, cwd=d.dir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
    return d.deploy(version, '-i', d.infra_inventory, '-e', '@' + path)


def stack(d, name):
    """The stack as CloudFormation describes it (None when there is none), with its bucket's tags and its queues."""
    try:
        found = d.cf.describe_stacks(StackName=name)['Stacks']
    except d.cf.exceptions.ClientError as e:
        assert 'does not exist' in str(e), e
        return None
    s = found[0]
    resources = dict((r['LogicalResourceId'], r['PhysicalResourceId'])
                     for r in d.cf.list_stack_resources(StackName=name)['StackResourceSummaries'])
    body = d.cf.get_template(StackName=name)['TemplateBody']
    return {'status': s['StackStatus'], 'resources': resources,
            # plain dicts: boto3 hands a JSON template back as OrderedDicts, whose equality minds the key order
            'template': json.loads(json.dumps(body) if isinstance(body, dict) else body),
            'parameters': dict((p['ParameterKey'], p['ParameterValue']) for p in s['Parameters']),
            'bucket_tags': dict((t['Key'], t['Value']) for t in
                                d.s3.get_bucket_tagging(Bucket=resources['Site'])['TagSet'])}


def buckets(d):
    return sorted(b['Name'] for b in d.s3.list_buckets()['Buckets'])


def queues(d):
    return sorted(u.rsplit('/', 1)[-1] for u in d.sqs.list_queues().get('QueueUrls') or [])


def infra_journal(d):
    with open(os.path.join(d.state_dir, 'infra', 'journal.json')) as handle:
        return json.load(handle)


def test_a_failed_release_rolls_back_the_code_then_the_stacks(site):
    d = site
    v1 = _write(os.path.join(d.dir, 'cfn', 'v1.json'), template('web-assets'))
    v2 = _write(os.path.join(d.dir, 'cfn', 'v2.json'), template('web-assets', queue='web-jobs'))
    extra = _write(os.path.join(d.dir, 'cfn', 'extra.json'), template('web-extra'))

    # a first deploy creates the stack: the bucket tagged env=v1
    first = deploy(d, '1.0.0', [{'stack_name': 'web', 'template': v1, 'parameters': {'Env': 'v1'}}])
    assert first.returncode == 0, first.stdout[-5000:]
    before = stack(d, 'web')
    assert before['status'] == 'CREATE_COMPLETE' and before['parameters'] == {'Env': 'v1'}
    assert before['bucket_tags'] == {'env': 'v1'} and list(before['resources']) == ['Site']
    assert infra_journal(d)['status'] == 'committed' and queues(d) == []
    assert buckets(d) == ['web-assets']

    # the failed deploy: web goes to v2 (its bucket tagged env=v2, a queue added), web-extra is created; the secret
    # key of web-extra's option is a real option of the run (moto takes any key)
    failed = deploy(d, '3.0.0', [
        {'stack_name': 'web', 'template': v2, 'parameters': {'Env': 'v2'}},
        {'stack_name': 'web-extra', 'template': extra, 'parameters': {'Env': 'extra'},
         'aws_access_key': 'AKIAFAILSAFEBEHAVIOUR', 'aws_secret_key': SECRET}])
    assert failed.returncode != 0, failed.stdout[-5000:]
    journal = infra_journal(d)
    assert journal['status'] == 'rolled_back'
    assert [e['kind'] for e in journal['layers']] == ['cloudformation', 'cloudformation']
    # both stacks were changed during the deploy: the undo records say what they found
    records = dict((e['record']['stack_name'], e['record']) for e in journal['layers'])
    assert records['web']['existed'] and records['web']['parameters'] == {'Env': 'v1'}
    assert not records['web-extra']['existed']
    # web is back on v1, as CloudFormation, S3 and SQS tell it: template, parameter, the same bucket with its tag
    # back, the queue v2 added gone; web-extra, which the deploy created, is deleted with its bucket
    after = stack(d, 'web')
    assert after['status'] == 'UPDATE_COMPLETE' and dict(after, status=None) == dict(before, status=None), after
    assert after['template'] == json.loads(template('web-assets'))
    assert queues(d) == [] and buckets(d) == ['web-assets']
    assert stack(d, 'web-extra') is None
    report = code_then_infra_rolled_back(d, journal)
    reports = d.incident_reports()
    hosts = report['rollback']['hosts']
    undone = hosts['infra']['restored']['layers']
    assert [e['kind'] for e in undone] == ['cloudformation', 'cloudformation']
    # within the stage, the reverse order of their application: the stack created last is deleted first
    assert 'deleted' in undone[0]['undid'] and 'updated back' in undone[1]['undid'], undone
    assert [e['kind'] for e in hosts['localhost']['restored']['layers']] == ['files', 'release', 'service']
    done = dict((e['host'], e['t']) for e in report['timeline'] if e['event'] == 'rollback_host')
    assert done['localhost'] < done['infra'], done
    # the HTML timeline has a lane for the infrastructure host, and its layer table lists the cloudformation layers
    with open(reports[-1][:-len('.json')] + '.html') as handle:
        html = handle.read()
    assert 'data-lane="infra"' in html and '>cloudformation<' in html
    with open(reports[-1][:-len('.json')] + '.md') as handle:
        assert re.search(r'^\| infra \|.*\| cloudformation, cloudformation \|', handle.read(), re.M)

    # the secret key is nowhere the run wrote: journals, incident reports, alerts, the playbooks' output
    assert SECRET not in failed.stdout
    places = [os.path.join(d.state_dir, 'infra'), d.incidents, os.path.join(d.dir, 'runs.log')]
    found = []
    for place in places:
        for root, dummy, files in (os.walk(place) if os.path.isdir(place) else [(os.path.dirname(place), [],
                                                                                 [os.path.basename(place)])]):
            for name in files:
                with open(os.path.join(root, name), 'rb') as handle:
                    if SECRET.encode() in handle.read():
                        found.append(os.path.join(root, name))
    assert found == [], found
    assert [r for r in d.receiver.received if SECRET in json.dumps(r)] == []


def test_the_controller_killed_after_the_stacks_changed_then_recover_puts_them_back(site):
    d = site
    before = stack(d, 'web')
    assert before is not None and before['parameters'] == {'Env': 'v1'}, 'runs after the first test'
    marker = os.path.join(d.dir, 'cfn', 'applied')
    # a queue of another name than the first test's: moto does not create again a resource an earlier update removed
    v3 = _write(os.path.join(d.dir, 'cfn', 'v3.json'), template('web-assets', queue='web-retry', queue_id='Retry'))
    hook = _write(os.path.join(d.dir, 'cfn', 'hold.yml'), """---
- name: Say the stacks are applied
  ansible.builtin.file:
    path: %s
    state: touch
- name: Hold the deploy here until the controller is killed
  ansible.builtin.command: sleep 120
  changed_when: false
""" % marker)
    proc = deploy(d, '2.0.0', [
        {'stack_name': 'web', 'template': v3, 'parameters': {'Env': 'v3'}},
        {'stack_name': 'web-extra', 'template': os.path.join(d.dir, 'cfn', 'extra.json'),
         'parameters': {'Env': 'extra'}}], after=hook)
    try:
        deadline = time.monotonic() + 300
        while not os.path.exists(marker) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert os.path.exists(marker), 'the deploy never got past the stacks (rc %s)' % proc.poll()
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    # the stacks are on the new version, the infrastructure's transaction open: the dead run left them so
    assert infra_journal(d)['status'] == 'open'
    during = stack(d, 'web')
    assert during['parameters'] == {'Env': 'v3'} and during['bucket_tags'] == {'env': 'v3'}
    assert sorted(during['resources']) == ['Retry', 'Site'] and queues(d) == ['web-retry']
    assert stack(d, 'web-extra') is not None
    recovered = d.playbook('failsafe.deploy.recover', '-i', d.infra_inventory)
    assert recovered.returncode == 0, recovered.stdout[-5000:]
    assert infra_journal(d)['status'] == 'rolled_back' and d.journal()['status'] == 'rolled_back'
    after = stack(d, 'web')
    assert dict(after, status=None) == dict(before, status=None), after
    assert stack(d, 'web-extra') is None and queues(d) == [] and buckets(d) == ['web-assets']
    assert d.current() == 'releases/1.0.0' and d.http('/health')[0] == 200


def test_a_change_that_fails_on_the_second_stack_undoes_the_first_and_leaves_the_second(site):
    """The infra stage changes two stacks: the first one's change set applies (web to a new template, parameter and
    stack tag, a queue added), the second one's is refused, so the apply fails half-way. The deploy fails, the
    rollback updates web back to its recorded template, parameters and tags, and the second stack is as it was.

    Emulated: moto refuses the second stack's change set at create_change_set, before anything changes on it, because
    its template is not well-formed JSON (moto's server answers with an internal error, HTTP 500, where CloudFormation
    answers a ValidationError, 'Template format error'); the first stack's change set it executes at once."""
    d = site
    before = stack(d, 'web')
    assert before is not None and before['parameters'] == {'Env': 'v1'}, 'runs after the first test'
    # the second stack exists before the deploy, made by someone else (through the API, not a deploy)
    d.cf.create_stack(StackName='web-side', TemplateBody=template('web-side'),
                      Parameters=[{'ParameterKey': 'Env', 'ParameterValue': 'side'}])
    side = stack(d, 'web-side')
    assert side['status'] == 'CREATE_COMPLETE' and side['bucket_tags'] == {'env': 'side'}
    # a queue of a name of its own: moto does not create again a resource an earlier update removed
    v4 = _write(os.path.join(d.dir, 'cfn', 'v4.json'), template('web-assets', queue='web-half', queue_id='Half'))
    broken = _write(os.path.join(d.dir, 'cfn', 'broken.json'), template('web-side')[:-20])
    # a release that would pass its health check: the only failure is the second stack's
    failed = deploy(d, '2.0.0', [
        {'stack_name': 'web', 'template': v4, 'parameters': {'Env': 'v4'}, 'tags': {'release': 'half'}},
        {'stack_name': 'web-side', 'template': broken, 'parameters': {'Env': 'side-2'}}])
    assert failed.returncode != 0, failed.stdout[-5000:]
    assert 'create_change_set failed for stack web-side' in failed.stdout, failed.stdout[-5000:]
    journal = infra_journal(d)
    assert journal['status'] == 'rolled_back'
    records = dict((e['record']['stack_name'], e['record']) for e in journal['layers'])
    assert records['web']['existed'] and records['web']['parameters'] == {'Env': 'v1'} and records['web']['tags'] == {}
    # web is back on v1 (template, parameter, no stack tag, its bucket and tag, the queue gone); web-side was never
    # changed: still the stack its creation made
    after = stack(d, 'web')
    assert dict(after, status=None) == dict(before, status=None), after
    assert d.cf.describe_stacks(StackName='web')['Stacks'][0].get('Tags') in (None, [])
    assert stack(d, 'web-side') == side
    assert queues(d) == [] and buckets(d) == ['web-assets', 'web-side']
    # the code never changed: the host serves 1.0.0; the code's transaction was rolled back before the stacks'
    report = code_then_infra_rolled_back(d, journal)
    undone = dict((e.get('stack_name') or e.get('id'), e['undid'])
                  for e in report['rollback']['hosts']['infra']['restored']['layers'])
    # web's undo had something to undo (the first stack's change applied), web-side's nothing
    assert 'updated back' in undone['web'], undone
    assert 'already' in undone.get('web-side', 'already'), undone
