# -*- coding: utf-8 -*-
# Copyright: Contributors to failsafe.deploy
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import os
import stat
import subprocess
import sys
import time

import pytest

from ansible_collections.failsafe.deploy.plugins.module_utils import _atomic
from ansible_collections.failsafe.deploy.plugins.module_utils._atomic import (
    atomic_write_bytes, read_json, replace_symlink, write_json_atomic, fsync_dir,
)


def _leftovers(directory, keep):
    return sorted(n for n in os.listdir(directory) if n not in keep)


def test_given_no_file_when_write_json_atomic_then_content_and_mode_and_no_temp(tmp_path):
    path = str(tmp_path / 'sub' / 'state.json')
    write_json_atomic(path, {'b': 1, 'a': [1, 2]})
    assert read_json(path) == {'b': 1, 'a': [1, 2]}
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert _leftovers(str(tmp_path / 'sub'), {'state.json'}) == []


@pytest.mark.parametrize('mode', [0o600, 0o644, 0o400])
def test_atomic_write_bytes_sets_mode_and_replaces(tmp_path, mode):
    path = str(tmp_path / 'f')
    atomic_write_bytes(path, b'old', mode=0o644)
    atomic_write_bytes(path, b'new' * 1000, mode=mode)
    with open(path, 'rb') as f:
        assert f.read() == b'new' * 1000
    assert stat.S_IMODE(os.stat(path).st_mode) == mode
    assert os.listdir(str(tmp_path)) == ['f']


def test_read_json_missing_gives_default_and_corrupt_names_path(tmp_path):
    assert read_json(str(tmp_path / 'nope.json')) is None
    assert read_json(str(tmp_path / 'nope.json'), default={}) == {}
    bad = tmp_path / 'bad.json'
    bad.write_text('{not json')
    with pytest.raises(ValueError) as exc:
        read_json(str(bad))
    assert str(bad) in str(exc.value)


def test_fsync_dir_accepts_a_directory(tmp_path):
    fsync_dir(str(tmp_path))


def test_replace_symlink_creates_switches_and_is_idempotent(tmp_path):
    (tmp_path / 'releases' / 'a').mkdir(parents=True)
    (tmp_path / 'releases' / 'b').mkdir()
    link = str(tmp_path / 'current')
    assert replace_symlink(link, 'releases/a') is True
    assert os.readlink(link) == 'releases/a'
    assert replace_symlink(link, 'releases/a') is False
    assert replace_symlink(link, 'releases/b') is True
    assert os.readlink(link) == 'releases/b'
    assert sorted(os.listdir(str(tmp_path))) == ['current', 'releases']


def test_replace_symlink_refuses_a_real_directory(tmp_path):
    (tmp_path / 'current').mkdir()
    with pytest.raises(OSError):
        replace_symlink(str(tmp_path / 'current'), 'releases/a')
    assert os.path.isdir(str(tmp_path / 'current')) and not os.path.islink(str(tmp_path / 'current'))
    assert sorted(os.listdir(str(tmp_path))) == ['current']


def test_crash_point_is_inert_without_env(monkeypatch):
    monkeypatch.delenv(_atomic.CRASH_ENV, raising=False)
    _atomic._crash_point('symlink.replaced')  # returns: the process is still alive


def test_crash_point_holds_while_the_marker_exists_then_dies(tmp_path):
    marker = str(tmp_path / 'held')
    code = ('from ansible_collections.failsafe.deploy.plugins.module_utils._atomic import _crash_point; '
            '_crash_point("symlink.replaced"); print("not reached")')
    env = dict(os.environ, FAILSAFE_CRASH_AT='symlink.replaced', FAILSAFE_CRASH_HOLD=marker,
               PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    proc = subprocess.Popen([sys.executable, '-c', code], env=env, stdout=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while not (os.path.exists(marker) and os.path.getsize(marker)) and time.monotonic() < deadline:
            time.sleep(0.02)
        with open(marker) as f:
            assert int(f.read()) == proc.pid
        time.sleep(0.2)
        assert proc.poll() is None, 'the crash point did not hold'
        os.unlink(marker)
        assert proc.wait(timeout=30) == 137
        assert proc.stdout.read() == b''
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stdout.close()


@pytest.mark.parametrize('point,expected', [
    ('symlink.tmp-created', 'releases/a'),   # died before the swap: old target still in place
    ('symlink.replaced', 'releases/b'),      # died after the swap: new target in place
])
def test_crash_mid_replace_leaves_old_or_new_link_never_none(tmp_path, point, expected):
    link = str(tmp_path / 'current')
    os.symlink('releases/a', link)
    code = ('from ansible_collections.failsafe.deploy.plugins.module_utils._atomic import replace_symlink; '
            'replace_symlink(%r, "releases/b")' % link)
    env = dict(os.environ, FAILSAFE_CRASH_AT=point, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    rc = subprocess.call([sys.executable, '-c', code], env=env)
    assert rc == 137
    assert os.readlink(link) == expected
