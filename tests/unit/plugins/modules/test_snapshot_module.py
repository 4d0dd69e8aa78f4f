# -*- coding: utf-8 -*-
# Copyright: Contributors to failsafe.deploy
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""failsafe.deploy.snapshot driven through main(), as Ansible runs it."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import json
import os
import stat

import pytest

from ansible_collections.failsafe.deploy.plugins.modules import snapshot
from ansible_collections.failsafe.deploy.tests.unit.plugins.modules.utils import run_module


def run(args, check=False, diff=False):
    """Run the module; returns the result dict (with failed=True on failure)."""
    return run_module(snapshot, args, check=check, diff=diff)


def ok(args, **kw):
    res = run(args, **kw)
    assert not res.get('failed'), res
    return res


def failed(args, **kw):
    res = run(args, **kw)
    assert res.get('failed'), res
    return res


def tree_state(root):
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode):
                out[path] = ('link', os.readlink(path))
            elif stat.S_ISDIR(st.st_mode):
                out[path] = ('dir', stat.S_IMODE(st.st_mode))
            else:
                out[path] = ('file', stat.S_IMODE(st.st_mode), open(path, 'rb').read())
    return out


@pytest.fixture
def env(tmp_path):
    app = tmp_path / 'app'
    (app / 'conf').mkdir(parents=True)
    (app / 'conf' / 'app.conf').write_bytes(b'port=80\n')
    (app / 'run.sh').write_bytes(b'#!/bin/sh\n')
    os.chmod(str(app / 'run.sh'), 0o755)
    os.symlink('conf/app.conf', str(app / 'current'))
    return dict(app=str(app), store=str(tmp_path / 'store'), later=str(tmp_path / 'later'), base=str(tmp_path))


def present(env, **extra):
    args = dict(store=env['store'], paths=[env['app'], env['later']], id='s1', labels={'release': 'r1'})
    args.update(extra)
    return args


def test_present_then_again_reports_changed_then_unchanged_and_dedupes(env):
    first = ok(present(env))
    assert first['changed'] is True and first['id'] == 's1'
    assert first['entries'] == 6 and first['bytes_new'] == len(b'port=80\n') + len(b'#!/bin/sh\n')
    assert os.path.isfile(first['manifest'])
    second = ok(present(env, id='s2'))
    assert second['changed'] is True
    assert second['bytes_new'] == 0 and second['hashed'] == 0
    same = ok(present(env))
    assert same['changed'] is False


def test_present_generates_an_id_when_omitted(env):
    args = present(env)
    del args['id']
    res = ok(args)
    assert res['changed'] is True
    assert len(res['id']) == len('20250101T120000Z-1a2b3c4d') and res['id'][8] == 'T' and res['id'][15] == 'Z'
    assert os.path.isfile(os.path.join(env['store'], 'manifests', res['id'] + '.json'))


def test_check_mode_present_writes_nothing_and_reports(env):
    res = ok(present(env), check=True, diff=True)
    assert res['changed'] is True and res['entries'] == 6 and res['bytes_new'] > 0
    assert 's1' in res['diff']['after'] and res['diff']['before'] == ''
    assert not os.path.exists(env['store'])


def test_restored_brings_everything_back_with_diff_and_is_idempotent(env):
    before = tree_state(env['base'] + '/app')
    ok(present(env))
    with open(os.path.join(env['app'], 'conf', 'app.conf'), 'wb') as f:
        f.write(b'port=81\n')
    os.chmod(os.path.join(env['app'], 'run.sh'), 0o644)
    os.unlink(os.path.join(env['app'], 'current'))
    os.symlink('run.sh', os.path.join(env['app'], 'current'))
    open(os.path.join(env['app'], 'conf', 'new.conf'), 'w').close()
    os.mkdir(env['later'])

    preview = ok(dict(store=env['store'], state='restored', id='s1'), check=True, diff=True)
    assert preview['changed'] is True
    assert sorted(preview['restored']) == sorted([
        os.path.join(env['app'], 'conf', 'app.conf'), os.path.join(env['app'], 'run.sh'),
        os.path.join(env['app'], 'current'), os.path.join(env['app'], 'conf', 'new.conf'), env['later']])
    assert '%s: unexpected\n' % env['later'] in preview['diff']['before'] and preview['diff']['after'] == ''
    assert os.path.isdir(env['later'])  # check mode touched nothing

    res = ok(dict(store=env['store'], state='restored', id='s1'), diff=True)
    assert res['changed'] is True and sorted(res['restored']) == sorted(preview['restored'])
    assert set((d['path'], d['kind']) for d in res['drift']) >= set([
        (os.path.join(env['app'], 'run.sh'), 'mode'), (os.path.join(env['app'], 'current'), 'target')])
    assert tree_state(env['base'] + '/app') == before
    assert not os.path.exists(env['later'])

    again = ok(dict(store=env['store'], state='restored', id='s1'))
    assert again['changed'] is False and again['restored'] == []


def test_verified_fails_on_drift_unless_verify_false(env):
    ok(present(env))
    clean = ok(dict(store=env['store'], state='verified', id='s1'))
    assert clean['changed'] is False and clean['drift'] == []
    os.unlink(os.path.join(env['app'], 'conf', 'app.conf'))
    res = failed(dict(store=env['store'], state='verified', id='s1'))
    assert os.path.join(env['app'], 'conf', 'app.conf') in res['msg']
    assert res['drift'] == [dict(path=os.path.join(env['app'], 'conf', 'app.conf'), kind='missing')]
    report = ok(dict(store=env['store'], state='verified', id='s1', verify=False))
    assert report['changed'] is False and report['drift'] == res['drift']


def test_tampered_manifest_fails_naming_it(env):
    res = ok(present(env))
    manifest = json.load(open(res['manifest']))
    manifest['labels']['release'] = 'r2'
    with open(res['manifest'], 'w') as f:
        json.dump(manifest, f)
    out = failed(dict(store=env['store'], state='restored', id='s1'))
    assert res['manifest'] in out['msg'] and 'checksum' in out['msg']
    assert out['manifest'] == res['manifest']


def test_unknown_snapshot_fails_clearly(env):
    out = failed(dict(store=env['store'], state='restored', id='nope'))
    assert 'nope not found' in out['msg']
    assert not os.path.exists(env['store'])  # a failed restore does not create a store


@pytest.mark.parametrize('args,needle', [
    (dict(state='present'), 'paths'),
    (dict(state='restored'), 'id'),
    (dict(state='absent'), 'id'),
    (dict(state='pruned'), 'keep'),
    (dict(state='present', paths=['relative']), 'relative'),
    (dict(state='present', paths=['/nonexistent/app'], id='../x'), 'invalid snapshot id'),
    (dict(state='pruned', keep=-1), 'keep must be'),
])
def test_bad_arguments_fail_naming_the_problem(env, args, needle):
    args = dict(args, store=env['store'])
    out = failed(args)
    assert needle in out['msg']


def test_list_absent_pruned_through_main(env):
    for n in range(3):
        with open(os.path.join(env['app'], 'conf', 'app.conf'), 'w') as f:
            f.write('v%d\n' % n)
        ok(present(env, id='s%d' % n, labels={'release': 'r%d' % n}))
    listed = ok(dict(store=env['store'], state='query'))
    assert listed['changed'] is False
    assert [(s['id'], s['labels']['release']) for s in listed['snapshots']] == [
        ('s2', 'r2'), ('s1', 'r1'), ('s0', 'r0')]

    preview = ok(dict(store=env['store'], state='absent', id='s1'), check=True, diff=True)
    assert preview['changed'] is True and preview['removed'] == ['s1']
    assert preview['diff']['before'] == 's0\ns1\ns2\n' and preview['diff']['after'] == 's0\ns2\n'
    assert os.path.exists(os.path.join(env['store'], 'manifests', 's1.json'))
    gone = ok(dict(store=env['store'], state='absent', id='s1'))
    assert gone['changed'] is True and gone['objects_removed'] == 1
    assert not os.path.exists(os.path.join(env['store'], 'manifests', 's1.json'))
    assert ok(dict(store=env['store'], state='absent', id='s1'))['changed'] is False

    preview = ok(dict(store=env['store'], state='pruned', keep=0, protect=['s0']), check=True)
    assert preview['removed'] == ['s2'] and os.path.exists(os.path.join(env['store'], 'manifests', 's2.json'))
    pruned = ok(dict(store=env['store'], state='pruned', keep=0, protect=['s0']))
    assert pruned['removed'] == ['s2'] and pruned['changed'] is True
    assert [s['id'] for s in ok(dict(store=env['store'], state='query'))['snapshots']] == ['s0']


def test_list_of_a_missing_store_is_empty(env):
    assert ok(dict(store=env['store'], state='query'))['snapshots'] == []
    assert not os.path.exists(env['store'])


def test_present_creates_a_private_store_under_missing_parents(env):
    store = os.path.join(env['base'], 'var', 'lib', 'failsafe', 'snapshots')
    res = ok(present(env, store=store))
    assert stat.S_IMODE(os.stat(store).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(res['manifest']).st_mode) == 0o600
    objects = [os.path.join(d, n) for d, dummy, names in os.walk(os.path.join(store, 'objects')) for n in names]
    assert len(objects) == 2 and all(stat.S_IMODE(os.stat(o).st_mode) == 0o400 for o in objects)
    assert os.listdir(os.path.join(store, 'tmp')) == []
