# -*- coding: utf-8 -*-
# Copyright: Contributors to failsafe.deploy
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Registered layer kinds: the ``apply`` phase records before it changes, a rollback undoes stage by stage (flags,
traffic, code, database), each undo verified before the next, a failed undo names its layer and stops the later
stages, secret options never reach the journal, and a staged rollback closes only when no stage is left. On a host
with a release, the flags and the traffic go back while the new release is still current, the database once the
code is back on the previous one.

The kinds here are small real ones defined by the test: each keeps a value in a file and appends every change to
a shared log, so the order of undo is read back from disk."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import json
import os

import pytest

from ansible_collections.failsafe.deploy.plugins.module_utils import _engine as engine
from ansible_collections.failsafe.deploy.plugins.module_utils._errors import FailsafeError
from ansible_collections.failsafe.deploy.plugins.module_utils._journal import DeployState
from ansible_collections.failsafe.deploy.plugins.module_utils._layers import KINDS, Layer, register
from ansible_collections.failsafe.deploy.plugins.module_utils._release import (
    ReleaseRoot, ensure_active, ensure_staged, ensure_verified,
)


class ValueFile(Layer):
    """Writes options['value'] to options['path']; undo writes back what was there (or removes it)."""

    secret_options = ('token',)

    def __init__(self, options, run):
        self.o = options

    def _log(self, what):
        # with app_root: where the host's current link pointed at that moment (what the code stage had done yet)
        current = os.readlink(os.path.join(self.o['app_root'], 'current')) if self.o.get('app_root') else None
        with open(self.o['log'], 'a') as handle:
            handle.write(json.dumps([self.kind, self.o.get('id'), what, self.o.get('token'), current]) + '\n')

    def _read(self):
        try:
            with open(self.o['path']) as handle:
                return handle.read()
        except IOError:
            return None

    def capture(self, params):
        return {'before': self._read()}

    def apply(self, params, record):
        if params.get('fail_apply'):
            raise engine.LayerError('refused by the test')
        changed = self._read() != params['value']
        with open(self.o['path'], 'w') as handle:
            handle.write(params['value'])
        self._log('apply')
        return {'changed': changed}

    def undo(self, record):
        if self.o.get('fail_undo') and os.path.exists(self.o['fail_undo']):
            raise engine.LayerError('the %s store refused the undo' % self.kind)
        if record['before'] is None:
            if os.path.exists(self.o['path']):
                os.unlink(self.o['path'])
        else:
            with open(self.o['path'], 'w') as handle:
                handle.write(record['before'])
        self._log('undo')
        return {'changed': True, 'report': {'restored_value': record['before']}}

    def verify(self, record):
        return [] if self._read() == record['before'] else ['%s holds %r' % (self.o['path'], self._read())]


@register
class FlagKind(ValueFile):
    kind = 'test_flag'
    stage = 'flags'


@register
class TrafficKind(ValueFile):
    kind = 'test_traffic'
    stage = 'traffic'


@register
class SchemaKind(ValueFile):
    kind = 'test_schema'
    stage = 'database'


def teardown_module(module):
    for kind in ('test_flag', 'test_traffic', 'test_schema'):
        KINDS.pop(kind, None)


def _run(argv):
    return 0, '', ''


@pytest.fixture
def host(tmp_path):
    p = {'state_dir': str(tmp_path / 'state'), 'name': 'app', 'run_id': 'run-1', 'owner': 'ops@ctl',
         'controller': 'ctl', 'pid': 1, 'ttl': 600, 'recover': True, 'service': {'manager': 'none'}}
    log = str(tmp_path / 'log')

    def layer(kind, value, **extra):
        spec = {'kind': kind, 'path': str(tmp_path / ('%s%s' % (kind, extra.get('id') or ''))), 'value': value,
                'log': log}
        spec.update(extra)
        return spec

    def order():
        with open(log) as handle:
            return [tuple(json.loads(line)[:3]) for line in handle if json.loads(line)[2] == 'undo']
    return p, layer, order, tmp_path


def _open(p):
    return engine.open_phase(p, _run)


def test_a_host_of_layers_only_opens_applies_and_rolls_back_stage_by_stage(host):
    p, layer, order, tmp = host
    for path, before in (('test_flag', 'off'), ('test_traffic', 'blue')):
        (tmp / path).write_text(before)
    assert _open(p)['changed']
    applied = []
    for spec in (layer('test_schema', 'v2'), layer('test_traffic', 'green'), layer('test_flag', 'on'),
                 layer('test_flag', 'on', id='second')):
        res = engine.apply_phase(dict(p, layer=spec), _run)
        applied.append(res['layer'])
        assert res['changed']
    assert applied == ['test_schema', 'test_traffic', 'test_flag', 'test_flag:second']
    assert res['failsafe_layer_stages'] == ['flags', 'traffic', 'database']
    assert (tmp / 'test_traffic').read_text() == 'green'
    # applied twice: the first capture stays the undo (the second run would capture the changed state)
    again = engine.apply_phase(dict(p, layer=layer('test_traffic', 'green')), _run)
    assert not again['changed'] and again['record'] == {'before': 'blue'}

    out = engine.rollback(dict(p, stages=['flags']), _run)
    assert out['failsafe_rollback']['pending'] == ['traffic', 'database']
    assert order() == [('test_flag', 'second', 'undo'), ('test_flag', None, 'undo')]
    assert (tmp / 'test_flag').read_text() == 'off' and not (tmp / 'test_flagsecond').exists()
    assert (tmp / 'test_traffic').read_text() == 'green'          # not its stage yet
    assert DeployState(p['state_dir'], 'app').read_journal()['status'] == 'open'

    out = engine.rollback(dict(p, stages=['traffic', 'code']), _run)
    assert out['failsafe_rollback']['pending'] == ['database']
    assert (tmp / 'test_traffic').read_text() == 'blue'
    out = engine.rollback(dict(p, stages=['database']), _run)
    assert 'pending' not in out['failsafe_rollback'] and out['failsafe_rollback']['verified']
    assert not (tmp / 'test_schema').exists()
    assert [o[0] for o in order()] == ['test_flag', 'test_flag', 'test_traffic', 'test_schema']
    journal = DeployState(p['state_dir'], 'app').read_journal()
    assert journal['status'] == 'rolled_back'
    assert DeployState(p['state_dir'], 'app').read_lock() is None


def test_one_call_undoes_every_stage_in_order_and_keeps_secrets_out_of_the_journal(host):
    p, layer, order, tmp = host
    _open(p)
    for spec in (layer('test_schema', 'v2', token='s3cret-db'), layer('test_flag', 'on', token='s3cret-flag'),
                 layer('test_traffic', 'green')):
        engine.apply_phase(dict(p, layer=spec), _run)
    state = open(DeployState(p['state_dir'], 'app').journal_path).read()
    assert 's3cret' not in state
    out = engine.rollback(dict(p, layer_secrets={'test_schema': {'token': 's3cret-db'}}), _run)
    kinds = [entry['kind'] for entry in out['failsafe_rollback']['layers']]
    assert kinds == ['test_flag', 'test_traffic', 'test_schema']
    with open(str(tmp / 'log')) as handle:
        undo_tokens = [json.loads(line)[3] for line in handle if json.loads(line)[2] == 'undo']
    # the secret comes back to the rollback through layer_secrets only
    assert undo_tokens == [None, None, 's3cret-db']
    assert DeployState(p['state_dir'], 'app').read_journal()['status'] == 'rolled_back'


def test_a_failed_undo_names_its_layer_and_later_stages_are_not_attempted(host):
    p, layer, order, tmp = host
    _open(p)
    trip = str(tmp / 'trip')
    engine.apply_phase(dict(p, layer=layer('test_schema', 'v2')), _run)
    engine.apply_phase(dict(p, layer=layer('test_traffic', 'green', fail_undo=trip)), _run)
    engine.apply_phase(dict(p, layer=layer('test_flag', 'on')), _run)
    open(trip, 'w').close()
    with pytest.raises(FailsafeError) as err:
        engine.rollback(p, _run)
    assert 'ROLLBACK FAILED at undo the test_traffic layer' in err.value.msg
    assert [o[0] for o in order()] == ['test_flag']               # the database was not touched
    assert (tmp / 'test_schema').read_text() == 'v2'
    journal = DeployState(p['state_dir'], 'app').read_journal()
    assert journal['status'] == 'rollback_failed' and 'test_traffic' in journal['outcome']['failed_step']
    os.unlink(trip)                                               # fixed: run again, it finishes the job
    engine.rollback(p, _run)
    assert not (tmp / 'test_schema').exists() and not (tmp / 'test_traffic').exists()


def test_apply_refuses_an_unknown_kind_and_a_closed_transaction_and_check_mode_changes_nothing(host):
    p, layer, order, tmp = host
    with pytest.raises(FailsafeError, match='unknown'):
        engine.apply_phase(dict(p, layer={'kind': 'no_such_kind'}), _run)
    with pytest.raises(FailsafeError, match='open one first'):
        engine.apply_phase(dict(p, layer=layer('test_flag', 'on')), _run)
    _open(p)
    planned = engine.apply_phase(dict(p, layer=layer('test_flag', 'on')), _run, check_mode=True)
    assert planned['changed'] and 'would' in planned['msg']
    assert not (tmp / 'test_flag').exists()
    assert not DeployState(p['state_dir'], 'app').read_journal().get('layers')
    # a layer that fails to apply was recorded first: the rollback undoes it to what capture saw
    (tmp / 'test_traffic').write_text('blue')
    with pytest.raises(FailsafeError):
        engine.apply_phase(dict(p, layer=layer('test_traffic', 'green', fail_apply=True)), _run)
    engine.rollback(p, _run)
    assert (tmp / 'test_traffic').read_text() == 'blue'


def test_on_a_host_with_a_release_traffic_goes_back_before_the_code_and_the_database_after(host):
    """One rollback call on a host whose transaction switched its release and applied a layer of every other stage:
    each undo notes where current pointed when it ran. The flags and the traffic are put back while the failed
    release still serves (before the code stage), the database after the code is back on the verified release."""
    p, layer, order, tmp = host
    app = str(tmp / 'app')
    rr = ReleaseRoot(app)
    for rid in ('1.0', '2.0'):
        src = tmp / ('src-' + rid)
        src.mkdir()
        (src / 'VERSION').write_text(rid)
        ensure_staged(rr, rid, str(src))
    ensure_active(rr, '1.0')
    ensure_verified(rr, '1.0')
    p = dict(p, app_root=app, release='2.0', snapshot_paths=[os.path.join(app, 'current')], min_free_mb=0,
             check_running=False)
    _open(p)
    for spec in (layer('test_schema', 'v2', app_root=app), layer('test_traffic', 'green', app_root=app),
                 layer('test_flag', 'on', app_root=app)):
        engine.apply_phase(dict(p, layer=spec), _run)
    engine.activate_phase(p, _run)
    assert rr.read_current() == '2.0'
    out = engine.rollback(p, _run)
    with open(str(tmp / 'log')) as handle:
        undone = [(entry[0], entry[4]) for entry in map(json.loads, handle) if entry[2] == 'undo']
    assert undone == [('test_flag', 'releases/2.0'), ('test_traffic', 'releases/2.0'),
                      ('test_schema', 'releases/1.0')]
    assert [e['kind'] for e in out['failsafe_rollback']['layers']] == [
        'test_flag', 'test_traffic', 'files', 'release', 'test_schema']
    assert rr.read_current() == '1.0' and out['failsafe_rollback']['target_release'] == '1.0'
    assert not [kind for kind in ('test_flag', 'test_traffic', 'test_schema') if (tmp / kind).exists()]
    assert DeployState(p['state_dir'], 'app').read_journal()['status'] == 'rolled_back'
