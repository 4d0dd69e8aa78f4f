# -*- coding: utf-8 -*-
# Copyright: Contributors to failsafe.deploy
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The host's bytecode cache of module_utils read from a payload zip (module_utils/_bytecode.py): a module compiled
once is loaded from the cache after, a changed source is compiled again, an unsafe or broken cache is passed over."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import importlib.util
import os
import sys
import traceback
import zipfile

import pytest

from ansible_collections.failsafe.deploy.plugins.module_utils import _bytecode

PACKAGE = 'ansible_collections/failsafe/deploy/plugins/module_utils'
NAME = 'ansible_collections.failsafe.deploy.plugins.module_utils._cached_probe'


def payload(tmp_path, source, name='payload.zip'):
    """A zip laid out as an AnsiballZ payload, holding module_utils/_cached_probe.py; returns the path entry of the
    module_utils package inside it (the package's __path__ as zipimport gives it)."""
    path = tmp_path / name
    with zipfile.ZipFile(str(path), 'w') as archive:
        archive.writestr(PACKAGE + '/__init__.py', '')
        archive.writestr(PACKAGE + '/_cached_probe.py', source)
    return str(path) + '/' + PACKAGE


def load(entry):
    spec = _bytecode._CachedFinder.find_spec(NAME, [entry])
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def cache(tmp_path, monkeypatch):
    path = tmp_path / 'cache'
    monkeypatch.setenv('FAILSAFE_BYTECODE_CACHE', str(path))
    return path


@pytest.fixture
def compiles(monkeypatch):
    """The sources _bytecode compiled, in order."""
    seen = []

    def counting(source, filename, mode, **kwargs):
        seen.append(filename)
        return compile(source, filename, mode, **kwargs)
    monkeypatch.setattr(_bytecode, 'compile', counting, raising=False)
    return seen


def test_compiled_once_then_loaded_from_the_cache(tmp_path, cache, compiles):
    entry = payload(tmp_path, 'VALUE = 6 * 7\n')
    assert load(entry).VALUE == 42
    assert compiles == [PACKAGE + '/_cached_probe.py']
    assert oct(os.stat(str(cache)).st_mode & 0o777) == '0o700'
    assert len(os.listdir(str(cache))) == 1
    # a later run's payload is another zip at another path, with the same source
    module = load(payload(tmp_path, 'VALUE = 6 * 7\n', name='later.zip'))
    assert module.VALUE == 42
    assert len(compiles) == 1, 'the second load compiled again instead of using the cache'
    assert module.__file__ == str(tmp_path / 'later.zip') + '/' + PACKAGE + '/_cached_probe.py'
    assert module.__spec__.loader.get_source(NAME) == 'VALUE = 6 * 7\n'


def test_a_changed_source_is_compiled_again(tmp_path, cache, compiles):
    assert load(payload(tmp_path, 'VALUE = 1\n')).VALUE == 1
    assert load(payload(tmp_path, 'VALUE = 2\n', name='changed.zip')).VALUE == 2
    assert len(compiles) == 2
    assert len(os.listdir(str(cache))) == 2


def test_a_directory_others_can_write_to_is_not_used(tmp_path, cache, compiles):
    cache.mkdir()
    os.chmod(str(cache), 0o777)
    entry = payload(tmp_path, 'VALUE = 3\n')
    assert load(entry).VALUE == 3
    assert load(entry).VALUE == 3
    assert len(compiles) == 2
    assert os.listdir(str(cache)) == []


def test_a_broken_entry_is_compiled_again(tmp_path, cache, compiles):
    entry = payload(tmp_path, 'VALUE = 4\n')
    load(entry)
    (name,) = os.listdir(str(cache))
    (cache / name).write_bytes(b'not marshalled code')
    assert load(entry).VALUE == 4
    assert len(compiles) == 2


def test_turned_off(tmp_path, monkeypatch, compiles):
    monkeypatch.setenv('FAILSAFE_BYTECODE_CACHE', 'off')
    monkeypatch.setattr(sys, 'meta_path', [f for f in sys.meta_path if not getattr(f, 'failsafe_bytecode', False)])
    assert _bytecode.cache_dir() is None
    _bytecode.install()
    assert not any(getattr(f, 'failsafe_bytecode', False) for f in sys.meta_path)
    entry = payload(tmp_path, 'VALUE = 5\n')
    assert load(entry).VALUE == 5
    assert load(entry).VALUE == 5
    assert len(compiles) == 2


def test_the_entries_are_bounded(tmp_path, cache, compiles, monkeypatch):
    monkeypatch.setattr(_bytecode, 'MAX_ENTRIES', 4)
    for n in range(9):
        assert load(payload(tmp_path, 'VALUE = %d\n' % n, name='p%d.zip' % n)).VALUE == n
    assert len(os.listdir(str(cache))) <= 4


def test_other_modules_and_paths_are_left_to_the_usual_finders(tmp_path):
    entry = payload(tmp_path, 'VALUE = 1\n')
    assert _bytecode._CachedFinder.find_spec('json', [entry]) is None
    assert _bytecode._CachedFinder.find_spec(NAME, [str(tmp_path)]) is None
    assert _bytecode._CachedFinder.find_spec(NAME.replace('_cached_probe', '_absent'), [entry]) is None


def test_a_traceback_names_the_file_in_the_payload_and_its_line(tmp_path, cache):
    source = 'def fail():\n    raise ValueError("from the cached module")\n'
    load(payload(tmp_path, source))
    module = load(payload(tmp_path, source, name='again.zip'))  # from the cache
    with pytest.raises(ValueError) as caught:
        module.fail()
    text = ''.join(traceback.format_exception(caught.type, caught.value, caught.tb))
    assert PACKAGE + '/_cached_probe.py", line 2' in text
    assert 'raise ValueError("from the cached module")' in text
