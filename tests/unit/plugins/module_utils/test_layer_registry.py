# -*- coding: utf-8 -*-
# Copyright: Contributors to failsafe.deploy
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Every recorded layer is undone, whatever its kind: a kind registered in the code stage is undone by the rollback
like one of a stage of its own, each undo is verified, and "restore proven" is said only of what was undone and
proven. A kind must declare a stage the rollback runs; a layer of a kind the rollback does not know fails it loudly,
naming the layer.

The kinds here are defined by the test: each keeps a value in a file and logs what it does to a shared log."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import json
import os
import subprocess
import sys

import pytest

from ansible_collections.failsafe.deploy.plugins.module_utils import _engine as engine
from ansible_collections.failsafe.deploy.plugins.module_utils._errors import FailsafeError
from ansible_collections.failsafe.deploy.plugins.module_utils._journal import DeployState
from ansible_collections.failsafe.deploy.plugins.module_utils import kinds
from ansible_collections.failsafe.deploy.plugins.module_utils._layers import KINDS, STAGES, Layer, register


class Knob(Layer):
    """Writes options['value'] to options['path']; undo writes back what was there. With options['stuck'] naming a
    file that exists, undo leaves the value as it is (an undo that does not take)."""

    def __init__(self, options, run):
        self.o = options

    def _log(self, what):
        with open(self.o['log'], 'a') as handle:
            handle.write(json.dumps([self.kind, what]) + '\n')

    def _read(self):
        try:
            with open(self.o['path']) as handle:
                return handle.read()
        except IOError:
            return None

    def capture(self, params):
        return {'before': self._read()}

    def apply(self, params, record):
        with open(self.o['path'], 'w') as handle:
            handle.write(params['value'])
        self._log('apply')
        return {'changed': True}

    def undo(self, record):
        self._log('undo')
        if not (self.o.get('stuck') and os.path.exists(self.o['stuck'])):
            with open(self.o['path'], 'w') as handle:
                handle.write(record['before'])
        return {'changed': True}

    def verify(self, record):
        self._log('verify')
        return [] if self._read() == record['before'] else ['%s still holds %r' % (self.o['path'], self._read())]


@register
class CodeKnob(Knob):
    kind = 'test_code_knob'
    stage = 'code'


@register
class DatabaseKnob(Knob):
    kind = 'test_database_knob'
    stage = 'database'


def teardown_module(module):
    for kind in ('test_code_knob', 'test_database_knob', 'test_gone_knob'):
        KINDS.pop(kind, None)


def _run(argv):
    raise AssertionError('no command expected: the transaction recorded no service (%r)' % (argv,))


@pytest.fixture
def host(tmp_path):
    """A host whose transaction is configuration files and the test's layers (no release, no service)."""
    conf = tmp_path / 'etc'
    conf.mkdir()
    (conf / 'app.conf').write_text('old\n')
    for name in ('test_code_knob', 'test_database_knob', 'test_gone_knob'):
        (tmp_path / name).write_text('before')
    p = {'state_dir': str(tmp_path / 'state'), 'name': 'app', 'run_id': 'run-1', 'owner': 'ops@ctl',
         'controller': 'ctl', 'pid': 1, 'ttl': 600, 'recover': True, 'snapshot_paths': [str(conf)]}

    def layer(kind, value, **extra):
        return dict({'kind': kind, 'path': str(tmp_path / kind), 'value': value, 'log': str(tmp_path / 'log')},
                    **extra)

    def log():
        with open(str(tmp_path / 'log')) as handle:
            return [tuple(json.loads(line)) for line in handle]
    engine.open_phase(p, _run)
    return p, layer, log, tmp_path


def _journal(p):
    return DeployState(p['state_dir'], p['name']).read_journal()


def test_a_code_stage_kind_and_one_of_its_own_stage_are_undone_and_each_undo_is_verified(host):
    p, layer, log, tmp = host
    for spec in (layer('test_code_knob', 'after'), layer('test_database_knob', 'after')):
        engine.apply_phase(dict(p, layer=spec), _run)
    (tmp / 'etc' / 'app.conf').write_text('new\n')
    assert engine.layer_stages(_journal(p)) == ['code', 'database']

    out = engine.rollback(p, _run)

    assert (tmp / 'test_code_knob').read_text() == 'before'
    assert (tmp / 'test_database_knob').read_text() == 'before'
    assert (tmp / 'etc' / 'app.conf').read_text() == 'old\n'
    report = out['failsafe_rollback']
    undone = [(entry['kind'], entry.get('stage')) for entry in report['layers']]
    assert undone == [('files', None), ('test_code_knob', 'code'), ('test_database_knob', 'database')]
    assert report['verified'] is True and 'restore proven' in out['msg']
    undos = [entry for entry in log() if entry[1] != 'apply']
    # each undo verified at once; the code stage's proven again with the restore, before the database stage
    assert undos == [('test_code_knob', 'undo'), ('test_code_knob', 'verify'), ('test_code_knob', 'verify'),
                     ('test_database_knob', 'undo'), ('test_database_knob', 'verify')]
    journal = _journal(p)
    assert journal['status'] == 'rolled_back'
    assert journal['rollback']['undone'] == ['files', 'test_code_knob', 'test_database_knob']


def test_a_staged_rollback_undoes_a_code_stage_kind_in_the_code_stage(host):
    p, layer, log, tmp = host
    engine.apply_phase(dict(p, layer=layer('test_code_knob', 'after')), _run)
    out = engine.rollback(dict(p, stages=['code']), _run)
    assert (tmp / 'test_code_knob').read_text() == 'before'
    assert 'pending' not in out['failsafe_rollback']
    assert _journal(p)['status'] == 'rolled_back'


def test_a_code_stage_undo_that_does_not_take_fails_the_rollback_naming_the_layer(host):
    p, layer, log, tmp = host
    stuck = tmp / 'stuck'
    engine.apply_phase(dict(p, layer=layer('test_code_knob', 'after', stuck=str(stuck))), _run)
    engine.apply_phase(dict(p, layer=layer('test_database_knob', 'after')), _run)
    stuck.write_text('')
    with pytest.raises(FailsafeError) as err:
        engine.rollback(p, _run)
    assert 'ROLLBACK FAILED at verify the undo of the test_code_knob layer' in err.value.msg
    assert 'restore proven' not in err.value.msg
    assert (tmp / 'test_database_knob').read_text() == 'after'    # later stages are not attempted
    journal = _journal(p)
    assert journal['status'] == 'rollback_failed'
    assert 'test_code_knob' in journal['outcome']['failed_step']
    stuck.unlink()                                                 # fixed: run again, it finishes the job
    assert 'restore proven' in engine.rollback(p, _run)['msg']
    assert (tmp / 'test_code_knob').read_text() == 'before'
    assert (tmp / 'test_database_knob').read_text() == 'before'


def test_a_layer_of_a_kind_the_rollback_does_not_know_fails_it_naming_the_layer(host):
    p, layer, log, tmp = host

    @register
    class GoneKnob(Knob):
        kind = 'test_gone_knob'
        stage = 'flags'

    engine.apply_phase(dict(p, layer=layer('test_gone_knob', 'after', id='one')), _run)
    KINDS.pop('test_gone_knob')        # a journal written by a version that knew the kind, read by one that does not
    with pytest.raises(FailsafeError) as err:
        engine.rollback(p, _run)
    assert 'ROLLBACK FAILED at undo the test_gone_knob:one layer' in err.value.msg
    assert "'test_gone_knob' is not known" in err.value.msg
    assert (tmp / 'test_gone_knob').read_text() == 'after'
    assert _journal(p)['status'] == 'rollback_failed'


@pytest.mark.parametrize('stage, words', [
    (None, 'declares no rollback stage'),
    ('infrastructure', "stage 'infrastructure' is not one the rollback runs"),
    ('', "stage '' is not one the rollback runs"),
], ids=['no-stage', 'a-stage-the-rollback-does-not-run', 'empty-stage'])
def test_a_kind_without_a_stage_the_rollback_runs_is_refused(stage, words):
    attrs = {'kind': 'test_refused_knob'}
    if stage is not None:
        attrs['stage'] = stage
    cls = type('RefusedKnob', (Knob,), attrs)
    with pytest.raises(ValueError) as err:
        register(cls)
    assert words in str(err.value) and 'test_refused_knob' in str(err.value)
    assert 'test_refused_knob' not in KINDS


def test_a_kind_cannot_take_the_name_of_a_built_in_one():
    with pytest.raises(ValueError):
        register(type('FilesAgain', (Knob,), {'kind': 'files', 'stage': 'code'}))
    assert 'files' not in KINDS


def test_every_registered_kind_of_the_collection_declares_a_stage_the_rollback_runs():
    kinds.load_all()
    assert {'database', 'traffic', 'flags'} <= set(cls.stage for cls in KINDS.values())
    assert all(cls.stage in STAGES for cls in KINDS.values())


def test_a_kind_of_the_collection_is_loaded_when_first_needed_and_known_to_the_words_that_list_kinds():
    # A fresh interpreter, as on a host: the engine alone compiles no layer kind's module, a kind is loaded when a
    # transaction needs it (kind_class, stage_of), and load_all lists every kind of the collection.
    code = '\n'.join([
        'import sys',
        'from ansible_collections.failsafe.deploy.plugins.module_utils import _engine, _layers, kinds',
        "prefix = 'ansible_collections.failsafe.deploy.plugins.module_utils.kinds.'",
        "loaded = ('database', 'traffic', 'flags')",
        'print(sorted(m for m in loaded if prefix + m in sys.modules))',
        "print(kinds.stage_of('traffic'), kinds.kind_class('flags').stage, kinds.kind_class('nosuch'))",
        'print(sorted(m for m in loaded if prefix + m in sys.modules))',
        'print(sorted(kinds.load_all()))',
    ])
    top = os.path.abspath(kinds.__file__)
    for dummy in range(7):
        top = os.path.dirname(top)        # the directory that holds ansible_collections/
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([top] + sys.path))
    out = subprocess.run([sys.executable, '-c', code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         universal_newlines=True, check=True, env=env).stdout.splitlines()
    assert out == ["[]", 'traffic flags None', "['flags', 'traffic']", "['cloudformation', 'database', 'flags', 'terraform', 'traffic']"]


def test_each_kind_of_the_collection_lives_in_a_module_of_its_own_in_the_kinds_folder():
    # The engine's own kinds and every kind the registry loads: kinds/<kind>.py defines it, one kind per module.
    built_in = dict((cls.kind, cls) for cls in (engine.FilesLayer, engine.ReleaseLayer, engine.ServiceLayer))
    assert sorted(built_in) == sorted(engine.BUILT_IN_KINDS)
    registered = dict((kind, kinds.kind_class(kind)) for kind in kinds.LOADERS)
    homes = dict((kind, cls.__module__) for kind, cls in list(built_in.items()) + list(registered.items()))
    assert homes == dict((kind, kinds.__name__ + '.' + kind) for kind in homes)
    folder = os.path.dirname(os.path.abspath(kinds.__file__))
    assert sorted(name[:-3] for name in os.listdir(folder) if name.endswith('.py') and name != '__init__.py') \
        == sorted(homes)
