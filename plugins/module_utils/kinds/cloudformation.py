# -*- coding: utf-8 -*-
# Private to this collection: not a public API.
# Copyright: Contributors to failsafe.deploy
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The ``cloudformation`` layer kind: an AWS CloudFormation stack changed as part of a deploy (stage ``infra``:
applied before the code, undone after the database, last of all).

It calls the CloudFormation API through boto3, as the amazon.aws collection does: boto3 must be importable by the
Python that runs the layer (the controller by default); without it the layer fails naming it, before anything
changes. Credentials come from boto3's own chain (environment, shared files, instance role) unless the secret
options ``aws_access_key``, ``aws_secret_key`` and ``session_token`` give them (never written to the journal).

Options (the ``layer`` dict): ``stack_name``, ``template`` (a file holding the new template, JSON or YAML),
``parameters`` (name -> value), ``tags`` (stack tags, name -> value), ``capabilities`` (such as
``CAPABILITY_IAM``), ``region``, ``endpoint_url``, ``profile``, ``protected`` (logical resource ids a change set may
not remove or replace), ``allow_destroy_protected``, ``timeout`` (seconds to wait for a change set or a stack to
settle) and ``poll_interval``.

Capture records the live version: the stack's template body (as CloudFormation holds it), parameters, tags,
capabilities, status, outputs and resources (logical id, type, physical id), or that the stack did not exist.
Apply creates (a new stack) or updates it through a change set: created, waited for, refused if it removes or
replaces a protected resource, executed (a change set with no changes is deleted, not an error), then the stack is
waited for until it settles. Undo updates the stack back to the recorded template, parameters and tags through a
change set, or deletes a stack the deploy created. Where CloudFormation rolls back by itself (``UPDATE_ROLLBACK_*``,
``ROLLBACK_*``), the layer waits for that rollback to end and reports what CloudFormation did before it undoes
anything; a stack left in ``UPDATE_ROLLBACK_FAILED`` is asked to continue its rollback first. Verify describes the
stack: template, parameters, tags, outputs and resources equal to what was recorded (a created stack is gone).
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import json
import os
import time

from ansible_collections.failsafe.deploy.plugins.module_utils._layers import Layer, LayerError, register

DEFAULT_TIMEOUT = 1800
# a parameter CloudFormation will not show (NoEcho): its value reads as this
MASKED = '****'
STABLE = ('CREATE_COMPLETE', 'UPDATE_COMPLETE', 'UPDATE_ROLLBACK_COMPLETE', 'IMPORT_COMPLETE',
          'IMPORT_ROLLBACK_COMPLETE')
# states a stack cannot be updated from
STUCK = ('ROLLBACK_COMPLETE', 'ROLLBACK_FAILED', 'CREATE_FAILED', 'DELETE_FAILED', 'UPDATE_FAILED',
         'UPDATE_ROLLBACK_FAILED', 'IMPORT_ROLLBACK_FAILED')


def boto3_module():
    """boto3, or a LayerError saying it is missing on this host (a requirement of the kind)."""
    try:
        import boto3  # pylint: disable=import-outside-toplevel
        from botocore.exceptions import BotoCoreError, ClientError  # pylint: disable=import-outside-toplevel
        # an answer botocore cannot parse (an HTML error page from the endpoint or a proxy in front of it) is no
        # BotoCoreError: without it here, it escaped the layer as a bare module failure naming neither stack nor call
        from botocore.parsers import ResponseParserError  # pylint: disable=import-outside-toplevel
    except ImportError:
        raise LayerError('the cloudformation layer needs boto3 (and botocore) on the host it runs on (the '
                         'controller by default): pip install boto3 for the Python that runs the layer. Nothing was '
                         'changed')
    return boto3, (BotoCoreError, ClientError, ResponseParserError)


def template_text(body):
    """A template body as text: boto3 hands a JSON template back parsed, a YAML one as text."""
    if isinstance(body, (dict, list)):
        return json.dumps(body, sort_keys=True)
    return body or ''


def same_template(a, b):
    """Two template bodies say the same: equal as JSON documents when both are JSON, else equal as text."""
    try:
        return json.loads(template_text(a)) == json.loads(template_text(b))
    except ValueError:
        return template_text(a).strip() == template_text(b).strip()


def _pairs(items, key, value):
    return dict((i[key], i.get(value)) for i in items or [])


@register
class CloudFormationLayer(Layer):
    kind = 'cloudformation'
    stage = 'infra'
    secret_options = ('aws_access_key', 'aws_secret_key', 'session_token')

    def __init__(self, options, run=None):
        self.o = dict(options or {})
        self.stack = self.o.get('stack_name')
        if not self.stack:
            raise LayerError('the cloudformation layer needs stack_name: the stack it creates or updates')
        self.timeout = float(self.o.get('timeout') or DEFAULT_TIMEOUT)
        self.poll = float(self.o.get('poll_interval') or 5)
        self._client = None
        self._errors = ()

    # --- the API ----------------------------------------------------------------------------------------------------

    def client(self):
        if self._client is None:
            boto3, self._errors = boto3_module()
            try:
                session = boto3.session.Session(
                    aws_access_key_id=self.o.get('aws_access_key') or None,
                    aws_secret_access_key=self.o.get('aws_secret_key') or None,
                    aws_session_token=self.o.get('session_token') or None,
                    profile_name=self.o.get('profile') or None,
                    region_name=self.o.get('region') or None)
                self._client = session.client('cloudformation', endpoint_url=self.o.get('endpoint_url') or None)
            except self._errors as e:
                raise LayerError('cannot reach CloudFormation for stack %s: %s' % (self.stack, e))
        return self._client

    def call(self, name, **kw):
        client = self.client()
        try:
            return getattr(client, name)(**kw)
        except self._errors as e:
            raise LayerError('CloudFormation %s failed for stack %s: %s' % (name, self.stack, e), call=name)

    def stack_info(self):
        """The live stack (describe_stacks), or None when there is none (never created, or deleted)."""
        client = self.client()
        try:
            stacks = client.describe_stacks(StackName=self.stack)['Stacks']
        except self._errors as e:
            if 'does not exist' in str(e):
                return None
            raise LayerError('CloudFormation describe_stacks failed for stack %s: %s' % (self.stack, e))
        stack = stacks[0] if stacks else None
        if stack is None or stack['StackStatus'] == 'DELETE_COMPLETE':
            return None
        return stack

    def snapshot(self, stack):
        """What the undo and the verify compare: template, parameters, tags, capabilities, outputs, resources."""
        body = self.call('get_template', StackName=self.stack, TemplateStage='Original')['TemplateBody']
        resources = []
        token = None
        while True:
            kw = {'StackName': self.stack}
            if token:
                kw['NextToken'] = token
            page = self.call('list_stack_resources', **kw)
            resources += [{'logical_id': r['LogicalResourceId'], 'type': r['ResourceType'],
                           'physical_id': r.get('PhysicalResourceId')} for r in page['StackResourceSummaries']]
            token = page.get('NextToken')
            if not token:
                break
        return {'status': stack['StackStatus'], 'stack_id': stack['StackId'], 'template_body': template_text(body),
                'parameters': _pairs(stack.get('Parameters'), 'ParameterKey', 'ParameterValue'),
                'tags': _pairs(stack.get('Tags'), 'Key', 'Value'),
                'capabilities': sorted(stack.get('Capabilities') or []),
                'outputs': _pairs(stack.get('Outputs'), 'OutputKey', 'OutputValue'),
                'resources': sorted(resources, key=lambda r: r['logical_id'])}

    def settle(self, what):
        """Wait until the stack is in no ``*_IN_PROGRESS`` state; returns (stack or None, the states seen)."""
        deadline = time.time() + self.timeout
        seen = []
        pause = min(0.2, self.poll)
        while True:
            stack = self.stack_info()
            status = stack['StackStatus'] if stack else 'DELETE_COMPLETE'
            if not seen or seen[-1] != status:
                seen.append(status)
            if not status.endswith('_IN_PROGRESS') or status == 'REVIEW_IN_PROGRESS':
                return stack, seen
            if time.time() >= deadline:
                raise LayerError('stack %s is still %s after %d s (%s)' % (self.stack, status, self.timeout, what),
                                 states=seen)
            time.sleep(pause)
            pause = min(pause * 2, self.poll)

    def failure_reasons(self):
        """The reasons CloudFormation gave for the resources that failed (its stack events), newest first."""
        try:
            events = self.client().describe_stack_events(StackName=self.stack)['StackEvents']
        except self._errors:
            return []
        return ['%s %s: %s' % (e.get('LogicalResourceId'), e.get('ResourceStatus'), e.get('ResourceStatusReason'))
                for e in events[:20] if (e.get('ResourceStatus') or '').endswith('_FAILED')][:5]

    def change(self, kind, body, parameters, tags, capabilities, protected=()):
        """Create a change set, wait for it, refuse it if it removes or replaces a protected resource, execute it and
        wait for the stack to settle. Returns (changes, the states the stack went through); ([], []) when the change
        set holds no changes (deleted, nothing executed)."""
        name = 'failsafe-%d-%d' % (int(time.time() * 1000), os.getpid())
        kw = {'StackName': self.stack, 'ChangeSetName': name, 'ChangeSetType': kind, 'TemplateBody': body,
              'Parameters': parameters, 'Tags': [{'Key': k, 'Value': str(v)} for k, v in sorted(tags.items())],
              'Capabilities': list(capabilities or [])}
        client = self.client()
        try:
            client.create_change_set(**kw)
        except self._errors as e:
            if 'No updates are to be performed' in str(e) or "didn't contain changes" in str(e):
                return [], []
            raise LayerError('CloudFormation create_change_set failed for stack %s: %s' % (self.stack, e))
        deadline = time.time() + self.timeout
        pause = min(0.2, self.poll)
        while True:
            cs = self.call('describe_change_set', StackName=self.stack, ChangeSetName=name)
            if cs['Status'] not in ('CREATE_PENDING', 'CREATE_IN_PROGRESS'):
                break
            if time.time() >= deadline:
                raise LayerError('the change set %s of stack %s is still %s after %d s'
                                 % (name, self.stack, cs['Status'], self.timeout))
            time.sleep(pause)
            pause = min(pause * 2, self.poll)
        reason = cs.get('StatusReason') or ''
        changes = [c['ResourceChange'] for c in cs.get('Changes') or [] if c.get('ResourceChange')]
        if cs['Status'] == 'FAILED' or not changes:
            self.call('delete_change_set', StackName=self.stack, ChangeSetName=name)
            empty = "didn't contain changes" in reason or 'No updates are to be performed' in reason
            if not changes and (cs['Status'] != 'FAILED' or empty):
                return [], []
            raise LayerError('the change set of stack %s failed: %s' % (self.stack, reason or 'no reason given'))
        planned = [{'logical_id': c.get('LogicalResourceId'), 'type': c.get('ResourceType'),
                    'action': c.get('Action'), 'replacement': c.get('Replacement')} for c in changes]
        destroys = [c['logical_id'] for c in planned if c['action'] == 'Remove' or c['replacement'] == 'True']
        bad = sorted(set(destroys) & set(protected or ()))
        if bad and not self.o.get('allow_destroy_protected'):
            self.call('delete_change_set', StackName=self.stack, ChangeSetName=name)
            raise LayerError('the change set of stack %s would remove or replace protected resource(s) %s: refused, '
                             'nothing was executed (set allow_destroy_protected to allow it)'
                             % (self.stack, ', '.join(bad)), planned=planned)
        self.call('execute_change_set', StackName=self.stack, ChangeSetName=name)
        stack, seen = self.settle('executing change set %s' % name)
        status = stack['StackStatus'] if stack else 'DELETE_COMPLETE'
        if status not in ('CREATE_COMPLETE', 'UPDATE_COMPLETE'):
            raise LayerError('stack %s ended %s after change set %s (states: %s): %s'
                             % (self.stack, status, name, ' -> '.join(seen),
                                '; '.join(self.failure_reasons()) or 'no reason given'),
                             states=seen, planned=planned)
        return planned, seen

    # --- the interface ----------------------------------------------------------------------------------------------

    def describe(self, options):
        return 'create or update CloudFormation stack %s from %s through a change set' % (
            self.stack, options.get('template'))

    def _template(self, options):
        path = options.get('template')
        if not path or not os.path.isfile(path):
            raise LayerError('the cloudformation layer needs template: a file holding the new template (got %r)'
                             % (path,))
        with open(path, 'rb') as handle:
            body = handle.read().decode('utf-8')
        if not body.strip():
            raise LayerError('the template %s is empty: nothing was changed' % path)
        return body

    def _parameters(self, options):
        return [{'ParameterKey': str(k), 'ParameterValue': v if isinstance(v, str) else json.dumps(v)}
                for k, v in sorted((options.get('parameters') or {}).items())]

    def capture(self, params):
        self._template(params)
        stack = self.stack_info()
        if stack is None or stack['StackStatus'] == 'REVIEW_IN_PROGRESS':
            # no stack, or one that only holds a change set never executed: the deploy creates it
            return {'stack_name': self.stack, 'existed': False}
        status = stack['StackStatus']
        if status.endswith('_IN_PROGRESS'):
            raise LayerError('stack %s is being changed by someone else (%s): nothing was changed'
                             % (self.stack, status))
        if status in STUCK:
            raise LayerError('stack %s is %s: CloudFormation cannot update it; repair it first. Nothing was changed'
                             % (self.stack, status))
        return dict(self.snapshot(stack), stack_name=self.stack, existed=True)

    def apply(self, params, record):
        body = self._template(params)
        stack = self.stack_info()
        creating = stack is None or stack['StackStatus'] == 'REVIEW_IN_PROGRESS'
        planned, seen = self.change('CREATE' if creating else 'UPDATE', body, self._parameters(params),
                                    dict(params.get('tags') or {}), params.get('capabilities'),
                                    params.get('protected'))
        stack = self.stack_info()
        outputs = _pairs((stack or {}).get('Outputs'), 'OutputKey', 'OutputValue')
        return {'changed': bool(planned), 'planned': planned, 'states': seen, 'outputs': outputs,
                'msg': 'CloudFormation stack %s %s through a change set (%d change(s))'
                       % (self.stack, 'created' if creating else 'updated', len(planned))}

    def undo(self, record):
        stack, seen = self.settle('waiting for the stack to settle before the undo')
        own = [s for s in seen if 'ROLLBACK' in s]
        cfn = ('CloudFormation rolled back by itself first (%s); ' % ' -> '.join(seen)) if own else ''
        if stack is not None and stack['StackStatus'] == 'UPDATE_ROLLBACK_FAILED':
            # the service's own rollback stopped half-way: let it finish before updating the stack again
            self.call('continue_update_rollback', StackName=self.stack)
            stack, more = self.settle('continuing the rollback CloudFormation left failed')
            seen += more
            cfn = 'CloudFormation continued its failed rollback (%s); ' % ' -> '.join(seen)
        if not record.get('existed'):
            if stack is not None:
                self.call('delete_stack', StackName=self.stack)
                stack, more = self.settle('deleting the stack the deploy created')
                if stack is not None:
                    raise LayerError('stack %s did not delete: %s (%s)' % (
                        self.stack, stack['StackStatus'], '; '.join(self.failure_reasons()) or 'no reason given'))
            return {'report': {'undid': '%sCloudFormation stack %s deleted (the deploy created it)' % (cfn, self.stack),
                               'stack_name': self.stack}}
        if stack is None:
            raise LayerError('stack %s is gone: it existed before the deploy and cannot be updated back (recreate it '
                             'from the recorded template)' % self.stack)
        live = self.snapshot(stack)
        params = [{'ParameterKey': k, 'UsePreviousValue': True} if v == MASKED
                  else {'ParameterKey': k, 'ParameterValue': v} for k, v in sorted(record['parameters'].items())]
        if self._matches(record, live):
            return {'report': {'undid': '%sCloudFormation stack %s holds the recorded template and parameters '
                                        'already' % (cfn, self.stack), 'stack_name': self.stack}}
        planned, dummy = self.change('UPDATE', record['template_body'], params, record.get('tags') or {},
                                     record.get('capabilities'))
        return {'report': {'undid': '%sCloudFormation stack %s updated back to the recorded template and parameters '
                                    '(%d change(s))' % (cfn, self.stack, len(planned)), 'stack_name': self.stack}}

    @staticmethod
    def _matches(record, live):
        same = same_template(record['template_body'], live['template_body'])
        return same and record['parameters'] == live['parameters'] and (record.get('tags') or {}) == live['tags']

    def verify(self, record):
        stack = self.stack_info()
        if not record.get('existed'):
            if stack is not None and stack['StackStatus'] != 'REVIEW_IN_PROGRESS':
                return ['stack %s, which the deploy created, still exists (%s)' % (self.stack, stack['StackStatus'])]
            return []
        if stack is None:
            return ['stack %s, which existed before the deploy, is gone' % self.stack]
        live = self.snapshot(stack)
        problems = []
        if live['status'] not in STABLE:
            problems.append('stack %s is %s' % (self.stack, live['status']))
        if not same_template(record['template_body'], live['template_body']):
            problems.append('the template of stack %s is not the recorded one' % self.stack)
        for name in ('parameters', 'tags', 'outputs'):
            if (record.get(name) or {}) != live[name]:
                problems.append('the %s of stack %s are %s, recorded %s' % (
                    name, self.stack, json.dumps(live[name], sort_keys=True),
                    json.dumps(record.get(name) or {}, sort_keys=True)))
        want = [(r['logical_id'], r['type'], r['physical_id']) for r in record.get('resources') or []]
        have = [(r['logical_id'], r['type'], r['physical_id']) for r in live['resources']]
        if want != have:
            problems.append('the resources of stack %s are %s, recorded %s' % (
                self.stack, ', '.join('%s=%s' % (r[0], r[2]) for r in have) or 'none',
                ', '.join('%s=%s' % (r[0], r[2]) for r in want) or 'none'))
        return problems
