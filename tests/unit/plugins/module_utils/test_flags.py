# -*- coding: utf-8 -*-
# Copyright: Contributors to failsafe.deploy
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The flags layer kind on a real flagd flag file, through the engine's apply phase and rollback: only the keys it
sets change, atomically and with the file's mode kept; the undo puts back exactly the previous state; a key that does
not exist, a variant a flag does not have or a file that is not a flag file refuse before anything changes; the
kill switch applied again in the same transaction extends the capture so that the rollback still ends on the state
from before the deploy."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import json
import os
import stat

import pytest

from ansible_collections.failsafe.deploy.plugins.module_utils import _engine as engine
from ansible_collections.failsafe.deploy.plugins.module_utils import kinds
from ansible_collections.failsafe.deploy.plugins.module_utils._errors import FailsafeError
from ansible_collections.failsafe.deploy.plugins.module_utils._journal import DeployState
from ansible_collections.failsafe.deploy.plugins.module_utils._layers import KINDS

FLAGS = {
    '$schema': 'https://flagd.dev/schema/v0/flags.json',
    'flags': {
        'new-checkout': {'state': 'ENABLED', 'variants': {'on': True, 'off': False}, 'defaultVariant': 'off',
                         'targeting': {}},
        'banner': {'state': 'DISABLED', 'variants': {'red': 'red', 'blue': 'blue'}, 'defaultVariant': 'blue'},
        'untouched': {'state': 'ENABLED', 'variants': {'a': 1, 'b': 2}, 'defaultVariant': 'a'},
    },
}


def _run(argv):
    return 0, '', ''


@pytest.fixture
def site(tmp_path):
    path = tmp_path / 'flags' / 'app.flagd.json'
    path.parent.mkdir()
    path.write_text(json.dumps(FLAGS, indent=2))
    os.chmod(str(path), 0o640)
    p = {'state_dir': str(tmp_path / 'state'), 'name': 'flags', 'run_id': 'run-1', 'owner': 'ops@ctl',
         'controller': 'ctl', 'pid': 1, 'ttl': 600, 'recover': True, 'service': {'manager': 'none'}}
    engine.open_phase(p, _run)
    return p, str(path)


def _read(path):
    with open(path) as handle:
        return json.load(handle)


def _layer(path, flags, **extra):
    spec = {'kind': 'flags', 'id': path, 'path': path, 'flags': flags}
    spec.update(extra)
    return spec


def test_the_kind_is_registered_in_the_flags_stage():
    assert kinds.kind_class('flags') is KINDS['flags'] and KINDS['flags'].stage == 'flags'


def test_apply_sets_only_its_keys_keeps_the_mode_and_the_rollback_puts_them_back(site):
    p, path = site
    res = engine.apply_phase(dict(p, layer=_layer(path, {'new-checkout': {'enabled': True},
                                                         'banner': {'state': 'ENABLED', 'default_variant': 'red'}})),
                             _run)
    assert res['changed'] and res['failsafe_layer_stages'] == ['flags']
    doc = _read(path)
    assert doc['flags']['new-checkout']['defaultVariant'] == 'on'
    assert doc['flags']['banner'] == dict(FLAGS['flags']['banner'], state='ENABLED', defaultVariant='red')
    assert doc['flags']['untouched'] == FLAGS['flags']['untouched'] and doc['$schema'] == FLAGS['$schema']
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o640
    # applied again: nothing changes
    again = engine.apply_phase(dict(p, layer=_layer(path, {'new-checkout': {'enabled': True}})), _run)
    assert not again['changed']
    out = engine.rollback(p, _run)
    assert out['failsafe_rollback']['verified']
    assert [e['kind'] for e in out['failsafe_rollback']['layers']] == ['flags']
    assert _read(path) == FLAGS
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o640
    assert DeployState(p['state_dir'], 'flags').read_journal()['status'] == 'rolled_back'


def test_a_key_that_does_not_exist_refuses_before_anything_changes_and_create_makes_it(site):
    p, path = site
    before = open(path).read()
    with pytest.raises(FailsafeError, match="flag key 'nope' does not exist"):
        engine.apply_phase(dict(p, layer=_layer(path, {'new-checkout': True, 'nope': True})), _run)
    assert open(path).read() == before
    assert not DeployState(p['state_dir'], 'flags').read_journal().get('layers')
    with pytest.raises(FailsafeError, match="no variant 'green'"):
        engine.apply_phase(dict(p, layer=_layer(path, {'banner': {'default_variant': 'green'}})), _run)
    with pytest.raises(FailsafeError, match='exactly one variant whose value is true'):
        engine.apply_phase(dict(p, layer=_layer(path, {'banner': {'enabled': True}})), _run)
    with pytest.raises(FailsafeError, match='state must be ENABLED or DISABLED'):
        engine.apply_phase(dict(p, layer=_layer(path, {'banner': {'state': 'on'}})), _run)
    assert open(path).read() == before
    spec = _layer(path, {'fresh': {'variants': {'on': True, 'off': False}, 'enabled': True}}, create=True)
    assert engine.apply_phase(dict(p, layer=spec), _run)['changed']
    assert _read(path)['flags']['fresh']['defaultVariant'] == 'on'
    engine.rollback(p, _run)
    assert 'fresh' not in _read(path)['flags'] and _read(path) == FLAGS


def test_a_file_that_is_not_a_flag_file_is_a_clear_error(site, tmp_path):
    p, path = site
    bad = tmp_path / 'bad.json'
    bad.write_text('{"flag": {}}')
    with pytest.raises(FailsafeError, match='not a flagd flag file'):
        engine.apply_phase(dict(p, layer=_layer(str(bad), {'x': True})), _run)
    bad.write_text('{not json')
    with pytest.raises(FailsafeError, match='not valid JSON'):
        engine.apply_phase(dict(p, layer=_layer(str(bad), {'x': True})), _run)
    with pytest.raises(FailsafeError, match='cannot read the flag file'):
        engine.apply_phase(dict(p, layer=_layer(str(tmp_path / 'none.json'), {'x': True})), _run)
    with pytest.raises(FailsafeError, match='backend'):
        engine.apply_phase(dict(p, layer=_layer(path, {'x': True}, backend='nope')), _run)


def test_check_mode_shows_a_diff_and_changes_nothing(site):
    p, path = site
    before = open(path).read()
    plan = engine.apply_phase(dict(p, layer=_layer(path, {'new-checkout': {'enabled': True}})), _run,
                              check_mode=True)
    assert plan['changed'] and 'would set flag(s) new-checkout' in plan['msg']
    assert '"defaultVariant": "off"' in plan['diff']['before'] and '"defaultVariant": "on"' in plan['diff']['after']
    assert open(path).read() == before
    assert not DeployState(p['state_dir'], 'flags').read_journal().get('layers')


def test_the_kill_switch_applied_later_extends_the_capture_and_the_rollback_ends_before_the_deploy(site):
    p, path = site
    engine.apply_phase(dict(p, layer=_layer(path, {'new-checkout': {'enabled': True}})), _run)
    # the kill switch: the same store, the feature off and one more key the deploy did not set
    kill = engine.apply_phase(dict(p, layer=_layer(path, {'new-checkout': {'state': 'DISABLED'},
                                                          'banner': {'default_variant': 'red'}})), _run)
    assert kill['changed'] and set(kill['record']['flags']) == {'new-checkout', 'banner'}
    assert kill['record']['flags']['new-checkout'] == {'state': 'ENABLED', 'defaultVariant': 'off'}
    assert _read(path)['flags']['new-checkout']['state'] == 'DISABLED'
    engine.rollback(p, _run)
    assert _read(path) == FLAGS


def test_an_undo_that_cannot_read_the_file_fails_naming_the_layer_and_a_rerun_finishes(site):
    p, path = site
    engine.apply_phase(dict(p, layer=_layer(path, {'new-checkout': {'enabled': True}})), _run)
    good = open(path).read()
    with open(path, 'w') as handle:
        handle.write('{broken')
    with pytest.raises(FailsafeError) as err:
        engine.rollback(p, _run)
    assert 'ROLLBACK FAILED at undo the flags:%s layer' % path in err.value.msg
    assert DeployState(p['state_dir'], 'flags').read_journal()['status'] == 'rollback_failed'
    with open(path, 'w') as handle:
        handle.write(good)
    engine.rollback(p, _run)
    assert _read(path) == FLAGS


def _evaluate(path, key, default):
    """The flag's evaluation by the OpenFeature SDK with the flagd provider reading the file in-process, as an
    application does: (value, reason)."""
    from tests.requires import require_module
    require_module('openfeature', 'the OpenFeature SDK is missing (requirements-dev.txt)')
    from openfeature import api
    from openfeature.contrib.provider.flagd import FlagdProvider
    from openfeature.contrib.provider.flagd.config import ResolverType
    provider = FlagdProvider(resolver_type=ResolverType.FILE, offline_flag_source_path=path)
    try:
        api.set_provider_and_wait(provider)
        details = api.get_client().get_boolean_details(key, default)
        return details.value, details.reason
    finally:
        api.shutdown()


@pytest.mark.parametrize('enabled', [True, False])
def test_a_disabled_flag_set_enabled_evaluates_as_said_and_the_rollback_restores_the_file_byte_for_byte(
        tmp_path, enabled):
    path = tmp_path / 'flags' / 'app.flagd.json'
    path.parent.mkdir()
    doc = {'flags': {'new-checkout': {'state': 'DISABLED', 'variants': {'on': True, 'off': False},
                                      'defaultVariant': 'on' if not enabled else 'off', 'targeting': {}},
                     'untouched': {'state': 'ENABLED', 'variants': {'a': True, 'b': False}, 'defaultVariant': 'a'}}}
    original = (json.dumps(doc, indent=2) + '\n').encode()
    path.write_bytes(original)
    # the caller's default is the opposite of what is set: only the flag itself can give the value asked for
    assert _evaluate(str(path), 'new-checkout', not enabled)[0] is (not enabled)
    p = {'state_dir': str(tmp_path / 'state'), 'name': 'flags', 'run_id': 'run-1', 'owner': 'ops@ctl',
         'controller': 'ctl', 'pid': 1, 'ttl': 600, 'recover': True, 'service': {'manager': 'none'}}
    engine.open_phase(p, _run)
    res = engine.apply_phase(dict(p, layer=_layer(str(path), {'new-checkout': {'enabled': enabled}})), _run)
    assert res['changed']
    value, reason = _evaluate(str(path), 'new-checkout', not enabled)
    assert value is enabled and reason != 'DISABLED', reason
    out = engine.rollback(p, _run)
    assert out['failsafe_rollback']['verified']
    assert path.read_bytes() == original
    assert _evaluate(str(path), 'new-checkout', not enabled)[0] is (not enabled)


def test_enabled_beside_state_disabled_is_refused_before_anything_changes(site):
    p, path = site
    before = open(path, 'rb').read()
    with pytest.raises(FailsafeError, match='contradict'):
        engine.apply_phase(dict(p, layer=_layer(path, {'new-checkout': {'enabled': True, 'state': 'DISABLED'}})),
                           _run)
    assert open(path, 'rb').read() == before
