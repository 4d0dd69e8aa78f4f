# -*- coding: utf-8 -*-
# Copyright: Contributors to failsafe.deploy
# SPDX-License-Identifier: GPL-3.0-or-later
"""Crash safety of the `current` switch, release staging and snapshot restore.

Each case runs the real operation in a child Python process with FAILSAFE_CRASH_AT naming one crash point
(module_utils/_atomic.py `_crash_point`: os._exit(137) there, like a SIGKILL or power cut between two system
calls). Afterwards `current` must resolve to a complete release (the old or the new one, never missing, dangling or
partial), and running the interrupted operation again must complete it: verify then shows no drift.
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import hashlib
import json
import os
import re
import subprocess
import sys

import pytest

from ansible_collections.failsafe.deploy.plugins.module_utils import _atomic
from ansible_collections.failsafe.deploy.plugins.module_utils._release import (
    ReleaseRoot, ensure_active, ensure_staged, ensure_verified)
from ansible_collections.failsafe.deploy.plugins.module_utils._snapshot import SnapshotStore

MODULE_UTILS = os.path.dirname(_atomic.__file__)
COLLECTIONS = os.path.abspath(os.path.join(MODULE_UTILS, '..', '..', '..', '..', '..'))
CRASHED = 137

# Every crash point the operations below pass, per operation. test_every_crash_point_is_exercised keeps this list
# in step with the code: a new _crash_point() in these files must be added here.
SWITCH_POINTS = ['symlink.tmp-created', 'symlink.replaced', 'symlink.synced', 'release.switched',
                 'write.tmp-synced', 'write.replaced']
ROLLBACK_POINTS = ['symlink.tmp-created', 'symlink.replaced', 'symlink.synced', 'release.rolled-back',
                   'write.tmp-synced', 'write.replaced']
STAGE_POINTS = ['release.staged-tmp', 'release.staged-renamed', 'write.tmp-synced', 'write.replaced']
PRUNE_POINTS = ['release.removed-renamed']
RESTORE_POINTS = ['restore.entry-removed', 'restore.entry-removed@2', 'restore.removed',
                  'restore.dir-created', 'restore.file-tmp-written', 'restore.file-tmp-written@2',
                  'restore.link-tmp-created', 'restore.link-tmp-created@2',
                  'restore.entry-restored', 'restore.entry-restored@3', 'restore.entry-metadata',
                  'restore.entry-metadata@4', 'restore.metadata-restored']
CAPTURE_POINTS = ['snapshot.entry-captured', 'snapshot.entry-captured@5']
FILES = ('_atomic.py', '_release.py', '_snapshot.py')
NOT_COVERED_HERE = {'journal.opened', 'journal.history-appended', 'journal.closed'}  # _journal.py: the lock file

CHILD = r'''
import json, sys
from ansible_collections.failsafe.deploy.plugins.module_utils import _release as rel
from ansible_collections.failsafe.deploy.plugins.module_utils._snapshot import SnapshotStore
op, args = sys.argv[1], json.loads(sys.argv[2])
if op == 'activate':
    rel.ensure_active(rel.ReleaseRoot(args['root']), args['id'])
elif op == 'rollback':
    rel.ensure_rolled_back(rel.ReleaseRoot(args['root']), args['id'], reason='health check failed')
elif op == 'stage':
    rel.ensure_staged(rel.ReleaseRoot(args['root']), args['id'], args['src'])
elif op == 'absent':
    rel.ensure_absent(rel.ReleaseRoot(args['root']), args['id'])
elif op == 'restore':
    SnapshotStore(args['store']).restore(args['snapshot'])
elif op == 'capture':
    SnapshotStore(args['store']).capture(args['paths'])
else:
    raise SystemExit('unknown op %s' % op)
'''


def run_child(op, crash_at=None, **args):
    env = dict(os.environ)
    env.pop(_atomic.CRASH_ENV, None)
    if crash_at:
        env[_atomic.CRASH_ENV] = crash_at
    env['PYTHONPATH'] = COLLECTIONS + os.pathsep + env.get('PYTHONPATH', '')
    return subprocess.run([sys.executable, '-c', CHILD, op, json.dumps(args)], env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, universal_newlines=True, timeout=60, check=False)


def tree_digest(top):
    """path -> (kind, content sha256 or link target, mode) for everything under top (symlinks not followed)."""
    out = {}
    for base, dirs, files in os.walk(top):
        for name in sorted(dirs) + sorted(files):
            path = os.path.join(base, name)
            rel = os.path.relpath(path, top)
            st = os.lstat(path)
            if os.path.islink(path):
                out[rel] = ('link', os.readlink(path), None)
            elif os.path.isdir(path):
                out[rel] = ('dir', None, st.st_mode & 0o7777)
            else:
                with open(path, 'rb') as f:
                    out[rel] = ('file', hashlib.sha256(f.read()).hexdigest(), st.st_mode & 0o7777)
    return out


def make_src(base, version, files=5):
    src = os.path.join(str(base), 'src-%s' % version)
    os.makedirs(os.path.join(src, 'lib', 'deep'))
    with open(os.path.join(src, 'VERSION'), 'w') as f:
        f.write(version + '\n')
    with open(os.path.join(src, 'app.py'), 'w') as f:
        f.write('print(%r)\n' % version)
    for i in range(files):
        with open(os.path.join(src, 'lib', 'deep', 'm%d.py' % i), 'w') as f:
            f.write('VERSION = %r\nN = %d\n' % (version, i) + 'x' * (1000 * i))
    return src


class Site(object):
    """An application root with complete, verified releases staged from known sources."""

    def __init__(self, base, versions=('1.0.0', '2.0.0')):
        self.base = str(base)
        self.root = os.path.join(self.base, 'app')
        self.rr = ReleaseRoot(self.root)
        self.src = {}
        for v in versions + ('3.0.0',):
            self.src[v] = make_src(self.base, v)
        for v in versions:
            ensure_staged(self.rr, v, self.src[v])

    def activate(self, version, verified=True):
        ensure_active(self.rr, version)
        if verified:
            ensure_verified(self.rr, version)

    def assert_current_complete(self, allowed):
        link = self.rr.current_link
        assert os.path.islink(link), 'current is missing or not a symlink'
        target = os.readlink(link)
        assert re.match(r'^releases/[0-9.]+$', target), target
        version = target.split('/')[1]
        assert version in allowed, 'current -> %s, expected one of %s' % (target, allowed)
        resolved = os.path.join(self.root, target)
        assert os.path.isdir(resolved), 'current is dangling: %s' % target
        assert tree_digest(resolved) == tree_digest(self.src[version]), 'release %s is partial' % version
        with open(os.path.join(self.root, 'current', 'VERSION')) as f:
            assert f.read().strip() == version
        return version

    def leftovers(self):
        """Temporaries of an interrupted switch or restore left beside `current`."""
        return [n for n in os.listdir(self.root) if n.startswith('.current.')]

    def ledger(self):
        with open(self.rr.ledger_path) as f:
            return json.load(f)


def crashed(proc):
    assert proc.returncode == CRASHED, 'the crash point was not reached (rc=%s): %s' % (proc.returncode, proc.stdout)


def completed(proc):
    assert proc.returncode == 0, proc.stdout


@pytest.mark.parametrize('point', SWITCH_POINTS)
def test_switch_of_current_interrupted_at_each_point(point, tmp_path):
    site = Site(tmp_path)
    site.activate('1.0.0')
    crashed(run_child('activate', point, root=site.root, id='2.0.0'))
    site.assert_current_complete({'1.0.0', '2.0.0'})
    completed(run_child('activate', root=site.root, id='2.0.0'))
    assert site.assert_current_complete({'2.0.0'}) == '2.0.0'
    assert site.ledger()['current'] == '2.0.0'
    assert site.ledger()['releases']['1.0.0']['state'] == 'verified'
    assert site.leftovers() == []


@pytest.mark.parametrize('point', ROLLBACK_POINTS)
def test_rollback_switch_interrupted_at_each_point(point, tmp_path):
    site = Site(tmp_path)
    site.activate('1.0.0')
    site.activate('2.0.0', verified=False)
    crashed(run_child('rollback', point, root=site.root, id='2.0.0'))
    site.assert_current_complete({'1.0.0', '2.0.0'})
    completed(run_child('rollback', root=site.root, id='2.0.0'))
    assert site.assert_current_complete({'1.0.0'}) == '1.0.0'
    ledger = site.ledger()
    assert ledger['current'] == '1.0.0' and ledger['releases']['2.0.0']['state'] == 'failed'
    assert site.leftovers() == []


@pytest.mark.parametrize('point', STAGE_POINTS)
def test_staging_interrupted_at_each_point_leaves_current_alone_and_restages(point, tmp_path):
    site = Site(tmp_path)
    site.activate('2.0.0')
    crashed(run_child('stage', point, root=site.root, id='3.0.0', src=site.src['3.0.0']))
    site.assert_current_complete({'2.0.0'})
    # a half-extracted release never appears under its own name
    partial = os.path.join(site.root, 'releases', '3.0.0')
    if os.path.exists(partial):
        assert tree_digest(partial) == tree_digest(site.src['3.0.0'])
    completed(run_child('stage', root=site.root, id='3.0.0', src=site.src['3.0.0']))
    assert tree_digest(partial) == tree_digest(site.src['3.0.0'])
    assert site.ledger()['releases']['3.0.0']['state'] == 'staged'
    completed(run_child('activate', root=site.root, id='3.0.0'))
    site.assert_current_complete({'3.0.0'})


@pytest.mark.parametrize('point', PRUNE_POINTS)
def test_release_removal_interrupted_leaves_current_alone(point, tmp_path):
    site = Site(tmp_path)
    site.activate('1.0.0')
    site.activate('2.0.0')
    crashed(run_child('absent', point, root=site.root, id='1.0.0'))
    site.assert_current_complete({'2.0.0'})
    completed(run_child('absent', root=site.root, id='1.0.0'))
    assert not os.path.exists(os.path.join(site.root, 'releases', '1.0.0'))
    site.assert_current_complete({'2.0.0'})


def _shared_tree(root):
    shared = os.path.join(root, 'shared')
    os.makedirs(os.path.join(shared, 'config', 'conf.d'))
    os.makedirs(os.path.join(shared, 'data', 'uploads'))
    for name, body in (('config/app.json', '{"port": 8080}'), ('config/conf.d/a.conf', 'a=1'),
                       ('config/conf.d/b.conf', 'b=2'), ('data/uploads/u1.bin', 'u' * 5000),
                       ('data/notes.txt', 'notes')):
        with open(os.path.join(shared, name), 'w') as f:
            f.write(body)
    os.chmod(os.path.join(shared, 'config', 'app.json'), 0o640)
    os.symlink('config/app.json', os.path.join(shared, 'app.json'))
    os.symlink('data/uploads', os.path.join(shared, 'uploads'))
    return shared


def _wreck(site, shared):
    """What a failed deploy leaves: current switched, files changed, removed, added, links retargeted."""
    site.activate('2.0.0', verified=False)
    with open(os.path.join(shared, 'config', 'app.json'), 'w') as f:
        f.write('{"port": 9090}')
    with open(os.path.join(shared, 'data', 'notes.txt'), 'w') as f:
        f.write('overwritten')
    os.chmod(os.path.join(shared, 'config', 'conf.d', 'a.conf'), 0o600)
    os.unlink(os.path.join(shared, 'config', 'conf.d', 'b.conf'))
    for rel in ('data/uploads/u1.bin',):
        os.unlink(os.path.join(shared, rel))
    os.rmdir(os.path.join(shared, 'data', 'uploads'))
    os.makedirs(os.path.join(shared, 'cache', 'tmp'))
    with open(os.path.join(shared, 'cache', 'tmp', 'junk'), 'w') as f:
        f.write('junk')
    with open(os.path.join(shared, 'new.txt'), 'w') as f:
        f.write('new')
    os.unlink(os.path.join(shared, 'app.json'))
    os.symlink('config/conf.d/a.conf', os.path.join(shared, 'app.json'))
    os.unlink(os.path.join(shared, 'uploads'))
    os.symlink('/nowhere', os.path.join(shared, 'uploads'))


@pytest.mark.parametrize('point', RESTORE_POINTS)
def test_snapshot_restore_interrupted_at_each_point_then_rerun_completes(point, tmp_path):
    site = Site(tmp_path)
    site.activate('1.0.0')
    shared = _shared_tree(site.root)
    store_path = os.path.join(site.base, 'store')
    snapshot = SnapshotStore(store_path).capture([site.rr.current_link, shared])['id']
    before = tree_digest(site.root)
    _wreck(site, shared)
    assert tree_digest(site.root) != before

    crashed(run_child('restore', point, store=store_path, snapshot=snapshot))
    site.assert_current_complete({'1.0.0', '2.0.0'})

    completed(run_child('restore', store=store_path, snapshot=snapshot))
    assert SnapshotStore(store_path).verify(snapshot)['drift'] == []
    assert site.assert_current_complete({'1.0.0'}) == '1.0.0'
    after = dict((k, v) for k, v in tree_digest(site.root).items() if not k.startswith('.failsafe'))
    assert after == dict((k, v) for k, v in before.items() if not k.startswith('.failsafe'))


@pytest.mark.parametrize('point', CAPTURE_POINTS)
def test_snapshot_capture_interrupted_leaves_no_snapshot_and_the_tree_alone(point, tmp_path):
    site = Site(tmp_path)
    site.activate('1.0.0')
    shared = _shared_tree(site.root)
    store_path = os.path.join(site.base, 'store')
    before = tree_digest(site.root)
    crashed(run_child('capture', point, store=store_path, paths=[site.rr.current_link, shared]))
    # A half-taken snapshot is never listed (no manifest), so a rollback cannot restore from it.
    assert SnapshotStore(store_path).list_ids() == []
    assert tree_digest(site.root) == before
    completed(run_child('capture', store=store_path, paths=[site.rr.current_link, shared]))
    ids = SnapshotStore(store_path).list_ids()
    assert len(ids) == 1 and SnapshotStore(store_path).verify(ids[0])['drift'] == []


def test_every_crash_point_is_exercised():
    in_code = set()
    for name in FILES:
        with open(os.path.join(MODULE_UTILS, name)) as f:
            in_code.update(re.findall(r"_crash_point\('([^']+)'\)", f.read()))
    exercised = set(p.split('@')[0] for p in SWITCH_POINTS + ROLLBACK_POINTS + STAGE_POINTS + PRUNE_POINTS
                    + RESTORE_POINTS + CAPTURE_POINTS)
    assert in_code - NOT_COVERED_HERE - exercised == set()
    assert exercised - in_code == set()
