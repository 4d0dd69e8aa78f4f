# -*- coding: utf-8 -*-
# Copyright: Contributors to failsafe.deploy
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys

import pytest

from ansible_collections.failsafe.deploy.plugins.module_utils import _snapshot
from ansible_collections.failsafe.deploy.plugins.module_utils._snapshot import (
    SnapshotError, SnapshotStore, manifest_checksum, sign_manifest,
)
from ansible_collections.failsafe.deploy.tests.requires import needs, require_root

ROOT_ONLY = needs(os.geteuid() == 0, 'changing ownership needs root')
BIG = 3 * 1024 * 1024 + 17  # larger than one read chunk: exercises the streaming path


def state_of(*roots):
    """Everything a restore promises to bring back, for byte-for-byte comparison."""
    out = {}
    for root in roots:
        if not os.path.lexists(root):
            out[root] = 'absent'
            continue
        todo = [root]
        while todo:
            path = todo.pop()
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode):
                out[path] = ('link', os.readlink(path), st.st_uid, st.st_gid)
            elif stat.S_ISDIR(st.st_mode):
                out[path] = ('dir', stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid)
                todo.extend(os.path.join(path, n) for n in os.listdir(path))
            else:
                with open(path, 'rb') as f:
                    digest = hashlib.sha256(f.read()).hexdigest()
                out[path] = ('file', stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, digest)
    return out


def objects_in(store):
    found = set()
    for dirpath, dummy, names in os.walk(os.path.join(store, 'objects')):
        found.update(names)
    return found


class Tree(object):
    def __init__(self, base):
        self.base = str(base)
        self.app = os.path.join(self.base, 'app')
        self.later = os.path.join(self.base, 'later')       # does not exist when the snapshot is taken
        self.outside = os.path.join(self.base, 'outside')   # never captured
        self.store = os.path.join(self.base, 'store')
        os.makedirs(os.path.join(self.app, 'conf', 'extra'))
        os.makedirs(os.path.join(self.app, 'bin'))
        os.makedirs(self.outside)
        self.write('conf/app.conf', b'port=80\n')
        self.write('conf/extra/feature.yml', b'flag: off\n')
        self.write('bin/run', b'#!/bin/sh\necho run\n', mode=0o755)
        self.write('big.bin', os.urandom(BIG))
        self.write('copy.conf', b'port=80\n')  # same content as conf/app.conf
        os.symlink('conf/app.conf', self.p('current'))
        os.chmod(self.p('conf'), 0o750)

    def p(self, rel):
        return os.path.join(self.app, rel)

    def write(self, rel, data, mode=0o644):
        with open(self.p(rel), 'wb') as f:
            f.write(data)
        os.chmod(self.p(rel), mode)

    @property
    def roots(self):
        return [self.app, self.later]

    def snapshot(self, **kwargs):
        store = SnapshotStore(self.store)
        kwargs.setdefault('snapshot_id', 's1')
        result = store.capture(self.roots, **kwargs)
        return result, store


@pytest.fixture
def tree(tmp_path):
    return Tree(tmp_path)


# ---------------------------------------------------------------------------- capture and dedupe

def test_given_a_tree_when_snapshotted_then_manifest_records_every_kind_and_is_signed(tree):
    result, store = tree.snapshot(labels={'release': 'r1'})
    manifest = json.load(open(result['manifest']))
    assert manifest['checksum'] == manifest_checksum(manifest)
    by_path = dict((e['path'], e) for e in manifest['entries'])
    assert by_path[tree.later] == {'path': tree.later, 'type': 'absent'}
    assert by_path[tree.p('current')]['type'] == 'link' and by_path[tree.p('current')]['target'] == 'conf/app.conf'
    assert by_path[tree.p('bin/run')]['mode'] == 0o755
    assert by_path[tree.p('conf')]['mode'] == 0o750
    assert by_path[tree.p('big.bin')]['size'] == BIG
    assert manifest['labels'] == {'release': 'r1'}
    assert result['entries'] == len(manifest['entries']) == 11
    # identical contents are stored once
    assert by_path[tree.p('copy.conf')]['sha256'] == by_path[tree.p('conf/app.conf')]['sha256']
    assert len(objects_in(tree.store)) == 4
    assert store.counters['bytes_new'] == sum(os.path.getsize(tree.p(r)) for r in
                                              ('conf/app.conf', 'conf/extra/feature.yml', 'bin/run', 'big.bin'))
    for entry in manifest['entries']:
        if entry['type'] == 'file':
            with open(store.object_path(entry['sha256']), 'rb') as f:
                assert hashlib.sha256(f.read()).hexdigest() == entry['sha256']


def test_given_an_unchanged_tree_when_snapshotted_again_then_nothing_is_hashed_or_copied(tree):
    tree.snapshot()
    before = objects_in(tree.store)
    result, store = tree.snapshot(snapshot_id='s2')
    assert result['changed'] is True
    assert store.counters['hashed'] == 0
    assert store.counters['bytes_new'] == 0
    assert store.counters['objects_new'] == 0
    assert store.counters['cache_hits'] == 5
    assert objects_in(tree.store) == before


def test_given_one_changed_file_when_snapshotted_again_then_only_its_object_is_added(tree):
    tree.snapshot()
    before = objects_in(tree.store)
    tree.write('conf/app.conf', b'port=8080\n')
    dummy, store = tree.snapshot(snapshot_id='s2')
    assert store.counters['hashed'] == 1
    assert store.counters['bytes_new'] == len(b'port=8080\n')
    added = objects_in(tree.store) - before
    assert added == set([hashlib.sha256(b'port=8080\n').hexdigest()])


def test_given_a_lost_stat_cache_when_snapshotted_again_then_files_are_hashed_but_nothing_copied(tree):
    tree.snapshot()
    os.unlink(os.path.join(tree.store, 'statcache.json'))
    dummy, store = tree.snapshot(snapshot_id='s2')
    assert store.counters['hashed'] == 5
    assert store.counters['bytes_new'] == 0


def test_given_no_id_and_an_unchanged_tree_when_snapshotted_again_with_the_same_labels_then_that_snapshot_is_reused(tree):
    first, dummy = tree.snapshot(snapshot_id=None, labels={'run_id': 'r1'})
    manifests = sorted(os.listdir(os.path.join(tree.store, 'manifests')))
    cache = open(os.path.join(tree.store, 'statcache.json'), 'rb').read()
    again, store = tree.snapshot(snapshot_id=None, labels={'run_id': 'r1'})
    assert again['changed'] is False and again['existed'] is True
    assert again['id'] == first['id'] and again['entries'] == first['entries'] and again['roots'] == first['roots']
    assert sorted(os.listdir(os.path.join(tree.store, 'manifests'))) == manifests
    assert open(os.path.join(tree.store, 'statcache.json'), 'rb').read() == cache
    assert store.counters['objects_new'] == 0


@pytest.mark.parametrize('what', ['content', 'mode', 'new_file', 'labels', 'exclude'])
def test_given_no_id_when_the_tree_or_the_request_differs_then_a_new_snapshot_is_taken(tree, what):
    first, dummy = tree.snapshot(snapshot_id=None, labels={'run_id': 'r1'})
    kwargs = dict(snapshot_id=None, labels={'run_id': 'r1'})
    if what == 'content':
        tree.write('conf/app.conf', b'port=81\n')
    elif what == 'mode':
        os.chmod(tree.p('bin/run'), 0o700)
    elif what == 'new_file':
        os.makedirs(tree.later)
    elif what == 'labels':
        kwargs['labels'] = {'run_id': 'r2'}
    else:
        kwargs['exclude'] = ['*.bin']
    again, dummy = tree.snapshot(**kwargs)
    assert again['changed'] is True and again['id'] != first['id']
    assert len(os.listdir(os.path.join(tree.store, 'manifests'))) == 2


def test_given_an_existing_id_when_snapshotted_again_then_the_first_snapshot_is_kept(tree):
    first, dummy = tree.snapshot()
    original = open(first['manifest']).read()
    tree.write('conf/app.conf', b'changed\n')
    again, dummy = tree.snapshot()
    assert again['changed'] is False
    assert open(first['manifest']).read() == original


def test_given_an_existing_id_with_other_paths_then_refused(tree):
    tree.snapshot()
    with pytest.raises(SnapshotError) as exc:
        SnapshotStore(tree.store).capture([tree.app], snapshot_id='s1')
    assert 's1 already exists' in exc.value.msg


@pytest.mark.parametrize('bad', ['relative/path', '/', '//'])
def test_given_a_bad_path_then_capture_refuses_naming_it(tree, bad):
    with pytest.raises(SnapshotError) as exc:
        SnapshotStore(tree.store).capture([bad], snapshot_id='x')
    assert exc.value.details['path'] == bad


@pytest.mark.parametrize('bad_id', ['../evil', 'a/b', '.hidden', '', 'x' * 129])
def test_given_a_bad_id_then_refused(tree, bad_id):
    with pytest.raises(SnapshotError):
        SnapshotStore(tree.store).capture([tree.app], snapshot_id=bad_id)
    assert not os.path.exists(os.path.join(tree.base, 'evil.json'))


def test_given_a_root_overlapping_the_store_then_refused(tree):
    with pytest.raises(SnapshotError) as exc:
        SnapshotStore(os.path.join(tree.app, 'store')).capture([tree.app], snapshot_id='x')
    assert 'overlaps the snapshot store' in exc.value.msg


def test_given_a_symlinked_parent_when_snapshotted_then_the_resolved_root_is_recorded(tree):
    os.symlink(tree.app, os.path.join(tree.base, 'alias'))
    result = SnapshotStore(tree.store).capture([os.path.join(tree.base, 'alias', 'conf')], snapshot_id='x')
    assert result['roots'] == [tree.p('conf')]


def test_given_check_mode_when_snapshotting_then_nothing_is_written(tree):
    store = SnapshotStore(tree.store)
    result = store.capture(tree.roots, snapshot_id='s1', check_mode=True)
    assert result['changed'] is True and result['entries'] == 11
    assert store.counters['bytes_new'] > BIG
    assert not os.path.exists(tree.store)


def test_given_excludes_then_matches_are_neither_captured_nor_removed(tree):
    tree.write('conf/debug.log', b'log line\n')
    os.makedirs(tree.p('cache/deep'))
    tree.write('cache/deep/x', b'x')
    result, dummy = tree.snapshot(exclude=['*.log', 'cache'])
    paths = set(e['path'] for e in json.load(open(result['manifest']))['entries'])
    assert tree.p('conf/debug.log') not in paths and tree.p('cache') not in paths
    tree.write('conf/debug.log', b'more\n')
    tree.write('new.log', b'new\n')
    tree.write('cache/deep/y', b'y')
    restored = SnapshotStore(tree.store).restore('s1')
    assert restored['changed'] is False
    assert os.path.exists(tree.p('new.log')) and os.path.exists(tree.p('cache/deep/y'))


def test_special_files_are_skipped_with_a_warning(tree):
    os.mkfifo(tree.p('fifo'))
    result, store = tree.snapshot()
    assert any('fifo' in w for w in store.warnings)
    assert tree.p('fifo') not in [e['path'] for e in json.load(open(result['manifest']))['entries']]
    assert SnapshotStore(tree.store).verify('s1')['drift'] == []


# ---------------------------------------------------------------------------- restore

def _modify_content(t):
    t.write('conf/app.conf', b'port=9999\n')


def _modify_big(t):
    with open(t.p('big.bin'), 'r+b') as f:
        f.seek(BIG // 2)
        f.write(b'CORRUPTED')


def _delete_file(t):
    os.unlink(t.p('conf/extra/feature.yml'))


def _delete_dir(t):
    shutil.rmtree(t.p('conf'))


def _create_file(t):
    t.write('conf/new.conf', b'new\n')


def _create_dirs(t):
    os.makedirs(t.p('conf/extra/a/b'))
    t.write('conf/extra/a/b/c', b'c')


def _chmod(t):
    os.chmod(t.p('bin/run'), 0o600)
    os.chmod(t.p('conf/extra'), 0o777)


def _retarget(t):
    os.unlink(t.p('current'))
    os.symlink('/etc/passwd', t.p('current'))


def _link_to_file(t):
    os.unlink(t.p('current'))
    t.write('current', b'not a link')


def _file_to_dir(t):
    os.unlink(t.p('bin/run'))
    os.makedirs(t.p('bin/run/inner'))


def _dir_to_symlink(t):
    shutil.rmtree(t.p('conf/extra'))
    os.symlink(t.outside, t.p('conf/extra'))


def _later_created_file(t):
    with open(t.later, 'w') as f:
        f.write('x')


def _later_created_tree(t):
    os.makedirs(os.path.join(t.later, 'sub'))


def _root_deleted(t):
    shutil.rmtree(t.app)


def _root_replaced_by_link(t):
    shutil.rmtree(t.app)
    os.symlink(t.outside, t.app)


MUTATIONS = [_modify_content, _modify_big, _delete_file, _delete_dir, _create_file, _create_dirs, _chmod,
             _retarget, _link_to_file, _file_to_dir, _dir_to_symlink, _later_created_file, _later_created_tree,
             _root_deleted, _root_replaced_by_link]


@pytest.mark.parametrize('mutate', MUTATIONS, ids=[m.__name__.strip('_') for m in MUTATIONS])
def test_given_drift_when_restored_then_every_root_is_exactly_as_captured_and_again_is_a_noop(tree, mutate):
    before = state_of(*tree.roots)
    outside_before = state_of(tree.outside)
    tree.snapshot()
    mutate(tree)
    assert state_of(*tree.roots) != before
    result = SnapshotStore(tree.store).restore('s1')
    assert result['changed'] is True and result['restored']
    assert state_of(*tree.roots) == before
    assert state_of(tree.outside) == outside_before  # nothing written through a symlink
    again = SnapshotStore(tree.store).restore('s1')
    assert again['changed'] is False and again['restored'] == [] and again['drift'] == []


def test_given_several_changes_when_restored_in_check_mode_then_reported_and_nothing_touched(tree):
    tree.snapshot()
    _modify_content(tree)
    _create_file(tree)
    _later_created_file(tree)
    mutated = state_of(*tree.roots)
    result = SnapshotStore(tree.store).restore('s1', check_mode=True)
    assert result['changed'] is True
    assert result['restored'] == sorted([tree.p('conf/app.conf'), tree.p('conf/new.conf'), tree.later])
    assert state_of(*tree.roots) == mutated


@ROOT_ONLY
def test_given_changed_ownership_when_restored_then_owner_and_group_are_back(tree):
    before = state_of(*tree.roots)
    tree.snapshot()
    os.chown(tree.p('conf/app.conf'), 1234, 4321)
    os.lchown(tree.p('current'), 1234, 1234)
    os.chown(tree.p('conf'), 0, 4321)
    result = SnapshotStore(tree.store).restore('s1')
    assert set(result['restored']) == set([tree.p('conf/app.conf'), tree.p('current'), tree.p('conf')])
    assert state_of(*tree.roots) == before


def test_given_setuid_mode_when_restored_then_special_bits_are_back(tree):
    os.chmod(tree.p('bin/run'), 0o4755)
    before = state_of(*tree.roots)
    tree.snapshot()
    tree.write('bin/run', b'#!/bin/sh\necho evil\n', mode=0o755)
    SnapshotStore(tree.store).restore('s1')
    assert state_of(*tree.roots) == before
    assert stat.S_IMODE(os.stat(tree.p('bin/run')).st_mode) == 0o4755


def test_given_a_read_only_directory_when_its_children_are_restored_then_it_stays_read_only(tree):
    tree.snapshot()
    os.chmod(tree.p('conf/extra'), 0o500)
    tree.snapshot(snapshot_id='ro')
    os.chmod(tree.p('conf/extra'), 0o755)
    shutil.rmtree(tree.p('conf/extra'))
    SnapshotStore(tree.store).restore('ro')
    assert stat.S_IMODE(os.stat(tree.p('conf/extra')).st_mode) == 0o500
    assert open(tree.p('conf/extra/feature.yml'), 'rb').read() == b'flag: off\n'


def test_given_a_root_whose_parent_became_a_symlink_then_restore_refuses_and_touches_nothing(tmp_path):
    base = tmp_path / 'parent'
    (base / 'app').mkdir(parents=True)
    (base / 'app' / 'f').write_bytes(b'original')
    store = str(tmp_path / 'store')
    SnapshotStore(store).capture([str(base / 'app')], snapshot_id='s1')
    os.rename(str(base), str(tmp_path / 'moved'))
    (tmp_path / 'elsewhere' / 'app').mkdir(parents=True)
    (tmp_path / 'elsewhere' / 'app' / 'f').write_bytes(b'other')
    os.symlink(str(tmp_path / 'elsewhere'), str(base))
    with pytest.raises(SnapshotError) as exc:
        SnapshotStore(store).restore('s1')
    assert 'symlink' in exc.value.msg and exc.value.details['path'] == str(base / 'app')
    assert (tmp_path / 'elsewhere' / 'app' / 'f').read_bytes() == b'other'


def test_given_verify_when_the_restore_does_not_take_then_it_fails_listing_what_differs(tree, monkeypatch):
    tree.snapshot()
    _chmod(tree)
    monkeypatch.setattr(SnapshotStore, '_set_meta', staticmethod(lambda entry, st: None))
    with pytest.raises(SnapshotError) as exc:
        SnapshotStore(tree.store).restore('s1')
    assert 'did not take' in exc.value.msg and tree.p('bin/run') in exc.value.msg
    assert dict(path=tree.p('bin/run'), kind='mode') in exc.value.details['drift']
    result = SnapshotStore(tree.store).restore('s1', verify=False)  # without verify the same gap goes unnoticed
    assert result['changed'] is True


def test_given_a_corrupt_object_when_restoring_then_it_fails_naming_path_and_object(tree):
    dummy, store = tree.snapshot()
    sha = hashlib.sha256(b'flag: off\n').hexdigest()
    obj = store.object_path(sha)
    os.chmod(obj, 0o600)
    with open(obj, 'wb') as f:
        f.write(b'flag: onn\n')
    _delete_file(tree)
    with pytest.raises(SnapshotError) as exc:
        SnapshotStore(tree.store).restore('s1')
    assert 'corrupt' in exc.value.msg and tree.p('conf/extra/feature.yml') in exc.value.msg
    assert exc.value.details['object'] == obj
    assert not os.path.exists(tree.p('conf/extra/feature.yml'))
    assert [n for n in os.listdir(tree.p('conf/extra')) if 'fsrestore' in n] == []


@pytest.mark.parametrize('point,left_undone', [
    ('restore.removed', True),
    ('restore.entry-restored', True),
    ('restore.metadata-restored', False),  # everything done but the directory flush
])
def test_given_a_crash_midway_when_restore_is_run_again_then_it_completes(tree, point, left_undone):
    before = state_of(*tree.roots)
    tree.snapshot()
    for mutate in (_delete_file, _create_dirs, _modify_big, _chmod, _retarget, _later_created_tree):
        mutate(tree)
    code = ('from ansible_collections.failsafe.deploy.plugins.module_utils._snapshot import SnapshotStore; '
            'SnapshotStore(%r).restore("s1")' % tree.store)
    env = dict(os.environ, FAILSAFE_CRASH_AT=point, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    assert subprocess.call([sys.executable, '-c', code], env=env) == 137
    assert (state_of(*tree.roots) != before) is left_undone
    result = SnapshotStore(tree.store).restore('s1')
    assert result['changed'] is left_undone
    assert state_of(*tree.roots) == before
    assert SnapshotStore(tree.store).verify('s1')['drift'] == []


# ---------------------------------------------------------------------------- verify

@pytest.mark.parametrize('mutate,rel,kind', [
    (_modify_content, 'conf/app.conf', 'content'),
    (_modify_big, 'big.bin', 'content'),
    (_chmod, 'bin/run', 'mode'),
    (_retarget, 'current', 'target'),
    (_link_to_file, 'current', 'type'),
    (_delete_file, 'conf/extra/feature.yml', 'missing'),
    (_create_file, 'conf/new.conf', 'unexpected'),
    (_later_created_file, None, 'unexpected'),
    (lambda t: os.chown(t.p('bin/run'), 1234, 0), 'bin/run', 'owner'),
    (lambda t: os.chown(t.p('bin/run'), 0, 1234), 'bin/run', 'group'),
])
def test_given_drift_when_verified_then_each_kind_is_reported_and_nothing_changes(tree, mutate, rel, kind):
    if kind in ('owner', 'group'):
        require_root('changing ownership needs root')
    tree.snapshot()
    assert SnapshotStore(tree.store).verify('s1')['drift'] == []
    mutate(tree)
    mutated = state_of(*tree.roots)
    result = SnapshotStore(tree.store).verify('s1')
    assert dict(path=tree.p(rel) if rel else tree.later, kind=kind) in result['drift']
    assert result['changed'] is False
    assert state_of(*tree.roots) == mutated


def test_verify_rereads_content_even_when_stat_looks_unchanged(tree):
    tree.snapshot()
    path = tree.p('conf/app.conf')
    st = os.stat(path)
    tree.write('conf/app.conf', b'port=81\n')  # same size
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    store = SnapshotStore(tree.store)
    assert dict(path=path, kind='content') in store.verify('s1')['drift']
    assert store.counters['hashed'] == 5


# ---------------------------------------------------------------------------- manifest integrity

def _load(tree, snapshot_id='s1'):
    path = os.path.join(tree.store, 'manifests', snapshot_id + '.json')
    return path, json.load(open(path))


def _save(path, manifest):
    with open(path, 'w') as f:
        json.dump(manifest, f)


@pytest.mark.parametrize('action', ['restore', 'verify'])
def test_given_a_tampered_manifest_then_restore_and_verify_refuse_naming_it(tree, action):
    tree.snapshot()
    path, manifest = _load(tree)
    for entry in manifest['entries']:
        if entry['path'] == tree.p('bin/run'):
            entry['mode'] = 0o4777
    _save(path, manifest)
    with pytest.raises(SnapshotError) as exc:
        getattr(SnapshotStore(tree.store), action)('s1')
    assert path in exc.value.msg and 'checksum' in exc.value.msg
    assert stat.S_IMODE(os.stat(tree.p('bin/run')).st_mode) == 0o755


def test_given_a_truncated_manifest_then_refused_naming_it(tree):
    tree.snapshot()
    path, dummy = _load(tree)
    with open(path, 'r+') as f:
        f.truncate(100)
    with pytest.raises(SnapshotError) as exc:
        SnapshotStore(tree.store).restore('s1')
    assert path in exc.value.msg


def _escape_dotdot(t, m):
    m['entries'].append(dict(path=t.app + '/../outside/pwned', type='file', mode=0o644, uid=0, gid=0,
                             size=3, sha256=hashlib.sha256(b'x').hexdigest()))


def _escape_absolute(t, m):
    m['entries'].append(dict(path=os.path.join(t.outside, 'pwned'), type='file', mode=0o644, uid=0, gid=0,
                             size=3, sha256=hashlib.sha256(b'x').hexdigest()))


def _escape_via_link(t, m):
    # a child recorded below a symlink (current -> conf/app.conf): restoring it would write through the link
    m['entries'].append(dict(path=t.p('current/pwned'), type='file', mode=0o644, uid=0, gid=0,
                             size=3, sha256=hashlib.sha256(b'x').hexdigest()))


def _escape_root(t, m):
    m['roots'].append('/')


def _escape_object(t, m):
    for entry in m['entries']:
        if entry['type'] == 'file':
            entry['sha256'] = '../../../outside/pwned'


def _escape_absent_child(t, m):
    m['entries'].append(dict(path=t.p('conf/gone'), type='absent'))


ESCAPES = [_escape_dotdot, _escape_absolute, _escape_via_link, _escape_root, _escape_object, _escape_absent_child]


@pytest.mark.parametrize('escape', ESCAPES, ids=[e.__name__.strip('_') for e in ESCAPES])
def test_given_a_resigned_manifest_escaping_its_roots_then_refused(tree, escape):
    tree.snapshot()
    _delete_file(tree)
    path, manifest = _load(tree)
    escape(tree, manifest)
    sign_manifest(manifest)
    assert manifest['checksum'] == manifest_checksum(manifest)  # the checksum alone would pass
    _save(path, manifest)
    with pytest.raises(SnapshotError) as exc:
        SnapshotStore(tree.store).restore('s1')
    assert path in exc.value.msg
    assert os.listdir(tree.outside) == []
    assert not os.path.exists(tree.p('conf/extra/feature.yml'))  # refused before doing anything


# ---------------------------------------------------------------------------- list, absent, prune, gc

def _three_snapshots(tree):
    ids = []
    for n in range(3):
        tree.write('conf/app.conf', ('version %d\n' % n).encode())
        result, dummy = tree.snapshot(snapshot_id='snap-%d' % n, labels={'release': 'r%d' % n})
        ids.append(result['id'])
    return ids


def test_list_returns_snapshots_newest_first_with_labels(tree):
    _three_snapshots(tree)
    summaries = SnapshotStore(tree.store).summaries()
    assert [s['id'] for s in summaries] == ['snap-2', 'snap-1', 'snap-0']
    assert [s['labels'] for s in summaries] == [{'release': 'r2'}, {'release': 'r1'}, {'release': 'r0'}]
    assert all(s['entries'] == 11 and s['valid'] for s in summaries)
    assert summaries[0]['created'] >= summaries[1]['created']


def test_list_of_a_missing_store_is_empty(tmp_path):
    assert SnapshotStore(str(tmp_path / 'none')).summaries() == []


def test_given_snapshots_when_pruned_then_newest_and_protected_are_kept_and_orphans_collected(tree):
    _three_snapshots(tree)
    v1 = hashlib.sha256(b'version 1\n').hexdigest()
    v0 = hashlib.sha256(b'version 0\n').hexdigest()
    assert set([v0, v1]) <= objects_in(tree.store)
    preview = SnapshotStore(tree.store).prune(1, protect=['snap-0'], check_mode=True)
    assert preview['removed'] == ['snap-1'] and preview['objects_removed'] == 1
    assert os.path.exists(os.path.join(tree.store, 'manifests', 'snap-1.json')) and v1 in objects_in(tree.store)
    result = SnapshotStore(tree.store).prune(1, protect=['snap-0'])
    assert result['removed'] == ['snap-1'] and result['changed'] is True
    assert result['kept'] == ['snap-2', 'snap-0']
    assert v1 not in objects_in(tree.store) and v0 in objects_in(tree.store)
    assert SnapshotStore(tree.store).list_ids() == ['snap-0', 'snap-2']
    again = SnapshotStore(tree.store).prune(1, protect=['snap-0'])
    assert again['changed'] is False and again['removed'] == []
    # what is left still restores
    SnapshotStore(tree.store).restore('snap-0')
    assert open(tree.p('conf/app.conf'), 'rb').read() == b'version 0\n'


def test_given_a_snapshot_when_made_absent_then_only_its_unshared_objects_go(tree):
    _three_snapshots(tree)
    shared = hashlib.sha256(b'flag: off\n').hexdigest()
    result = SnapshotStore(tree.store).remove(['snap-2'])
    assert result['removed'] == ['snap-2'] and result['objects_removed'] == 1
    assert hashlib.sha256(b'version 2\n').hexdigest() not in objects_in(tree.store)
    assert shared in objects_in(tree.store)
    assert SnapshotStore(tree.store).remove(['snap-2'])['changed'] is False


def test_given_an_unreadable_manifest_then_gc_keeps_every_object_and_warns(tree):
    _three_snapshots(tree)
    with open(os.path.join(tree.store, 'manifests', 'snap-0.json'), 'w') as f:
        f.write('{broken')
    before = objects_in(tree.store)
    store = SnapshotStore(tree.store)
    result = store.remove(['snap-2'])
    assert result['removed'] == ['snap-2'] and result['objects_removed'] == 0
    assert objects_in(tree.store) == before
    assert any('garbage collection skipped' in w for w in store.warnings)


def test_after_gc_a_stale_stat_cache_does_not_hide_a_missing_object(tree):
    tree.snapshot()
    SnapshotStore(tree.store).remove(['s1'])
    assert objects_in(tree.store) == set()
    dummy, store = tree.snapshot(snapshot_id='s2')
    assert store.counters['bytes_new'] > BIG
    assert len(objects_in(tree.store)) == 4


def test_helpers_reject_garbage(tmp_path):
    with pytest.raises(SnapshotError):
        _snapshot.validate_manifest([], 'x.json')
    assert _snapshot.new_snapshot_id() != _snapshot.new_snapshot_id()
    assert _snapshot.ID_RE.match(_snapshot.new_snapshot_id())


@pytest.mark.parametrize('extra', [{}, {'alpha': 1}])
def test_signed_manifest_bytes_is_the_canonical_signed_manifest(extra):
    """The one-encode fast path writes exactly what encoding the signed manifest would (and falls back when a key
    sorts before "checksum")."""
    manifest = dict(format=1, id='s1', entries=[{'path': '/a/\u00e9', 'type': 'file', 'sha256': 'ab' * 32}],
                    labels={'k': 'v'}, checksum='stale', **extra)
    content = _snapshot.signed_manifest_bytes(manifest)
    assert content == _snapshot.canonical_json(manifest) + b'\n'
    assert manifest['checksum'] == manifest_checksum(manifest) != 'stale'
    assert json.loads(content.decode('utf-8')) == manifest


def test_manifest_and_cache_files_are_compact_json(tmp_path):
    """Large store files skip the indent (json's C encoder); they stay sorted, valid and verifiable."""
    tree = tmp_path / 'tree'
    tree.mkdir()
    (tree / 'f').write_text('x')
    store = SnapshotStore(str(tmp_path / 'store'))
    store.capture([str(tree)], snapshot_id='s1')
    raw = open(store.manifest_path('s1'), 'rb').read()
    assert b'\n ' not in raw and raw.endswith(b'}\n')
    assert raw == _snapshot.canonical_json(json.loads(raw.decode('utf-8'))) + b'\n'
    assert store.verify('s1')['drift'] == []
    cache = open(store.cache_path, 'rb').read()
    assert b'\n ' not in cache and json.loads(cache.decode('utf-8'))['entries']
