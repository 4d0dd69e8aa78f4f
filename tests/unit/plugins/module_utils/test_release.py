# -*- coding: utf-8 -*-
# Copyright: Contributors to failsafe.deploy
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The release ledger: staging, the current switch, rollback target selection, retention and quarantine."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import io
import json
import os
import stat
import subprocess
import tarfile

import pytest

from ansible_collections.failsafe.deploy.plugins.module_utils import _release as rel
from ansible_collections.failsafe.deploy.plugins.module_utils._release import (
    ReleaseError,
    ReleaseRoot,
    ensure_absent,
    ensure_active,
    ensure_failed,
    ensure_pruned,
    ensure_query,
    ensure_rolled_back,
    ensure_staged,
    ensure_verified,
    plan_prune,
    select_rollback_target,
)
from ansible_collections.failsafe.deploy.tests.requires import require, require_root


# --- helpers ---------------------------------------------------------------------------------------------------

def make_tree(top, files):
    """files: {relpath: content str | ('link', target) | ('mode', content, mode)}"""
    for rel_path, spec in files.items():
        path = os.path.join(str(top), rel_path)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if isinstance(spec, tuple) and spec[0] == 'link':
            os.symlink(spec[1], path)
        elif isinstance(spec, tuple) and spec[0] == 'mode':
            with open(path, 'w') as f:
                f.write(spec[1])
            os.chmod(path, spec[2])
        else:
            with open(path, 'w') as f:
                f.write(spec)
    return str(top)


def make_tarball(path, files, arc_prefix='.'):
    """Build a .tar.gz whose members come from files {name: content | ('link', target) | ('hardlink', target) |
    ('mode', content, mode) | ('dir', mode)} with the exact member names given (no sanitising)."""
    with tarfile.open(str(path), 'w:gz') as tf:
        for name, spec in files.items():
            info = tarfile.TarInfo(name)
            info.mtime = 1700000000
            if isinstance(spec, tuple) and spec[0] == 'link':
                info.type = tarfile.SYMTYPE
                info.linkname = spec[1]
                tf.addfile(info)
            elif isinstance(spec, tuple) and spec[0] == 'hardlink':
                info.type = tarfile.LNKTYPE
                info.linkname = spec[1]
                tf.addfile(info)
            elif isinstance(spec, tuple) and spec[0] == 'dir':
                info.type = tarfile.DIRTYPE
                info.mode = spec[1]
                tf.addfile(info)
            elif isinstance(spec, tuple) and spec[0] == 'fifo':
                info.type = tarfile.FIFOTYPE
                tf.addfile(info)
            else:
                mode = 0o644
                if isinstance(spec, tuple):
                    spec, mode = spec[1], spec[2]
                data = spec.encode('utf-8')
                info.size = len(data)
                info.mode = mode
                tf.addfile(info, io.BytesIO(data))
    return str(path)


def read(path):
    with open(path) as f:
        return f.read()


def ledger_of(root):
    with open(os.path.join(root, '.failsafe', 'ledger.json')) as f:
        return json.load(f)


def snapshot_tree(top):
    """Everything observable about a tree: for check-mode 'nothing changed' assertions."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(top):
        for name in sorted(dirnames + filenames):
            full = os.path.join(dirpath, name)
            st = os.lstat(full)
            if stat.S_ISLNK(st.st_mode):
                out[full] = ('link', os.readlink(full))
            elif stat.S_ISREG(st.st_mode):
                out[full] = ('file', stat.S_IMODE(st.st_mode), read(full))
            else:
                out[full] = ('dir', stat.S_IMODE(st.st_mode))
    return out


@pytest.fixture
def root(tmp_path):
    return str(tmp_path / 'app')


@pytest.fixture
def rr(root):
    return ReleaseRoot(root)


@pytest.fixture
def archive(tmp_path):
    return make_tarball(tmp_path / 'r1.tar.gz', {
        './': ('dir', 0o755),
        './bin/': ('dir', 0o755),
        './bin/run': ('mode', '#!/bin/sh\necho run\n', 0o755),
        './config.ini': 'a=1\n',
        './log/placeholder': 'shipped with the release\n',
        './alias': ('link', 'config.ini'),
    })


def stage_dir(tmp_path, rr, release_id, content='v', **kw):
    src = make_tree(tmp_path / ('src-' + release_id), {'app.txt': '%s %s\n' % (content, release_id)})
    return ensure_staged(rr, release_id, src, **kw)


def deploy(tmp_path, rr, release_id, verify=True):
    stage_dir(tmp_path, rr, release_id)
    ensure_active(rr, release_id)
    if verify:
        ensure_verified(rr, release_id)


# --- pure selection logic ----------------------------------------------------------------------------------------

def entry(state, verified=None, **kw):
    e = {'state': state, 'history': []}
    if verified is not None:
        e['verified'] = verified
    e.update(kw)
    return e


@pytest.mark.parametrize('releases, exclude, expected', [
    pytest.param({'a': entry('verified', 10), 'b': entry('verified', 20), 'c': entry('failed', 30)},
                 ('c',), 'b', id='skips-the-failed-one-picks-newest-verified'),
    pytest.param({'a': entry('verified', 10), 'b': entry('staged'), 'c': entry('active'), 'd': entry('failed', 5)},
                 ('d',), 'a', id='skips-staged-and-active-never-verified'),
    pytest.param({'old': entry('verified', 300), 'new-name': entry('verified', 100)},
                 (), 'old', id='by-verified-time-not-by-name-or-order'),
    pytest.param({'a': entry('failed', 50), 'b': entry('staged')}, (), None, id='none-available'),
    pytest.param({'a': entry('verified', 50)}, ('a',), None, id='only-verified-is-the-excluded-one'),
    pytest.param({'a': entry('verified', 10), 'b': entry('active', 40)}, (), 'b',
                 id='re-activated-verified-release-still-counts'),
    pytest.param({'a': entry('failed', 40, removed=1), 'b': entry('verified', 10, removed=2)}, (), None,
                 id='removed-releases-never-chosen'),
])
def test_given_a_ledger_when_selecting_rollback_target_then_last_verified_non_failed(releases, exclude, expected):
    assert select_rollback_target({'releases': releases}, exclude=exclude) == expected


def test_given_newest_verified_missing_on_disk_when_selecting_then_it_is_skipped():
    ledger = {'releases': {'a': entry('verified', 10), 'b': entry('verified', 20)}}
    assert select_rollback_target(ledger, exists=lambda rid: rid != 'b') == 'a'


@pytest.mark.parametrize('keep, current, last_verified, prune_failed, expected_removed', [
    pytest.param(2, 'v5', 'v5', False, ['s1', 'v1', 'v2', 'v3'], id='keeps-2-newest-verified-and-failed'),
    pytest.param(0, 'v2', 'v4', False, ['s1', 'v1', 'v3', 'v5'], id='never-current-nor-last-verified'),
    pytest.param(10, 'v5', 'v5', False, ['s1'], id='keep-more-than-exist-removes-only-abandoned-staging'),
    pytest.param(2, 'v5', 'v5', True, ['f1', 's1', 'v1', 'v2', 'v3'], id='prune-failed-removes-failed-too'),
])
def test_given_releases_when_planning_retention_then_protected_ones_stay(keep, current, last_verified,
                                                                         prune_failed, expected_removed):
    ledger = {'last_verified': last_verified, 'releases': {
        'v1': entry('verified', 1), 'v2': entry('verified', 2), 'v3': entry('verified', 3),
        'v4': entry('verified', 4), 'v5': entry('verified', 5), 'f1': entry('failed', 6), 's1': entry('staged'),
    }}
    removed, kept = plan_prune(ledger, keep, current, prune_failed=prune_failed)
    assert removed == expected_removed
    assert current in kept and last_verified in kept
    if not prune_failed:
        assert kept['f1'] == 'failed (quarantined)'


@pytest.mark.parametrize('bad', ['', '.', '..', 'a/b', '../x', 'a b', 'rel$', '/abs'])
def test_given_invalid_release_id_when_validating_then_refused(bad):
    with pytest.raises(ReleaseError, match='invalid release id'):
        rel.validate_release_id(bad)


@pytest.mark.parametrize('good', ['1.4.2', 'v1_2-rc.3', '..a', 'a..', '20260101T120000Z'])
def test_given_valid_release_id_when_validating_then_accepted(good):
    assert rel.validate_release_id(good) == good


@pytest.mark.parametrize('p, target', [('log', '../../shared/log'), ('public/uploads', '../../../shared/public/uploads'),
                                       ('a/b/c/', '../../../../shared/a/b/c')])
def test_shared_link_targets_are_relative_to_the_link(p, target):
    assert rel.shared_link_target(rel.validate_shared_path(p)) == target


@pytest.mark.parametrize('bad', ['/etc', '../x', 'a/../b', './a', '', 'a//b'])
def test_given_bad_shared_path_then_refused(bad):
    with pytest.raises(ReleaseError):
        rel.validate_shared_path(bad)


# --- staging -----------------------------------------------------------------------------------------------------

def test_given_targz_when_staged_then_release_extracted_with_modes_and_shared_links(root, rr, archive):
    res = ensure_staged(rr, 'r1', archive, shared=['log', 'public/uploads'])
    release = os.path.join(root, 'releases', 'r1')
    assert res['changed'] and res['extracted']
    assert read(os.path.join(release, 'config.ini')) == 'a=1\n'
    assert stat.S_IMODE(os.stat(os.path.join(release, 'bin', 'run')).st_mode) == 0o755
    assert stat.S_IMODE(os.stat(os.path.join(release, 'config.ini')).st_mode) == 0o644
    assert os.readlink(os.path.join(release, 'alias')) == 'config.ini'
    # the shipped log/ dir was replaced by the shared link, and the shared dirs were created
    assert os.readlink(os.path.join(release, 'log')) == '../../shared/log'
    assert os.readlink(os.path.join(release, 'public', 'uploads')) == '../../../shared/public/uploads'
    assert os.path.isdir(os.path.join(root, 'shared', 'log'))
    assert os.path.isdir(os.path.join(root, 'shared', 'public', 'uploads'))
    assert os.path.realpath(os.path.join(release, 'log')) == os.path.realpath(os.path.join(root, 'shared', 'log'))
    # no temp dirs left beside it
    assert os.listdir(os.path.join(root, 'releases')) == ['r1']
    entry_ = ledger_of(root)['releases']['r1']
    assert entry_['state'] == 'staged'
    assert entry_['checksum'] == rel.sha256_file(archive)
    assert [h['state'] for h in entry_['history']] == ['staged']
    assert isinstance(entry_['staged'], float) and entry_['staged_iso'].endswith('Z')


def test_given_directory_src_when_staged_then_copied_with_symlinks_and_modes(tmp_path, root, rr):
    src = make_tree(tmp_path / 'src', {'app.py': 'print(1)\n', 'run.sh': ('mode', 'x', 0o750),
                                       'link': ('link', 'app.py'), 'sub/data.txt': 'd'})
    os.chmod(src, 0o751)
    res = ensure_staged(rr, 'd1', src, shared=['var'])
    release = os.path.join(root, 'releases', 'd1')
    assert res['changed']
    assert read(os.path.join(release, 'sub', 'data.txt')) == 'd'
    assert os.readlink(os.path.join(release, 'link')) == 'app.py'
    assert stat.S_IMODE(os.stat(os.path.join(release, 'run.sh')).st_mode) == 0o750
    assert stat.S_IMODE(os.stat(release).st_mode) == 0o751
    assert os.readlink(os.path.join(release, 'var')) == '../../shared/var'
    assert res['checksum'] == rel.tree_checksum(src)


@pytest.mark.parametrize('members, why', [
    pytest.param({'../evil': 'x'}, "'..'", id='dotdot'),
    pytest.param({'ok/../../evil': 'x'}, "'..'", id='dotdot-inside'),
    pytest.param({'/etc/evil': 'x'}, 'absolute', id='absolute'),
    pytest.param({'l': ('link', '/etc/passwd')}, 'outside', id='absolute-symlink'),
    pytest.param({'l': ('link', '../../../etc')}, 'outside', id='relative-symlink-out'),
    pytest.param({'d/l': ('link', '../..')}, 'outside', id='nested-symlink-out'),
    pytest.param({'a': ('link', '.'), 'a/b/l': ('link', '../..')}, 'outside|through', id='symlink-chain'),
    pytest.param({'d/': ('dir', 0o755), 'd/up': ('link', '..'), 'l': ('link', 'd/up/..')}, 'resolves outside',
                 id='lexically-inside-but-resolves-outside'),
    pytest.param({'a': ('link', 'sub'), 'sub/': ('dir', 0o755), 'a/f': 'x'}, 'through the symlink',
                 id='write-through-symlink'),
    pytest.param({'h': ('hardlink', '/etc/passwd')}, 'absolute', id='hardlink-absolute'),
    pytest.param({'h': ('hardlink', 'nothere')}, 'hard link', id='hardlink-to-nothing'),
    pytest.param({'p': ('fifo',)}, 'special', id='fifo'),
])
def test_given_archive_escaping_when_staged_then_refused_and_nothing_staged(tmp_path, root, rr, members, why):
    evil = make_tarball(tmp_path / 'evil.tar.gz', dict({'ok.txt': 'fine'}, **members))
    with pytest.raises(ReleaseError, match=why):
        ensure_staged(rr, 'evil', evil)
    assert not os.path.exists(os.path.join(root, 'releases', 'evil'))
    assert os.listdir(os.path.join(root, 'releases')) == []  # temp dir cleaned up
    assert not os.path.exists(os.path.join(root, '.failsafe', 'ledger.json'))
    assert not os.path.exists(str(tmp_path / 'evil'))
    assert not os.path.exists(str(tmp_path.parent / 'evil'))


def test_given_escaping_archive_when_staged_in_check_mode_then_refused_too(tmp_path, root, rr):
    evil = make_tarball(tmp_path / 'evil.tar', {'../x': 'x'})
    with pytest.raises(ReleaseError, match='escapes'):
        ensure_staged(rr, 'evil', evil, check_mode=True)
    assert not os.path.exists(root)


def test_given_hardlink_inside_archive_when_staged_then_linked(tmp_path, root, rr):
    arc = make_tarball(tmp_path / 'h.tar.gz', {'a.txt': 'same', 'b.txt': ('hardlink', 'a.txt')})
    ensure_staged(rr, 'h', arc)
    release = os.path.join(root, 'releases', 'h')
    assert os.stat(os.path.join(release, 'a.txt')).st_ino == os.stat(os.path.join(release, 'b.txt')).st_ino


def test_given_non_archive_file_when_staged_then_refused(tmp_path, rr):
    junk = tmp_path / 'junk.tar.gz'
    junk.write_text('not a tarball')
    with pytest.raises(ReleaseError, match='neither a directory nor a tar archive'):
        ensure_staged(rr, 'j', str(junk))


def test_given_same_src_when_staged_twice_then_second_is_unchanged(root, rr, archive):
    ensure_staged(rr, 'r1', archive, shared=['log'])
    before = snapshot_tree(root)
    res = ensure_staged(rr, 'r1', archive, shared=['log'])
    assert res['changed'] is False
    assert snapshot_tree(root) == before


def test_given_staged_release_when_shared_link_broken_then_restaging_repairs_only_the_link(root, rr, archive):
    ensure_staged(rr, 'r1', archive, shared=['log'])
    link = os.path.join(root, 'releases', 'r1', 'log')
    os.unlink(link)
    res = ensure_staged(rr, 'r1', archive, shared=['log'])
    assert res['changed'] and not res['extracted'] and res['linked'] == ['log']
    assert os.readlink(link) == '../../shared/log'


def test_given_different_content_under_same_id_when_staged_then_refused_unless_force(tmp_path, root, rr):
    stage_dir(tmp_path, rr, 'x', content='one')
    other = make_tree(tmp_path / 'other', {'app.txt': 'two\n'})
    with pytest.raises(ReleaseError, match='immutable'):
        ensure_staged(rr, 'x', other)
    res = ensure_staged(rr, 'x', other, force=True)
    assert res['changed']
    assert read(os.path.join(root, 'releases', 'x', 'app.txt')) == 'two\n'
    assert sorted(os.listdir(os.path.join(root, 'releases'))) == ['x']


def test_given_staged_in_check_mode_then_nothing_is_written(root, rr, archive):
    res = ensure_staged(rr, 'r1', archive, shared=['log'], check_mode=True)
    assert res['changed'] is True
    assert res['ledger']['releases']['r1']['state'] == 'staged'  # the plan
    assert not os.path.exists(root)


# --- quarantine ----------------------------------------------------------------------------------------------------

def test_given_failed_release_when_staged_then_refused_as_quarantined(tmp_path, root, rr):
    stage_dir(tmp_path, rr, 'bad')
    ensure_failed(rr, 'bad', reason='health check failed')
    with pytest.raises(ReleaseError) as exc:
        stage_dir(tmp_path, rr, 'bad')
    assert 'quarantined' in exc.value.msg and 'bad' in exc.value.msg and 'force=true' in exc.value.msg
    assert 'health check failed' in exc.value.msg
    assert exc.value.details['quarantined'] is True
    assert ledger_of(root)['releases']['bad']['state'] == 'failed'


def test_given_failed_release_when_staged_with_force_then_fresh_copy_and_state_staged(tmp_path, root, rr):
    stage_dir(tmp_path, rr, 'bad')
    ensure_failed(rr, 'bad', reason='broke')
    scribble = os.path.join(root, 'releases', 'bad', 'written-by-the-broken-app')
    with open(scribble, 'w') as f:
        f.write('junk')
    res = stage_dir(tmp_path, rr, 'bad', force=True)
    assert res['changed'] and res['extracted']
    assert not os.path.exists(scribble)
    e = ledger_of(root)['releases']['bad']
    assert e['state'] == 'staged'
    assert [h['state'] for h in e['history']] == ['staged', 'failed', 'staged']
    assert 'reason' not in e


@pytest.mark.parametrize('action', [ensure_active, ensure_verified])
def test_given_failed_release_when_activated_or_verified_then_refused_unless_force(tmp_path, root, rr, action):
    stage_dir(tmp_path, rr, 'bad')
    ensure_failed(rr, 'bad')
    with pytest.raises(ReleaseError, match='quarantined'):
        action(rr, 'bad')
    assert action(rr, 'bad', force=True)['changed']


# --- switch ----------------------------------------------------------------------------------------------------------

def test_given_staged_release_when_activated_then_current_is_relative_symlink(tmp_path, root, rr):
    stage_dir(tmp_path, rr, 'a')
    res = ensure_active(rr, 'a')
    assert res['changed'] and res['current'] == 'a' and res['previous'] is None
    assert os.readlink(os.path.join(root, 'current')) == 'releases/a'
    assert read(os.path.join(root, 'current', 'app.txt')) == 'v a\n'
    assert ledger_of(root)['current'] == 'a'
    assert ledger_of(root)['releases']['a']['state'] == 'active'
    # no temp symlink left behind
    assert sorted(os.listdir(root)) == ['.failsafe', 'current', 'releases']


def test_given_current_release_when_activated_again_then_unchanged(tmp_path, root, rr):
    stage_dir(tmp_path, rr, 'a')
    ensure_active(rr, 'a')
    assert ensure_active(rr, 'a')['changed'] is False


def test_given_verified_current_when_new_release_activated_then_old_keeps_verified(tmp_path, root, rr):
    deploy(tmp_path, rr, 'a')
    stage_dir(tmp_path, rr, 'b')
    res = ensure_active(rr, 'b')
    assert res['previous'] == 'a' and res['current'] == 'b'
    assert os.readlink(os.path.join(root, 'current')) == 'releases/b'
    led = ledger_of(root)
    assert led['releases']['a']['state'] == 'verified'
    assert led['releases']['b']['state'] == 'active'
    assert res['diff']['before']['current'] == 'a' and res['diff']['after']['current'] == 'b'
    assert res['diff']['before']['release']['state'] == 'staged'
    assert res['diff']['after']['release']['state'] == 'active'


def test_given_current_is_real_directory_when_activated_then_refused(tmp_path, root, rr):
    stage_dir(tmp_path, rr, 'a')
    os.mkdir(os.path.join(root, 'current'))
    with pytest.raises(ReleaseError, match='not a symlink'):
        ensure_active(rr, 'a')


def test_given_unstaged_release_when_activated_then_refused(rr):
    with pytest.raises(ReleaseError, match='not staged'):
        ensure_active(rr, 'ghost')


@pytest.mark.parametrize('action', [ensure_active, ensure_verified])
def test_given_unstaged_release_in_check_mode_then_planned_as_if_an_earlier_task_staged_it(root, rr, action):
    res = action(rr, 'ghost', check_mode=True)
    assert res['changed'] is True and 'check mode' in res['msg']
    assert not os.path.exists(root)


def test_given_active_in_check_mode_then_current_untouched(tmp_path, root, rr):
    deploy(tmp_path, rr, 'a')
    stage_dir(tmp_path, rr, 'b')
    before = snapshot_tree(root)
    res = ensure_active(rr, 'b', check_mode=True)
    assert res['changed'] and res['current'] == 'b'
    assert snapshot_tree(root) == before


def test_given_verified_when_marked_again_then_unchanged_and_last_verified(tmp_path, root, rr):
    deploy(tmp_path, rr, 'a')
    assert ledger_of(root)['last_verified'] == 'a'
    assert ensure_verified(rr, 'a')['changed'] is False


# --- rollback --------------------------------------------------------------------------------------------------------

def test_given_failed_deploy_when_rolled_back_then_current_is_last_verified_not_previous_dir(tmp_path, root, rr):
    deploy(tmp_path, rr, 'v1')
    deploy(tmp_path, rr, 'v2')
    deploy(tmp_path, rr, 'v3', verify=False)  # activated, never verified: the previous directory
    deploy(tmp_path, rr, 'v4', verify=False)
    res = ensure_rolled_back(rr, 'v4', reason='health check failed')
    assert res['changed'] and res['target'] == 'v2' and res['current'] == 'v2' and res['previous'] == 'v4'
    assert os.readlink(os.path.join(root, 'current')) == 'releases/v2'
    led = ledger_of(root)
    assert led['releases']['v4']['state'] == 'failed'
    assert led['releases']['v4']['reason'] == 'health check failed'
    assert led['releases']['v2']['state'] == 'verified'
    assert led['last_verified'] == 'v2'


def test_given_verified_release_failed_after_commit_when_rolled_back_then_previous_verified(tmp_path, root, rr):
    deploy(tmp_path, rr, 'v1')
    deploy(tmp_path, rr, 'v2')  # verified, then something later failed
    res = ensure_rolled_back(rr, 'v2', reason='late failure')
    assert res['target'] == 'v1'
    assert ledger_of(root)['last_verified'] == 'v1'
    assert os.readlink(os.path.join(root, 'current')) == 'releases/v1'


def test_given_previous_failed_release_when_rolled_back_then_never_chosen(tmp_path, root, rr):
    deploy(tmp_path, rr, 'v1')
    deploy(tmp_path, rr, 'v2')
    ensure_rolled_back(rr, 'v2')  # v2 quarantined, back on v1
    deploy(tmp_path, rr, 'v3', verify=False)
    res = ensure_rolled_back(rr, 'v3')
    assert res['target'] == 'v1'


def test_given_no_verified_release_when_rolled_back_then_target_none_and_current_removed(tmp_path, root, rr):
    deploy(tmp_path, rr, 'first', verify=False)
    res = ensure_rolled_back(rr, 'first', reason='first deploy broke')
    assert res['changed'] and res['target'] is None and res['current'] is None
    assert not os.path.lexists(os.path.join(root, 'current'))
    assert ledger_of(root)['releases']['first']['state'] == 'failed'


def test_given_a_release_staged_but_never_activated_when_rolled_back_without_quarantine_then_it_stays_deployable(
        tmp_path, root, rr):
    deploy(tmp_path, rr, 'v1')
    stage_dir(tmp_path, rr, 'v2')  # the deploy failed before the switch (a hook, the configuration, the network)
    res = ensure_rolled_back(rr, 'v2', reason='hook failed', quarantine=False)
    assert res['target'] == 'v1' and res['current'] == 'v1' and res['quarantined'] is False
    assert ledger_of(root)['releases']['v2']['state'] == 'staged'
    ensure_active(rr, 'v2')  # no force needed
    assert os.readlink(os.path.join(root, 'current')) == 'releases/v2'


def test_given_a_committed_release_when_a_recovery_rolls_it_back_without_quarantine_then_it_is_no_longer_verified(
        tmp_path, root, rr):
    # a host that committed a run whose controller died before the others did: the recovery undoes it, and the
    # release must not stay a verified one to go back to (nor become failed: nothing showed it bad)
    deploy(tmp_path, rr, 'v1')
    deploy(tmp_path, rr, 'v2')
    assert ledger_of(root)['releases']['v2']['state'] == 'verified'
    res = ensure_rolled_back(rr, 'v2', reason='recovered', quarantine=False)
    assert res['target'] == 'v1' and res['current'] == 'v1' and res['quarantined'] is False
    ledger = ledger_of(root)
    assert ledger['releases']['v2']['state'] == 'staged' and ledger['last_verified'] == 'v1'
    ensure_active(rr, 'v2')  # no force needed
    assert os.readlink(os.path.join(root, 'current')) == 'releases/v2'


def test_given_a_quarantined_release_when_rolled_back_without_quarantine_then_it_stays_quarantined(
        tmp_path, root, rr):
    deploy(tmp_path, rr, 'v1')
    deploy(tmp_path, rr, 'v2', verify=False)
    assert ensure_rolled_back(rr, 'v2')['quarantined'] is True
    res = ensure_rolled_back(rr, 'v2', quarantine=False)
    assert res['quarantined'] is True and res['changed'] is False
    assert ledger_of(root)['releases']['v2']['state'] == 'failed'


def test_given_rolled_back_when_repeated_then_unchanged(tmp_path, root, rr):
    deploy(tmp_path, rr, 'v1')
    deploy(tmp_path, rr, 'v2', verify=False)
    ensure_rolled_back(rr, 'v2')
    res = ensure_rolled_back(rr, 'v2')
    assert res['changed'] is False and res['target'] == 'v1'


def test_given_rollback_in_check_mode_then_nothing_touched(tmp_path, root, rr):
    deploy(tmp_path, rr, 'v1')
    deploy(tmp_path, rr, 'v2', verify=False)
    before = snapshot_tree(root)
    res = ensure_rolled_back(rr, 'v2', check_mode=True)
    assert res['changed'] and res['target'] == 'v1' and res['current'] == 'v1'
    assert snapshot_tree(root) == before


# --- retention and removal -------------------------------------------------------------------------------------------

def test_given_many_releases_when_pruned_then_keeps_n_verified_current_last_verified_and_failed(tmp_path, root, rr):
    for rid in ('v1', 'v2', 'v3', 'v4', 'v5'):
        deploy(tmp_path, rr, rid)
    deploy(tmp_path, rr, 'bad', verify=False)
    ensure_rolled_back(rr, 'bad')  # current back to v5, bad quarantined
    stage_dir(tmp_path, rr, 'abandoned')
    os.makedirs(os.path.join(root, 'releases', '.v9.tmp-dead'))  # left by a crashed staging
    res = ensure_pruned(rr, keep=2)
    assert res['changed']
    assert sorted(res['removed']) == ['abandoned', 'v1', 'v2', 'v3']
    assert res['cleaned'] == ['.v9.tmp-dead']
    assert sorted(os.listdir(os.path.join(root, 'releases'))) == ['bad', 'v4', 'v5']
    led = ledger_of(root)
    assert sorted(led['releases']) == ['bad', 'v4', 'v5']
    assert ensure_pruned(rr, keep=2)['changed'] is False


def test_given_keep_zero_when_pruned_then_current_and_last_verified_survive(tmp_path, root, rr):
    deploy(tmp_path, rr, 'v1')
    deploy(tmp_path, rr, 'v2')
    stage_dir(tmp_path, rr, 'v3')
    ensure_active(rr, 'v3')  # current, not yet verified; last verified is v2
    res = ensure_pruned(rr, keep=0)
    assert res['removed'] == ['v1']
    assert sorted(os.listdir(os.path.join(root, 'releases'))) == ['v2', 'v3']


def test_given_prune_failed_when_pruned_then_failed_dir_removed_but_still_quarantined(tmp_path, root, rr):
    deploy(tmp_path, rr, 'v1')
    deploy(tmp_path, rr, 'bad', verify=False)
    ensure_rolled_back(rr, 'bad')
    res = ensure_pruned(rr, keep=1, prune_failed=True)
    assert res['removed'] == ['bad']
    assert not os.path.exists(os.path.join(root, 'releases', 'bad'))
    assert ledger_of(root)['releases']['bad']['state'] == 'failed'
    with pytest.raises(ReleaseError, match='quarantined'):
        stage_dir(tmp_path, rr, 'bad')


def test_given_pruned_in_check_mode_then_nothing_removed(tmp_path, root, rr):
    for rid in ('v1', 'v2', 'v3'):
        deploy(tmp_path, rr, rid)
    before = snapshot_tree(root)
    res = ensure_pruned(rr, keep=1, check_mode=True)
    assert res['removed'] == ['v1', 'v2']
    assert snapshot_tree(root) == before


def test_given_current_release_when_absent_then_refused(tmp_path, root, rr):
    deploy(tmp_path, rr, 'v1')
    with pytest.raises(ReleaseError, match='is current'):
        ensure_absent(rr, 'v1')


def test_given_old_release_when_absent_then_removed_from_disk_and_ledger(tmp_path, root, rr):
    deploy(tmp_path, rr, 'v1')
    deploy(tmp_path, rr, 'v2')
    res = ensure_absent(rr, 'v1')
    assert res['changed'] and res['removed'] == ['v1']
    assert not os.path.exists(os.path.join(root, 'releases', 'v1'))
    assert 'v1' not in ledger_of(root)['releases']
    assert ensure_absent(rr, 'v1')['changed'] is False


# --- query -------------------------------------------------------------------------------------------------------------

def test_given_missing_root_when_queried_then_empty_and_nothing_created(tmp_path):
    root = str(tmp_path / 'nothing' / 'here')
    res = ensure_query(ReleaseRoot(root))
    assert res['changed'] is False and res['current'] is None and res['releases'] == {}
    assert res['free_bytes'] > 0
    assert not os.path.exists(root)


def test_given_deployed_root_when_queried_then_reports_ledger(tmp_path, root, rr):
    deploy(tmp_path, rr, 'v1')
    res = ensure_query(rr)
    assert res['current'] == 'v1' and res['last_verified'] == 'v1'
    assert res['releases']['v1']['state'] == 'verified'


def test_given_corrupt_ledger_then_refused_not_overwritten(tmp_path, root, rr):
    deploy(tmp_path, rr, 'v1')
    path = os.path.join(root, '.failsafe', 'ledger.json')
    with open(path, 'w') as f:
        f.write('{broken')
    with pytest.raises(ReleaseError, match='not valid JSON'):
        ensure_verified(rr, 'v1')
    assert read(path) == '{broken'


def test_check_mode_staging_from_a_src_not_uploaded_yet_is_planned_not_failed(tmp_path):
    from ansible_collections.failsafe.deploy.plugins.module_utils import _release
    rr = _release.ReleaseRoot(str(tmp_path / 'app'))
    res = _release.ensure_staged(rr, '1.0.0', str(tmp_path / 'missing.tar.gz'), check_mode=True)
    assert res['changed'] is True
    assert not (tmp_path / 'app').exists()
    with pytest.raises(_release.ReleaseError):
        _release.ensure_staged(rr, '1.0.0', str(tmp_path / 'missing.tar.gz'), check_mode=False)


@pytest.mark.parametrize('check_mode', [False, True], ids=['staged', 'check-mode'])
def test_given_archive_wrapped_in_one_top_directory_when_staged_then_refused_saying_what_is_expected(
        tmp_path, root, rr, check_mode):
    wrapped = make_tarball(tmp_path / 'app-1.2.0.tar.gz', {'app-1.2.0/': ('dir', 0o755), 'app-1.2.0/app.py': 'x',
                                                           'app-1.2.0/lib/m.py': 'y'})
    with pytest.raises(ReleaseError, match=r"one top directory 'app-1.2.0/'.*top level.*-C <dir>/app-1.2.0 \."):
        ensure_staged(rr, '1.2.0', wrapped, check_mode=check_mode)
    assert not os.path.exists(os.path.join(root, 'releases', '1.2.0'))
    assert not os.path.exists(os.path.join(root, '.failsafe', 'ledger.json'))


def test_given_archive_with_one_directory_and_a_top_level_file_when_staged_then_accepted(tmp_path, root, rr):
    arc = make_tarball(tmp_path / 'a.tar.gz', {'lib/': ('dir', 0o755), 'lib/m.py': 'y', 'start': 'z'})
    ensure_staged(rr, 'a', arc)
    assert os.path.isfile(os.path.join(root, 'releases', 'a', 'lib', 'm.py'))


# --- the size bound of a release archive -------------------------------------------------------------------------

MIB = 1024 * 1024


class Zeros:
    """A stream of n zero bytes, read in chunks: the payload of a gzip bomb, never held in memory or written out."""

    def __init__(self, n):
        self.left = n

    def read(self, n=-1):
        k = self.left if n is None or n < 0 else min(n, self.left)
        self.left -= k
        return bytes(k)


def make_bomb(path, declared, name='./data/zeros.bin'):
    """A .tar.gz of a few KB whose member declares (and holds) `declared` bytes of zeros, beside a small app.py."""
    with tarfile.open(str(path), 'w:gz', compresslevel=9) as tf:
        app = b'print("app")\n'
        info = tarfile.TarInfo('./app.py')
        info.size = len(app)
        info.mode = 0o644
        tf.addfile(info, io.BytesIO(app))
        info = tarfile.TarInfo(name)
        info.size = declared
        info.mode = 0o644
        tf.addfile(info, Zeros(declared))
    return str(path)


def mount_small_fs(path, size='8m'):
    """Mount a tmpfs of `size` at path (a test's own file system, whose free space it can bound and measure);
    skips the test where that is not possible, and fails it under CI and as root (tests/requires.py). Returns the
    unmount function."""
    require_root('mounting a small tmpfs needs root')
    os.makedirs(path)
    mounted = subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=%s' % size, 'tmpfs', path], check=False)
    require(mounted.returncode == 0, 'cannot mount a tmpfs here')
    return lambda: subprocess.run(['umount', path], check=False)


@pytest.fixture
def small_fs(tmp_path):
    """An 8 MiB tmpfs of the test's own."""
    path = str(tmp_path / 'small')
    unmount = mount_small_fs(path)
    yield path
    unmount()


def fs_state(fs, rr):
    """What a refusal must leave as it was: the file system's free blocks and inodes, releases/ and the ledger."""
    st = os.statvfs(fs)
    return {'free_blocks': st.f_bavail, 'free_inodes': st.f_favail, 'releases': sorted(os.listdir(rr.releases_dir)),
            'ledger': ledger_of(rr.root)}


@pytest.mark.parametrize('size, text', [
    (512, '512 bytes'), (15587, '15.2 KiB (15587 bytes)'), (50 * MIB + 13, '50.0 MiB (52428813 bytes)'),
    (2 << 30, '2.0 GiB (2147483648 bytes)'),
])
def test_sizes_in_messages_read_in_the_fitting_unit_and_in_bytes(size, text):
    assert rel.human_size(size) == text


def test_archive_size_is_what_the_regular_members_declare(tmp_path):
    arc = make_tarball(tmp_path / 'a.tar.gz', {'./': ('dir', 0o755), './a': 'x' * 1000, './d/': ('dir', 0o755),
                                               './d/b': 'y' * 24, './l': ('link', 'a'), './h': ('hardlink', 'a')})
    assert rel.archive_size(arc) == 1024
    assert rel.archive_size(make_bomb(tmp_path / 'bomb.tar.gz', 3 * MIB)) == 3 * MIB + len('print("app")\n')


@pytest.mark.parametrize('check_mode', [False, True], ids=['staged', 'check-mode'])
def test_given_an_archive_declaring_more_than_the_free_space_when_staged_then_refused_naming_both_and_nothing_written(
        tmp_path, small_fs, archive, check_mode):
    rr = ReleaseRoot(os.path.join(small_fs, 'app'))
    ensure_staged(rr, 'r1', archive)  # a normal archive stages on this small file system
    bomb = make_bomb(tmp_path / 'bomb.tar.gz', 50 * MIB)
    assert os.path.getsize(bomb) < 200 * 1024, 'a few KB that declare 50 MiB'
    before = fs_state(small_fs, rr)
    free = before['free_blocks'] * os.statvfs(small_fs).f_frsize
    assert free < 8 * MIB
    with pytest.raises(ReleaseError) as err:
        ensure_staged(rr, 'r2', bomb, check_mode=check_mode)
    msg = err.value.msg
    size = rel.archive_size(bomb)
    assert 'would write 50.0 MiB (%d bytes) into %s' % (size, rr.releases_dir) in msg, msg
    assert 'has %s free' % rel.human_size(free) in msg and bomb in msg, msg
    assert err.value.details['release_size'] == size and err.value.details['free_bytes'] == free
    assert fs_state(small_fs, rr) == before
    assert sorted(os.listdir(rr.releases_dir)) == ['r1']


def test_given_an_archive_that_fits_the_small_file_system_when_staged_then_it_stages_whole(tmp_path, small_fs):
    rr = ReleaseRoot(os.path.join(small_fs, 'app'))
    five = make_bomb(tmp_path / 'five.tar.gz', 5 * MIB)
    res = ensure_staged(rr, 'r1', five)
    assert res['extracted'] and os.path.getsize(os.path.join(rr.release_path('r1'), 'data', 'zeros.bin')) == 5 * MIB
    assert ledger_of(rr.root)['releases']['r1']['state'] == 'staged'


def test_given_the_space_to_keep_free_when_an_archive_would_eat_into_it_then_refused_naming_the_setting(
        tmp_path, small_fs, archive):
    rr = ReleaseRoot(os.path.join(small_fs, 'app'))
    ensure_staged(rr, 'r1', archive)
    five = make_bomb(tmp_path / 'five.tar.gz', 5 * MIB)
    before = fs_state(small_fs, rr)
    names = {'keep_free': 'failsafe_preflight_min_free_mb', 'max_size': 'failsafe_release_max_size'}
    with pytest.raises(ReleaseError) as err:
        ensure_staged(rr, 'r2', five, keep_free=4 * MIB, names=names)
    assert 'would write 5.0 MiB (%d bytes)' % rel.archive_size(five) in err.value.msg
    assert '(failsafe_preflight_min_free_mb keeps 4.0 MiB (%d bytes) of it free)' % (4 * MIB) in err.value.msg
    assert fs_state(small_fs, rr) == before
    ensure_staged(rr, 'r2', five, keep_free=1 * MIB, names=names)
    assert os.path.isfile(os.path.join(rr.release_path('r2'), 'data', 'zeros.bin'))


@pytest.mark.parametrize('check_mode', [False, True], ids=['staged', 'check-mode'])
def test_given_a_largest_release_when_the_archive_declares_more_then_refused_naming_both_and_nothing_written(
        tmp_path, root, rr, check_mode):
    three = make_bomb(tmp_path / 'three.tar.gz', 3 * MIB)
    size = rel.archive_size(three)
    with pytest.raises(ReleaseError) as err:
        ensure_staged(rr, 'r1', three, check_mode=check_mode, max_size=1 * MIB)
    msg = err.value.msg
    assert 'would write 3.0 MiB (%d bytes) into %s' % (size, rr.releases_dir) in msg, msg
    assert 'more than the largest release allowed (max_size is 1.0 MiB (%d bytes))' % MIB in msg, msg
    assert err.value.details['max_size'] == MIB
    assert not os.path.exists(root), 'nothing written: not even the application root'
    # exactly the limit is allowed
    ensure_staged(rr, 'r1', three, max_size=size)
    assert os.path.getsize(os.path.join(rr.release_path('r1'), 'data', 'zeros.bin')) == 3 * MIB
