# -*- coding: utf-8 -*-
# Copyright: Contributors to failsafe.deploy
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The words of a rollback: its last line names the release the host runs after it (read from the current link,
never None where a release runs) and what each layer of every stage undid; a staged rollback's last call sums up
the stages undone by the calls before it, which the journal keeps.

Engine runs on a real release root with small layer kinds of the test's own (a value in a file per kind); the
service manager is ``none``."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import os

import pytest

from ansible_collections.failsafe.deploy.plugins.module_utils import _engine as engine
from ansible_collections.failsafe.deploy.plugins.module_utils._journal import DeployState
from ansible_collections.failsafe.deploy.plugins.module_utils._layers import KINDS, Layer, register
from ansible_collections.failsafe.deploy.plugins.module_utils._release import (
    ReleaseRoot, ensure_active, ensure_staged, ensure_verified,
)
from ansible_collections.failsafe.deploy.plugins.module_utils._undone import layer_words, summary


class _Value(Layer):
    """Writes options['value'] to options['path']; undo writes back what was there (or removes it)."""

    def __init__(self, options, run):
        self.o = options

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
        return {'changed': True}

    def undo(self, record):
        if record['before'] is None:
            os.unlink(self.o['path'])
        else:
            with open(self.o['path'], 'w') as handle:
                handle.write(record['before'])
        return {'changed': True}

    def verify(self, record):
        return [] if self._read() == record['before'] else ['%s differs' % self.o['path']]


@register
class WordsFlag(_Value):
    kind = 'words_flag'
    stage = 'flags'


@register
class WordsSchema(_Value):
    kind = 'words_schema'
    stage = 'database'


def teardown_module(module):
    for kind in ('words_flag', 'words_schema'):
        KINDS.pop(kind, None)


def _run(argv):
    return 0, '', ''


@pytest.fixture
def host(tmp_path):
    """A release root on 1.0 (verified) with 2.0 staged, and the parameters of a deploy of 2.0."""
    app = str(tmp_path / 'app')
    rr = ReleaseRoot(app)
    for rid in ('1.0', '2.0'):
        src = tmp_path / ('src-' + rid)
        src.mkdir()
        (src / 'VERSION').write_text(rid)
        ensure_staged(rr, rid, str(src))
    ensure_active(rr, '1.0')
    ensure_verified(rr, '1.0')
    p = {'state_dir': str(tmp_path / 'state'), 'name': 'app', 'run_id': 'run-1', 'owner': 'ops@ctl',
         'controller': 'ctl', 'pid': 1, 'ttl': 600, 'recover': True, 'service': {'manager': 'none'},
         'app_root': app, 'release': '2.0', 'snapshot_paths': [os.path.join(app, 'current')], 'min_free_mb': 0,
         'check_running': False}
    engine.open_phase(dict(p), _run)
    for kind, value in (('words_schema', 'v2'), ('words_flag', 'on')):
        engine.apply_phase(dict(p, layer={'kind': kind, 'path': str(tmp_path / kind), 'value': value}), _run)
    return p, rr


def test_the_last_call_of_a_staged_rollback_sums_up_every_stage_and_names_the_release_that_runs(host):
    p, rr = host
    engine.activate_phase(dict(p), _run)
    assert rr.read_current() == '2.0'
    first = engine.rollback(dict(p, stages=['flags']), _run)
    assert first['msg'].startswith('undid the flags stage(s) of transaction ')
    assert 'words_flag undone' in first['msg'] and 'still to undo: the code, database stage(s)' in first['msg']
    code = engine.rollback(dict(p, stages=['code']), _run)
    assert 'the host runs release 1.0; still to undo: the database stage(s)' in code['msg']
    last = engine.rollback(dict(p, stages=['database']), _run)
    assert rr.read_current() == '1.0'
    msg = last['msg']
    assert 'None' not in msg and '2.0 -> 1.0, the release this host runs now' in msg, msg
    assert 'was never activated' not in msg
    # every stage, in the order undone, with what its layers did: not the database stage alone
    assert msg.endswith('; undone: flags stage: words_flag undone; code stage: 1 path(s) restored, release switched '
                        'back from 2.0 to 1.0 (2.0 quarantined); database stage: words_schema undone; restore '
                        'proven'), msg
    report = last['failsafe_rollback']
    assert report['running_release'] == '1.0' and report['target_release'] == '1.0'
    journal = DeployState(p['state_dir'], 'app').read_journal()
    assert journal['status'] == 'rolled_back' and journal['outcome']['target'] == '1.0'


def test_a_rollback_before_the_activation_names_the_release_that_kept_running(host):
    p, rr = host
    res = engine.rollback(dict(p), _run)
    assert rr.read_current() == '1.0'
    msg = res['msg']
    assert 'None' not in msg, msg
    assert '2.0 -> 1.0, the release this host runs now (2.0 was never activated: 1.0 kept running)' in msg, msg
    # one call undid the three stages; the release layer never applied is not said to be undone
    assert 'flags stage: words_flag undone; code stage: 0 path(s) restored (none had changed); database stage: ' \
           'words_schema undone; restore proven' in msg, msg
    assert 'switched back' not in msg
    report = res['failsafe_rollback']
    assert report['running_release'] == '1.0' and report['target_release'] == '1.0'
    assert report['quarantined'] is False
    journal = DeployState(p['state_dir'], 'app').read_journal()
    assert journal['outcome']['target'] == '1.0', 'history_info reads the release rolled back to from here'


@pytest.mark.parametrize('entry, words', [
    ({'kind': 'files', 'paths': 2}, '2 path(s) restored'),
    ({'kind': 'files', 'paths': 0}, '0 path(s) restored (none had changed)'),
    ({'kind': 'release', 'target': '4.0', 'was': '5.0', 'failed': '5.0', 'quarantined': True},
     'release switched back from 5.0 to 4.0 (5.0 quarantined)'),
    ({'kind': 'release', 'target': '4.0', 'was': '4.0', 'failed': '5.0', 'quarantined': False},
     'release left on 4.0'),
    ({'kind': 'release', 'target': None, 'was': '1.0', 'failed': '1.0'},
     'no release to switch back to: 1.0 taken out of service'),
    ({'kind': 'service', 'action': 'restarted'}, 'service restarted'),
    ({'kind': 'service', 'action': 'unloaded'}, 'service stopped and unloaded (no release to serve)'),
    ({'kind': 'database', 'database': 'app.db', 'method': 'reverse migrations', 'reverted': ['0003', '0002'],
      'revision': ['0001']}, 'database app.db migrated back (undid 0003, 0002) to 0001'),
    ({'kind': 'database', 'database': 'app', 'method': 'reverse migrations', 'revision': 'a1'},
     'database app migrated back to a1'),
    ({'kind': 'database', 'database': 'app', 'method': 'restore', 'data_loss': True, 'dropped_writes_in': ['items']},
     'database app restored from its backup (writes dropped in items)'),
    ({'kind': 'database', 'database': 'app', 'method': 'nothing to undo'}, 'database app unchanged (nothing to undo)'),
    ({'kind': 'flags', 'flags': {'b': None, 'a': {'enabled': False}}}, 'flag(s) a, b restored'),
    ({'kind': 'traffic', 'traffic': 'haproxy web/app1 ready'}, 'traffic restored (haproxy web/app1 ready)'),
    ({'kind': 'custom', 'key': 'custom:x'}, 'custom:x undone'),
])
def test_each_layer_says_what_it_undid(entry, words):
    assert layer_words(dict(entry, undone=True)) == words


def test_the_summary_says_nothing_deployed_or_layers_only_where_no_release_runs():
    assert summary('t1', '1.0', None, [('code', ['staged release 1.0 removed'])], nothing_deployed=True) == (
        'rolled back transaction t1: 1.0 -> nothing deployed (no release before it); undone: staged release 1.0 '
        'removed; restore proven')
    assert summary('t2', None, None, [('flags', ['flag(s) a restored']), ('code', [])], has_release=False) == (
        'rolled back transaction t2 (layers only); undone: flag(s) a restored; restore proven')
