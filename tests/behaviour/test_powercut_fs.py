# -*- coding: utf-8 -*-
# Copyright: Contributors to failsafe.deploy
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The power-cut filesystem's own semantics (tests/powercut), on a real FUSE mount: what survives a cut is what
was fsynced (file data) and what was fsynced in its directory (names), nothing more; checked case by case and
against a model of those rules driven by seeded random operations."""

import errno
import os
import random
import sys

import pytest

from support import ROOT

if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from tests.powercut import PowerCutMount, ensure_prereqs, missing  # noqa: E402  pylint: disable=wrong-import-position
from tests.requires import require  # noqa: E402  pylint: disable=wrong-import-position


@pytest.fixture
def pc(tmp_path):
    """A mounted power-cut filesystem over an empty store, unmounted after the test, pass or fail."""
    ensure_prereqs()
    require(missing() is None, missing())
    mount = PowerCutMount(str(tmp_path / 'store'), str(tmp_path / 'mnt'))
    try:
        yield mount.mount()
    finally:
        mount.unmount()


def _write(path, data, fsync=False):
    with open(path, 'wb') as handle:
        handle.write(data)
        if fsync:
            handle.flush()
            os.fsync(handle.fileno())


def _fsync_dir(path):
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _read(path):
    with open(path, 'rb') as handle:
        return handle.read()


def test_write_without_fsync_is_lost_and_with_fsync_kept(pc):
    mnt = pc.mountpoint
    _write(os.path.join(mnt, 'kept'), b'synced', fsync=True)
    _write(os.path.join(mnt, 'lost'), b'not synced')
    _fsync_dir(mnt)
    _write(os.path.join(mnt, 'kept'), b'overwritten, not synced')   # in place: the synced data must come back
    _write(os.path.join(mnt, 'unnamed'), b'synced but its name is not', fsync=True)
    assert _read(os.path.join(mnt, 'lost')) == b'not synced'       # the live view has everything before the cut
    pc.power_cut()
    assert _read(os.path.join(mnt, 'kept')) == b'synced'
    assert _read(os.path.join(mnt, 'lost')) == b''                 # its name was durable, its data was not
    assert not os.path.exists(os.path.join(mnt, 'unnamed'))
    assert sorted(os.listdir(mnt)) == ['kept', 'lost']


def test_rename_without_directory_fsync_keeps_the_old_name(pc):
    mnt = pc.mountpoint
    _write(os.path.join(mnt, 'state.json'), b'old', fsync=True)
    _fsync_dir(mnt)
    _write(os.path.join(mnt, '.state.json.tmp'), b'new', fsync=True)
    os.replace(os.path.join(mnt, '.state.json.tmp'), os.path.join(mnt, 'state.json'))
    assert _read(os.path.join(mnt, 'state.json')) == b'new'
    pc.power_cut()
    assert sorted(os.listdir(mnt)) == ['state.json']
    assert _read(os.path.join(mnt, 'state.json')) == b'old'
    # the same with the directory's fsync: the new content under the old name
    _write(os.path.join(mnt, '.state.json.tmp'), b'new', fsync=True)
    os.replace(os.path.join(mnt, '.state.json.tmp'), os.path.join(mnt, 'state.json'))
    _fsync_dir(mnt)
    pc.power_cut()
    assert sorted(os.listdir(mnt)) == ['state.json']
    assert _read(os.path.join(mnt, 'state.json')) == b'new'


def test_unlink_symlink_and_subdirectory_need_their_directory_fsynced(pc):
    mnt = pc.mountpoint
    os.mkdir(os.path.join(mnt, 'releases'))
    _write(os.path.join(mnt, 'releases', 'app.py'), b'print(1)\n', fsync=True)
    _fsync_dir(os.path.join(mnt, 'releases'))
    os.symlink('releases', os.path.join(mnt, 'current'))
    # the parent never fsynced: the subdirectory (with its durable file) and the link are gone
    pc.power_cut()
    assert os.listdir(mnt) == []
    os.mkdir(os.path.join(mnt, 'releases'))
    _write(os.path.join(mnt, 'releases', 'app.py'), b'print(1)\n', fsync=True)
    _fsync_dir(os.path.join(mnt, 'releases'))
    os.symlink('releases', os.path.join(mnt, 'current'))
    os.chmod(os.path.join(mnt, 'releases', 'app.py'), 0o751)
    os.fsync(os.open(os.path.join(mnt, 'releases', 'app.py'), os.O_RDONLY))
    _fsync_dir(mnt)
    pc.power_cut()
    assert os.readlink(os.path.join(mnt, 'current')) == 'releases'
    assert _read(os.path.join(mnt, 'current', 'app.py')) == b'print(1)\n'
    assert oct(os.stat(os.path.join(mnt, 'releases', 'app.py')).st_mode & 0o7777) == oct(0o751)
    # an unlink not made durable comes back
    os.unlink(os.path.join(mnt, 'releases', 'app.py'))
    pc.power_cut()
    assert _read(os.path.join(mnt, 'releases', 'app.py')) == b'print(1)\n'


def test_cut_freezes_the_filesystem(pc):
    mnt = pc.mountpoint
    _write(os.path.join(mnt, 'f'), b'x', fsync=True)
    pc.cut()
    with pytest.raises(OSError) as info:
        _write(os.path.join(mnt, 'g'), b'y')
    assert info.value.errno == errno.EIO
    pc.unmount()
    assert os.listdir(pc.backing) == []   # f's name was never made durable
    pc.mount()


class Model:
    """The durability rules alone: inodes, live and durable directory entries, live and durable data."""

    def __init__(self, dirs, files=None):
        self.next = 0
        self.live = {d: {} for d in dirs}
        self.dur = {d: {} for d in dirs}
        self.data, self.dur_data = {}, {}
        for (d, name), content in (files or {}).items():
            ino = self._ino()
            self.live[d][name] = self.dur[d][name] = ino
            self.data[ino] = self.dur_data[ino] = content

    def _ino(self):
        self.next += 1
        return self.next

    def write(self, d, name, content):
        ino = self.live[d].get(name) or self._ino()
        self.live[d][name] = ino
        self.data[ino] = content

    def fsync(self, d, name):
        ino = self.live[d][name]
        self.dur_data[ino] = self.data[ino]

    def fsyncdir(self, d):
        self.dur[d] = dict(self.live[d])

    def rename(self, d1, a, d2, b):
        self.live[d2][b] = self.live[d1].pop(a)

    def unlink(self, d, name):
        del self.live[d][name]

    def after_cut(self):
        return {(d, name): self.dur_data.get(ino, b'') for d, entries in self.dur.items()
                for name, ino in entries.items()}


def _tree(mnt, dirs):
    return {(d, name): _read(os.path.join(mnt, d, name)) for d in dirs for name in os.listdir(os.path.join(mnt, d))}


@pytest.mark.parametrize('seed', [1, 2, 3])
def test_against_the_model(pc, seed):
    """Random writes, fsyncs, directory fsyncs, renames and unlinks across two directories, a cut after every
    batch: the tree after each cut is what the model says survives."""
    rng = random.Random(seed)
    mnt = pc.mountpoint
    dirs = ('a', 'b')
    for d in dirs:
        os.mkdir(os.path.join(mnt, d))
        _fsync_dir(os.path.join(mnt, d))
    _fsync_dir(mnt)
    model = Model(dirs)
    names = ['f%d' % i for i in range(5)]
    for batch in range(4):
        for step in range(60):
            d = rng.choice(dirs)
            present = sorted(model.live[d])
            op = rng.choice(['write', 'write', 'fsync', 'fsyncdir', 'rename', 'unlink'])
            if op == 'write' or not present and op != 'fsyncdir':
                name, content = rng.choice(names), ('%d.%d.%d' % (seed, batch, step)).encode() * rng.randint(0, 3)
                _write(os.path.join(mnt, d, name), content)
                model.write(d, name, content)
            elif op == 'fsync':
                name = rng.choice(present)
                fd = os.open(os.path.join(mnt, d, name), os.O_RDONLY)
                os.fsync(fd)
                os.close(fd)
                model.fsync(d, name)
            elif op == 'fsyncdir':
                _fsync_dir(os.path.join(mnt, d))
                model.fsyncdir(d)
            elif op == 'rename':
                name, d2, new = rng.choice(present), rng.choice(dirs), rng.choice(names)
                os.rename(os.path.join(mnt, d, name), os.path.join(mnt, d2, new))
                model.rename(d, name, d2, new)
            else:
                name = rng.choice(present)
                os.unlink(os.path.join(mnt, d, name))
                model.unlink(d, name)
        assert _tree(mnt, dirs) == {(d, n): model.data[i] for d in dirs for n, i in model.live[d].items()}
        expected = model.after_cut()
        pc.power_cut()
        assert _tree(mnt, dirs) == expected, 'batch %d' % batch
        model = Model(dirs, expected)
