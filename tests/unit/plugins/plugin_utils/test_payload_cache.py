# -*- coding: utf-8 -*-
# Copyright: Contributors to failsafe.deploy
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""_payload_cache: what a payload is kept under, what is copied each way, and what is refused.

The payloads here are ansible-core's own cache objects (module_common._CachedModule), written and read the way
ansible-core does; tests/behaviour/test_payload_cache.py covers real ansible-playbook runs."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import os
import shutil

import pytest

from ansible.executor.module_common import _CachedModule

from ansible_collections.failsafe.deploy.plugins.plugin_utils import _payload_cache
from ansible_collections.failsafe.deploy.tests.requires import require_root

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))))
PREFIX = 'ansible_collections.failsafe.deploy.plugins.modules.'
NAME = PREFIX + 'transaction-ZIP_DEFLATED-none'


def _collection(base):
    """A copy of this collection's modules, module_utils and routing."""
    root = base / 'collection'
    for rel in ('plugins/modules', 'plugins/module_utils'):
        shutil.copytree(os.path.join(ROOT, rel), str(root / rel), ignore=shutil.ignore_patterns('__pycache__'))
    (root / 'meta').mkdir()
    shutil.copy(os.path.join(ROOT, 'meta', 'runtime.yml'), str(root / 'meta' / 'runtime.yml'))
    return root


def _payload(path, data=b'UEsFBg=='):
    _CachedModule(zip_data=data, metadata=None, source_mapping={}).dump(str(path))


def _cache(tmp_path, run='run', root=None):
    run_cache = tmp_path / run
    run_cache.mkdir(exist_ok=True)
    return _payload_cache.PayloadCache(store=str(tmp_path / 'store'), run_cache=str(run_cache),
                                       collection_root=str(root or _collection(tmp_path)), prefix=PREFIX)


def test_the_prefix_is_this_collections_module_names():
    assert _payload_cache.PREFIX == PREFIX


def test_the_key_changes_with_each_module_module_utils_and_routing_file_and_not_with_the_place(tmp_path):
    root = _collection(tmp_path)
    first = _payload_cache.key(str(root))
    assert first == _payload_cache.key(str(root))
    moved = tmp_path / 'elsewhere'
    shutil.copytree(str(root), str(moved))
    assert _payload_cache.key(str(moved)) == first, 'the same code in another place has the same key'
    seen = {first}
    for rel in ('plugins/module_utils/_engine.py', 'plugins/module_utils/kinds/__init__.py',
                'plugins/modules/transaction.py', 'meta/runtime.yml'):
        path = moved / rel
        original = path.read_bytes()
        path.write_bytes(original + b'\n# changed\n')
        changed = _payload_cache.key(str(moved))
        assert changed not in seen, '%s changed but the key did not' % rel
        seen.add(changed)
        path.write_bytes(original)
        assert _payload_cache.key(str(moved)) == first
    (moved / 'plugins' / 'module_utils' / 'added.py').write_text('X = 1\n')
    assert _payload_cache.key(str(moved)) not in seen, 'a new module_utils file changes the key'


def test_a_payload_built_by_one_run_is_primed_into_the_next_runs_cache(tmp_path):
    root = _collection(tmp_path)
    first = _cache(tmp_path, 'run1', root)
    assert first.prime() == []
    _payload(tmp_path / 'run1' / NAME, b'payload-one')
    assert first.save() == [NAME]
    assert first.save() == [], 'saved once'
    stored = tmp_path / 'store' / _payload_cache.key(str(root)) / NAME
    assert stored.exists() and stored.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / 'store').stat().st_mode & 0o777 == 0o700

    second = _cache(tmp_path, 'run2', root)
    assert second.prime() == [NAME]
    assert _CachedModule.load(str(tmp_path / 'run2' / NAME)).zip_data == b'payload-one'
    assert second.save() == [], 'what was primed is not saved again'


def test_only_this_collections_payloads_built_without_an_extension_are_kept(tmp_path):
    cache = _cache(tmp_path)
    others = ['ansible.legacy.command-ZIP_DEFLATED-none', 'ansible_collections.other.col.plugins.modules.x-ZIP_DEFLATED-none',
              PREFIX + 'transaction-ZIP_DEFLATED-debugger', NAME + '-part', NAME + '.lock']
    for name in others:
        _payload(tmp_path / 'run' / name)
    assert cache.save() == []
    assert not os.path.exists(str(tmp_path / 'store')) or not any(
        files for dummy, dummy2, files in os.walk(str(tmp_path / 'store')))


def test_a_payload_that_does_not_load_is_neither_saved_nor_primed(tmp_path):
    root = _collection(tmp_path)
    cache = _cache(tmp_path, 'run1', root)
    (tmp_path / 'run1' / NAME).write_bytes(b'not a pickle')
    assert cache.save() == []
    entries = tmp_path / 'store' / _payload_cache.key(str(root))
    (entries / NAME).write_bytes(b'truncated')
    later = _cache(tmp_path, 'run2', root)
    assert later.prime() == []
    assert not (tmp_path / 'run2' / NAME).exists()
    assert not (entries / NAME).exists(), 'the broken entry is removed'


def test_a_store_others_can_write_to_is_not_used(tmp_path):
    root = _collection(tmp_path)
    builder = _cache(tmp_path, 'run1', root)
    _payload(tmp_path / 'run1' / NAME)
    assert builder.save() == [NAME]
    os.chmod(str(tmp_path / 'store'), 0o777)
    assert _cache(tmp_path, 'run2', root).prime() == []
    assert not (tmp_path / 'run2' / NAME).exists()
    os.chmod(str(tmp_path / 'store'), 0o700)
    entries = tmp_path / 'store' / _payload_cache.key(str(root))
    os.chmod(str(entries / NAME), 0o666)
    assert _cache(tmp_path, 'run3', root).prime() == [], 'an entry others can write to is not used'


def test_an_entry_owned_by_another_user_is_not_used(tmp_path):
    require_root('chown needs root')
    root = _collection(tmp_path)
    builder = _cache(tmp_path, 'run1', root)
    _payload(tmp_path / 'run1' / NAME)
    assert builder.save() == [NAME]
    entries = tmp_path / 'store' / _payload_cache.key(str(root))
    os.chown(str(entries / NAME), 65534, 65534)
    assert _cache(tmp_path, 'run2', root).prime() == []
    assert not (tmp_path / 'run2' / NAME).exists()
    os.chown(str(entries), 65534, 65534)
    assert _cache(tmp_path, 'run3', root).save() == [] and _cache(tmp_path, 'run3', root).prime() == []


def test_the_store_keeps_the_keys_used_last_and_touches_nothing_else(tmp_path):
    store = tmp_path / 'store'
    olds = ['%032x' % index for index in range(_payload_cache.MAX_KEYS + 3)]
    for index, name in enumerate(olds):
        old = store / name
        old.mkdir(parents=True)
        os.utime(str(old), (1000 + index, 1000 + index))
    # a store named where other things live (a home, a checkout): they are not this cache's to prune
    for name in ('docs', 'plugins', 'ABCDEF0123456789abcdef0123456789', '%031x' % 1):
        (store / name).mkdir()
        (store / name / 'keep.txt').write_text('not a payload')
        os.utime(str(store / name), (1, 1))
    (store / 'notes.txt').write_text('not a payload')
    root = _collection(tmp_path)
    cache = _cache(tmp_path, 'run', root)
    _payload(tmp_path / 'run' / NAME)
    assert cache.save() == [NAME]
    kept = sorted(k for k in os.listdir(str(store)) if _payload_cache.KEY_NAME.match(k))
    assert len(kept) == _payload_cache.MAX_KEYS
    assert _payload_cache.key(str(root)) in kept
    assert olds[-1] in kept and olds[0] not in kept
    for name in ('docs', 'plugins', 'ABCDEF0123456789abcdef0123456789', '%031x' % 1):
        assert (store / name / 'keep.txt').read_text() == 'not a payload', name
    assert (store / 'notes.txt').exists()


@pytest.mark.parametrize('store', ['relative/store', None])
def test_no_usable_store_leaves_ansible_core_to_build(tmp_path, monkeypatch, store):
    monkeypatch.setenv('XDG_CACHE_HOME', 'not-absolute')
    monkeypatch.setattr(os.path, 'expanduser', lambda path: 'not-absolute' if path == '~' else path)
    run_cache = tmp_path / 'run'
    run_cache.mkdir()
    _payload(run_cache / NAME)
    cache = _payload_cache.PayloadCache(store=store, run_cache=str(run_cache), prefix=PREFIX)
    assert cache.prime() == [] and cache.save() == []


def test_a_cache_that_fails_is_said_once_and_then_left_alone(tmp_path):
    store = tmp_path / 'store-file'
    store.write_text('a file where the store would be')
    cache = _payload_cache.for_run(True, str(store / 'payloads'))
    cache.run_cache = str(tmp_path / 'run')
    (tmp_path / 'run').mkdir()
    _payload(tmp_path / 'run' / NAME)
    said = []
    assert _payload_cache.call(cache, 'prime', said.append) == []   # no usable store: nothing, no failure
    cache.prime = lambda: 1 / 0
    assert _payload_cache.call(cache, 'prime', said.append) == []
    assert _payload_cache.call(cache, 'prime', said.append) == []
    assert len(said) == 1 and 'prime failed' in said[0] and 'ZeroDivisionError' in said[0], said
    assert _payload_cache.call(cache, 'save', said.append) == [] and len(said) == 1
    assert _payload_cache.for_run(False, str(store)) is None
    assert _payload_cache.call(None, 'save', said.append) == []
