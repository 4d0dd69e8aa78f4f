# -*- coding: utf-8 -*-
# Copyright: Contributors to failsafe.deploy
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""failsafe.deploy.release driven through main(), as Ansible runs it."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import io
import json
import os
import stat
import tarfile

import pytest

from ansible_collections.failsafe.deploy.plugins.modules import release
from ansible_collections.failsafe.deploy.tests.unit.plugins.modules.utils import run_module


def run(args, check=False, diff=False):
    """Run the module; returns the result dict (with failed=True on failure)."""
    return run_module(release, args, check=check, diff=diff)


def ok(args, **kw):
    res = run(args, **kw)
    assert not res.get('failed'), res
    return res


def tree(top):
    out = {}
    for dirpath, dirnames, filenames in os.walk(top):
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            st = os.lstat(full)
            if stat.S_ISLNK(st.st_mode):
                out[full] = ('link', os.readlink(full))
            elif stat.S_ISREG(st.st_mode):
                with open(full, 'rb') as f:
                    out[full] = ('file', stat.S_IMODE(st.st_mode), f.read())
            else:
                out[full] = ('dir', stat.S_IMODE(st.st_mode))
    return out


def tarball(path, files):
    with tarfile.open(str(path), 'w:gz') as tf:
        for name, content in files.items():
            if isinstance(content, tuple):
                info = tarfile.TarInfo(name)
                info.type = tarfile.SYMTYPE
                info.linkname = content[1]
                tf.addfile(info)
                continue
            data = content.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tf.addfile(info, io.BytesIO(data))
    return str(path)


@pytest.fixture
def root(tmp_path):
    return str(tmp_path / 'app')


@pytest.fixture
def archives(tmp_path):
    return dict((v, tarball(tmp_path / ('%s.tgz' % v), {'app.txt': 'release %s\n' % v, 'log/.keep': ''}))
                for v in ('v1', 'v2', 'v3'))


def stage(root, archives, rid, **kw):
    return ok(dict(root=root, id=rid, state='staged', src=archives[rid], shared=['log']), **kw)


def deploy(root, archives, rid, verify=True):
    stage(root, archives, rid)
    ok(dict(root=root, id=rid, state='active'))
    if verify:
        ok(dict(root=root, id=rid, state='verified'))


def test_given_archive_when_staged_through_main_then_release_on_disk_and_second_run_unchanged(root, archives):
    res = stage(root, archives, 'v1')
    assert res['changed'] is True and res['path'] == os.path.join(root, 'releases', 'v1')
    with open(os.path.join(root, 'releases', 'v1', 'app.txt')) as f:
        assert f.read() == 'release v1\n'
    assert os.readlink(os.path.join(root, 'releases', 'v1', 'log')) == '../../shared/log'
    assert stage(root, archives, 'v1')['changed'] is False


def test_full_cycle_switch_is_atomic_relative_symlink_and_idempotent(root, archives):
    deploy(root, archives, 'v1')
    stage(root, archives, 'v2')
    res = ok(dict(root=root, id='v2', state='active'), diff=True)
    assert res['changed'] and res['previous'] == 'v1' and res['current'] == 'v2'
    assert os.readlink(os.path.join(root, 'current')) == 'releases/v2'
    assert res['diff']['before']['current'] == 'v1' and res['diff']['after']['current'] == 'v2'
    assert ok(dict(root=root, id='v2', state='active'))['changed'] is False
    assert ok(dict(root=root, id='v2', state='verified'))['changed'] is True
    assert ok(dict(root=root, id='v2', state='verified'))['changed'] is False


def test_given_failed_release_when_rolled_back_through_main_then_last_verified_is_current(root, archives):
    deploy(root, archives, 'v1')
    deploy(root, archives, 'v2', verify=False)
    res = ok(dict(root=root, id='v2', state='rolled_back', reason='health check failed'))
    assert res['target'] == 'v1' and res['current'] == 'v1' and res['previous'] == 'v2'
    assert os.readlink(os.path.join(root, 'current')) == 'releases/v1'
    assert res['ledger']['releases']['v2']['state'] == 'failed'
    assert ok(dict(root=root, id='v2', state='rolled_back'))['changed'] is False


def test_given_quarantined_release_when_staged_then_fail_json_says_so_and_force_works(root, archives):
    deploy(root, archives, 'v1')
    ok(dict(root=root, id='v1', state='failed', reason='bad migration'))
    res = run(dict(root=root, id='v1', state='staged', src=archives['v1']))
    assert res['failed'] and 'quarantined' in res['msg'] and 'v1' in res['msg'] and 'force=true' in res['msg']
    assert res['quarantined'] is True
    res = ok(dict(root=root, id='v1', state='staged', src=archives['v1'], force=True))
    assert res['changed'] and res['ledger']['releases']['v1']['state'] == 'staged'


def test_given_traversal_archive_when_staged_through_main_then_fails_and_nothing_written(tmp_path, root):
    evil = tarball(tmp_path / 'evil.tgz', {'ok': 'x', '../../escaped': 'pwned'})
    res = run(dict(root=root, id='evil', state='staged', src=evil))
    assert res['failed'] and 'escapes' in res['msg'] and res['member'] == '../../escaped'
    assert not os.path.exists(os.path.join(root, 'releases', 'evil'))
    assert not os.path.exists(str(tmp_path / 'escaped'))


def test_pruned_through_main_keeps_current_and_last_verified(root, archives):
    for rid in ('v1', 'v2', 'v3'):
        deploy(root, archives, rid)
    res = ok(dict(root=root, state='pruned', keep=1))
    assert res['removed'] == ['v1', 'v2']
    assert os.listdir(os.path.join(root, 'releases')) == ['v3']


@pytest.mark.parametrize('args, needle', [
    pytest.param(dict(state='staged', id='v1'), 'src', id='staged-needs-src'),
    pytest.param(dict(state='active'), 'id', id='active-needs-id'),
    pytest.param(dict(state='active', id='../etc'), 'invalid release id', id='traversal-id'),
    pytest.param(dict(state='active', id='..'), 'invalid release id', id='dotdot-id'),
    pytest.param(dict(state='active', id=''), 'id', id='empty-id'),
    pytest.param(dict(state='staged', id='v9', src='/nonexistent/x.tgz'), 'does not exist', id='missing-src'),
])
def test_given_bad_arguments_then_fail_json_names_the_problem(root, args, needle):
    res = run(dict(root=root, **args))
    assert res['failed'] and needle in res['msg']


@pytest.mark.parametrize('state, extra', [
    ('staged', dict(id='v3')),
    ('active', dict(id='v2')),
    ('verified', dict(id='v2')),
    ('failed', dict(id='v1', reason='r')),
    ('rolled_back', dict(id='v2')),
    ('absent', dict(id='v2')),
    ('pruned', dict(keep=0)),
    ('query', dict()),
])
def test_given_check_mode_when_any_state_runs_then_nothing_on_disk_changes(tmp_path, root, archives, state, extra):
    deploy(root, archives, 'v1')
    deploy(root, archives, 'v2', verify=False)
    ok(dict(root=root, id='v1', state='active'))
    stage(root, archives, 'v2')
    before = tree(str(tmp_path))
    args = dict(root=root, state=state, **extra)
    if state == 'staged':
        args.update(src=archives['v3'], shared=['log'])
    res = ok(args, check=True, diff=True)
    assert tree(str(tmp_path)) == before
    assert res['changed'] is (state != 'query')
    if state != 'query':
        assert 'before' in res['diff'] and 'after' in res['diff']


def test_diff_is_dropped_without_diff_mode(root, archives):
    res = stage(root, archives, 'v1')
    assert 'diff' not in res
    res = stage(root, archives, 'v2', diff=True)
    assert res['diff']['before']['release'] is None and res['diff']['after']['release']['state'] == 'staged'


def test_query_through_main_on_missing_root(tmp_path):
    res = ok(dict(root=str(tmp_path / 'none')))
    assert res['changed'] is False and res['current'] is None and res['releases'] == {}
    assert json.dumps(res)  # plain JSON-serialisable result


def test_given_max_size_with_a_unit_when_the_archive_declares_more_then_fail_json_names_both_and_nothing_is_written(
        tmp_path, root):
    from ansible_collections.failsafe.deploy.tests.unit.plugins.module_utils.test_release import MIB, make_bomb
    two = make_bomb(tmp_path / 'two.tgz', 2 * MIB)
    res = run(dict(root=root, id='v1', state='staged', src=two, max_size='1M'))
    assert res['failed'] and 'max_size is 1.0 MiB (1048576 bytes)' in res['msg'], res
    assert 'would write 2.0 MiB (%d bytes) into %s' % (res['release_size'], os.path.join(root, 'releases')) in res['msg']
    assert res['release_size'] > 2 * MIB and res['src'] == two
    assert not os.path.exists(root)
    res = ok(dict(root=root, id='v1', state='staged', src=two, max_size='3M'))
    assert res['extracted'] and os.path.getsize(os.path.join(root, 'releases', 'v1', 'data', 'zeros.bin')) == 2 * MIB
