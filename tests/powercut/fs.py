# -*- coding: utf-8 -*-
# Copyright: Contributors to failsafe.deploy
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A power-cut filesystem: a FUSE pass-through that forgets, at a cut, everything that was not made durable.

Every operation goes straight through to a backing folder (``<store>/live``): that is the page cache, what the
processes above see. Beside it the filesystem keeps the durable image, what a disk would hold after losing power:

- a file's data (and its mode and owner) become durable when the file is fsynced (fsync or fdatasync);
- a directory's entries (names created, renamed, unlinked, links and subdirectories) become durable when that
  directory is fsynced; a new file whose name became durable before its data did comes back empty, a new
  subdirectory comes back empty until it is fsynced itself; a rename whose directories were not fsynced comes back
  under its old name.

Everything is durable at mount. Nothing is flushed in the background: the model is stricter than a kernel that
writes back dirty pages after half a minute, so a missing fsync is lost every time, not once in a while.

A cut (the file ``<store>/cut`` appears) freezes the filesystem (every operation then fails with EIO, as on a machine
without power), replaces ``<store>/live`` with the durable image and writes ``<store>/cut-done``. Unmount it then and
mount it again over the same store: the new mount starts from what was durable.

    python -m tests.powercut.fs STORE MOUNTPOINT      (foreground; tests/powercut/__init__.py drives it)
"""

import errno
import os
import shutil
import stat
import sys
import threading
import time

import mfusepy

POLL = 0.02
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_TRUNC | os.O_APPEND


class Node:  # pylint: disable=too-few-public-methods
    """A durable inode: its kind ('f', 'd', 'l'), metadata and content (a dir's entries, a link's target, a file's
    data: the path of its durable copy, '' for empty, None for the backing file as it was at mount)."""

    def __init__(self, kind, st, target=None, data=''):
        self.kind = kind
        self.mode = stat.S_IMODE(st.st_mode)
        self.uid = st.st_uid
        self.gid = st.st_gid
        self.entries = {} if kind == 'd' else None
        self.target = target
        self.data = data


def _kind(st):
    if stat.S_ISDIR(st.st_mode):
        return 'd'
    if stat.S_ISLNK(st.st_mode):
        return 'l'
    return 'f'


class PowerCutFS(mfusepy.Operations):
    """The pass-through with its durable image (see the module docstring)."""

    use_ns = True

    def __init__(self, store):
        self.store = os.path.abspath(store)
        self.live = os.path.join(self.store, 'live')
        self.side = os.path.join(self.store, 'durable')
        self._mutex = threading.RLock()
        self.dead = False
        self.counter = 0
        self.ids = {}      # backing inode number -> node id
        self.dur = {}      # node id -> durable Node
        self.pristine = set()  # file ids whose durable data is the backing file as it was at mount
        shutil.rmtree(self.side, ignore_errors=True)
        os.makedirs(self.side)
        os.makedirs(self.live, exist_ok=True)
        self._scan()

    # ------------------------------------------------------------------------------------------ bookkeeping
    def _scan(self):
        """Everything in the backing folder is durable at mount."""
        def visit(path):
            st = os.lstat(path)
            nid = 'm%d' % st.st_ino
            self.ids[st.st_ino] = nid
            kind = _kind(st)
            if nid in self.dur:   # a hard link seen again
                return nid
            node = Node(kind, st, target=os.readlink(path) if kind == 'l' else None,
                        data=None if kind == 'f' else '')
            self.dur[nid] = node
            if kind == 'f':
                self.pristine.add(nid)
            elif kind == 'd':
                for name in os.listdir(path):
                    node.entries[name] = visit(os.path.join(path, name))
            return nid
        self.root = visit(self.live)

    def _p(self, path):
        return os.path.join(self.live, path.lstrip('/'))

    def _check(self):
        if self.dead:
            raise mfusepy.FuseOSError(errno.EIO)

    def _id(self, real, st=None):
        st = st or os.lstat(real)
        nid = self.ids.get(st.st_ino)
        if nid is None:
            nid = self._new_id(st.st_ino)
        return nid

    def _new_id(self, ino):
        self.counter += 1
        nid = 'n%d' % self.counter
        self.ids[ino] = nid
        return nid

    def _preserve(self, real):
        """Before the backing file ``real`` changes or goes: keep its at-mount data if that is still the durable
        one."""
        try:
            st = os.lstat(real)
        except FileNotFoundError:
            return
        if not stat.S_ISREG(st.st_mode):
            return
        nid = self.ids.get(st.st_ino)
        if nid in self.pristine:
            copy = os.path.join(self.side, nid)
            shutil.copyfile(real, copy)
            self.dur[nid].data = copy
            self.pristine.discard(nid)

    # ------------------------------------------------------------------------------------------ durability
    def fsync(self, path, datasync, fh):
        with self._mutex:
            self._check()
            st = os.fstat(fh)
            nid = self._id(None, st)
            copy = os.path.join(self.side, nid)
            tmp = copy + '.tmp'
            with open(tmp, 'wb') as out:
                offset = 0
                while True:
                    chunk = os.pread(fh, 1 << 20, offset)
                    if not chunk:
                        break
                    out.write(chunk)
                    offset += len(chunk)
            os.replace(tmp, copy)
            node = self.dur.get(nid) or Node('f', st)
            node.mode, node.uid, node.gid = stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid
            node.data = copy
            self.dur[nid] = node
            self.pristine.discard(nid)
            return 0

    def fsyncdir(self, path, datasync, fh):
        with self._mutex:
            self._check()
            real = self._p(path)
            st = os.lstat(real)
            nid = self._id(real, st)
            node = self.dur.get(nid) or Node('d', st)
            node.mode, node.uid, node.gid = stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid
            entries = {}
            for name in os.listdir(real):
                child = os.path.join(real, name)
                cst = os.lstat(child)
                cid = self._id(child, cst)
                entries[name] = cid
                if cid not in self.dur:
                    kind = _kind(cst)
                    self.dur[cid] = Node(kind, cst, target=os.readlink(child) if kind == 'l' else None)
            node.entries = entries
            self.dur[nid] = node
            return 0

    # ------------------------------------------------------------------------------------------ the cut
    def cut(self):
        """Freeze, and put the durable image in place of the backing folder."""
        with self._mutex:
            self.dead = True
            where = {}
            for top, dirs, files in os.walk(self.live):
                for name in files + dirs:
                    real = os.path.join(top, name)
                    try:
                        where.setdefault(os.lstat(real).st_ino, real)
                    except OSError:
                        pass
            live_ino = {nid: ino for ino, nid in self.ids.items()}
            image = os.path.join(self.store, 'image')
            shutil.rmtree(image, ignore_errors=True)
            made = {}

            def build(nid, dest, depth):
                node = self.dur[nid]
                if node.kind == 'd':
                    os.mkdir(dest)
                    if depth < 64:
                        for name, cid in sorted(node.entries.items()):
                            if cid in self.dur:
                                build(cid, os.path.join(dest, name), depth + 1)
                elif node.kind == 'l':
                    os.symlink(node.target, dest)
                    os.lchown(dest, node.uid, node.gid)
                    return
                elif nid in made:
                    os.link(made[nid], dest)
                    return
                else:
                    source = node.data
                    if source is None:   # untouched since mount: still the backing file
                        source = where.get(live_ino.get(nid))
                    if source:
                        shutil.copyfile(source, dest)
                    else:
                        open(dest, 'wb').close()  # pylint: disable=consider-using-with
                    made[nid] = dest
                os.chown(dest, node.uid, node.gid)
                os.chmod(dest, node.mode)

            build(self.root, image, 0)
            trash = os.path.join(self.store, 'trash')
            shutil.rmtree(trash, ignore_errors=True)
            os.rename(self.live, trash)
            os.rename(image, self.live)
            shutil.rmtree(trash, ignore_errors=True)
            shutil.rmtree(self.side, ignore_errors=True)
            with open(os.path.join(self.store, 'cut-done'), 'w', encoding='ascii') as handle:
                handle.write('%d\n' % len(self.dur))

    def watch(self):
        control = os.path.join(self.store, 'cut')
        while not self.dead:
            if os.path.exists(control):
                try:
                    self.cut()
                except Exception as e:  # pylint: disable=broad-except
                    with open(os.path.join(self.store, 'cut-failed'), 'w', encoding='utf-8') as handle:
                        handle.write('%r\n' % (e,))
                    self.dead = True
                return
            time.sleep(POLL)

    # ------------------------------------------------------------------------------------------ pass-through
    def getattr(self, path, fh=None):
        with self._mutex:
            self._check()
            st = os.fstat(fh) if fh is not None else os.lstat(self._p(path))
            return {key: getattr(st, key) for key in (
                'st_mode', 'st_nlink', 'st_uid', 'st_gid', 'st_size', 'st_ino', 'st_atime_ns', 'st_mtime_ns',
                'st_ctime_ns', 'st_blocks')}

    def access(self, path, amode):
        with self._mutex:
            self._check()
            if not os.access(self._p(path), amode, follow_symlinks=False):
                raise mfusepy.FuseOSError(errno.EACCES)
            return 0

    def readdir(self, path, fh):
        with self._mutex:
            self._check()
            # with use_ino an entry needs its inode number (readdir hides d_ino 0)
            out = []
            with os.scandir(self._p(path)) as entries:
                for entry in entries:
                    st = entry.stat(follow_symlinks=False)
                    out.append((entry.name, {'st_mode': st.st_mode, 'st_ino': st.st_ino}, 0))
            return out

    def readlink(self, path):
        with self._mutex:
            self._check()
            return os.readlink(self._p(path))

    def statfs(self, path):
        with self._mutex:
            self._check()
            sv = os.statvfs(self.live)
            return {key: getattr(sv, key) for key in (
                'f_bavail', 'f_bfree', 'f_blocks', 'f_bsize', 'f_favail', 'f_ffree', 'f_files', 'f_flag',
                'f_frsize', 'f_namemax')}

    def chmod(self, path, mode):
        with self._mutex:
            self._check()
            os.chmod(self._p(path), mode)
            return 0

    def chown(self, path, uid, gid):
        with self._mutex:
            self._check()
            os.lchown(self._p(path), uid, gid)
            return 0

    def utimens(self, path, times=None):
        with self._mutex:
            self._check()
            os.utime(self._p(path), ns=times, follow_symlinks=False)
            return 0

    def mkdir(self, path, mode):
        with self._mutex:
            self._check()
            real = self._p(path)
            os.mkdir(real, mode)
            self._new_id(os.lstat(real).st_ino)
            return 0

    def rmdir(self, path):
        with self._mutex:
            self._check()
            os.rmdir(self._p(path))
            return 0

    def mknod(self, path, mode, dev):
        with self._mutex:
            self._check()
            real = self._p(path)
            os.mknod(real, mode, dev)
            self._new_id(os.lstat(real).st_ino)
            return 0

    def symlink(self, target, source):
        with self._mutex:
            self._check()
            real = self._p(target)
            os.symlink(source, real)
            self._new_id(os.lstat(real).st_ino)
            return 0

    def link(self, target, source):
        with self._mutex:
            self._check()
            os.link(self._p(source), self._p(target))
            return 0

    def unlink(self, path):
        with self._mutex:
            self._check()
            real = self._p(path)
            self._preserve(real)
            os.unlink(real)
            return 0

    def rename(self, old, new):
        with self._mutex:
            self._check()
            self._preserve(self._p(new))
            os.rename(self._p(old), self._p(new))
            return 0

    def create(self, path, mode, fi=None):
        with self._mutex:
            self._check()
            real = self._p(path)
            fd = os.open(real, os.O_RDWR | os.O_CREAT, mode)
            self._new_id(os.fstat(fd).st_ino)
            return fd

    def open(self, path, flags):
        with self._mutex:
            self._check()
            real = self._p(path)
            if flags & WRITE_FLAGS:
                self._preserve(real)
            return os.open(real, flags & ~(os.O_CREAT | os.O_EXCL))

    def read(self, path, size, offset, fh):
        with self._mutex:
            self._check()
            return os.pread(fh, size, offset)

    def write(self, path, data, offset, fh):
        with self._mutex:
            self._check()
            return os.pwrite(fh, data, offset)

    def truncate(self, path, length, fh=None):
        with self._mutex:
            self._check()
            if fh is not None:
                os.ftruncate(fh, length)
            else:
                real = self._p(path)
                self._preserve(real)
                os.truncate(real, length)
            return 0

    def flush(self, path, fh):
        with self._mutex:
            self._check()
            return 0

    def release(self, path, fh):
        with self._mutex:
            os.close(fh)
            return 0

    def opendir(self, path):
        with self._mutex:
            self._check()
            return 0

    def releasedir(self, path, fh):
        return 0


def main(argv):
    store, mountpoint = argv[1], argv[2]
    fs = PowerCutFS(store)
    threading.Thread(target=fs.watch, daemon=True).start()
    mfusepy.FUSE(fs, mountpoint, foreground=True, nothreads=False, allow_other=True, use_ino=True,
                 fsname='powercut', default_permissions=True)


if __name__ == '__main__':
    main(sys.argv)
