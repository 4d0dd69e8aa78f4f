# -*- coding: utf-8 -*-
# Copyright: Contributors to failsafe.deploy
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The database layer on an SQLite file that does not exist yet, through the transaction engine's apply phase and
rollback (the calls the transaction module makes), on real files.

Without ``create`` the missing file is refused before anything changes, naming both ways out. With it, the layer
creates an empty database (never over a file that exists), records it in the journal and migrates; a rollback removes
the file it created and proves it gone, refuses when rows were written into it since the migration (unless the loss
is allowed), and leaves alone a file that took its place. Check mode says it would create the file and creates
nothing."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import os
import sqlite3

import pytest

from ansible_collections.failsafe.deploy.plugins.module_utils import _engine as engine
from ansible_collections.failsafe.deploy.plugins.module_utils import kinds  # noqa: F401  # pylint: disable=unused-import
from ansible_collections.failsafe.deploy.plugins.module_utils._errors import FailsafeError
from ansible_collections.failsafe.deploy.plugins.module_utils._journal import DeployState
from ansible_collections.failsafe.deploy.plugins.module_utils._layers import LayerError
from ansible_collections.failsafe.deploy.plugins.module_utils._undone import layer_words
from ansible_collections.failsafe.deploy.plugins.module_utils.kinds.database import DatabaseLayer

FIRST = {
    '0001_items.up.sql': 'CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL);',
    '0001_items.down.sql': 'DROP TABLE items;',
    # a data migration: its own row is no write made since the deploy
    '0002_tags.up.sql': "CREATE TABLE tags (id INTEGER PRIMARY KEY, label TEXT);\nINSERT INTO tags VALUES (1, 'x');",
    '0002_tags.down.sql': 'DROP TABLE tags;',
}
# 0002 fails half way: the first file goes in, the second leaves nothing
HALF = dict(FIRST, **{'0002_tags.up.sql': 'CREATE TABLE tags (id INTEGER PRIMARY KEY);\n'
                                          'INSERT INTO no_such_table VALUES (1);'})


def _run(argv):
    return 0, '', ''


def params(tmp_path):
    return {'state_dir': str(tmp_path / 'state'), 'name': 'app', 'run_id': 'run-1', 'owner': 'ops@ctl',
            'controller': 'ctl', 'pid': 1, 'ttl': 600, 'recover': True, 'service': {'manager': 'none'}}


def migrations(tmp_path, files):
    directory = tmp_path / 'releases' / 'r1' / 'migrations'
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (directory / name).write_text(text)
    return str(directory)


def spec(tmp_path, db, files=None, **extra):
    out = {'kind': 'database', 'engine': 'sqlite', 'database': db, 'backup_dir': str(tmp_path / 'backups'),
           'run_id': 'run-1', 'migrations': migrations(tmp_path, files or FIRST)}
    out.update(extra)
    return out


def opened(tmp_path):
    p = params(tmp_path)
    engine.open_phase(p, _run)
    return p


def query(db, sql):
    conn = sqlite3.connect(db)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def tables(db):
    return [r[0] for r in query(db, "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY 1")]


def layers(p):
    return DeployState(p['state_dir'], 'app').read_journal().get('layers') or []


def test_a_missing_file_without_create_is_refused_before_anything_changes_naming_the_option(tmp_path):
    p = opened(tmp_path)
    db = str(tmp_path / 'data' / 'app.db')
    os.mkdir(str(tmp_path / 'data'))
    with pytest.raises(FailsafeError) as err:
        engine.apply_phase(dict(p, layer=spec(tmp_path, db)), _run)
    assert 'cannot reach the SQLite database %s: no such file' % db in err.value.msg
    assert 'failsafe_migrate_create' in err.value.msg and 'create: true' in err.value.msg
    assert os.listdir(str(tmp_path / 'data')) == [], 'no database, journal or lock file made'
    assert not os.path.exists(str(tmp_path / 'backups'))
    assert layers(p) == []


def test_create_makes_an_empty_database_records_it_in_the_journal_and_migrates(tmp_path):
    p = opened(tmp_path)
    db = str(tmp_path / 'app.db')
    res = engine.apply_phase(dict(p, layer=spec(tmp_path, db, create=True)), _run)
    assert res['changed'] and res['created'] == db and res['applied'] == ['0001', '0002']
    assert res['msg'].startswith('created the SQLite database %s (it did not exist); migrated' % db)
    with open(db, 'rb') as handle:
        assert handle.read(16) == b'SQLite format 3\x00'
    assert tables(db) == ['failsafe_migrations', 'items', 'tags']
    assert [r[0] for r in query(db, 'SELECT version FROM failsafe_migrations ORDER BY 1')] == ['0001', '0002']
    # the journal says the deploy created it, and which file it is
    entry = [e for e in layers(p) if e['kind'] == 'database'][0]
    made = entry['record']['created']
    st = os.stat(db)
    assert (made['path'], made['device'], made['inode']) == (db, st.st_dev, st.st_ino)
    assert entry['record']['before'] == [] and 'backup' not in entry['record']
    assert db + '.failsafe-lock' in made['siblings']


def test_the_rollback_removes_the_file_it_created_and_proves_it_gone(tmp_path):
    p = opened(tmp_path)
    db = str(tmp_path / 'app.db')
    engine.apply_phase(dict(p, layer=spec(tmp_path, db, create=True)), _run)
    assert os.path.exists(db + '.failsafe-lock')
    out = engine.rollback(p, _run)
    assert out['failsafe_rollback']['verified']
    entry = out['failsafe_rollback']['layers'][0]
    assert entry['kind'] == 'database' and entry['method'] == 'remove' and entry['data_loss'] is False
    assert entry['removed'] == [db, db + '.failsafe-lock']
    assert entry['undid'] == 'database %s removed (this deploy created it)' % db
    assert 'database %s removed (this deploy created it)' % db in out['msg']
    assert not os.path.lexists(db) and not os.path.lexists(db + '.failsafe-lock')
    assert sorted(os.listdir(str(tmp_path))) == ['backups', 'releases', 'state']
    assert DeployState(p['state_dir'], 'app').read_journal()['status'] == 'rolled_back'


def test_a_migration_failing_on_the_created_database_is_rolled_back_to_no_file(tmp_path):
    p = opened(tmp_path)
    db = str(tmp_path / 'app.db')
    with pytest.raises(FailsafeError, match='migration 0002 failed'):
        engine.apply_phase(dict(p, layer=spec(tmp_path, db, HALF, create=True)), _run)
    assert tables(db) == ['failsafe_migrations', 'items']
    out = engine.rollback(p, _run)
    assert out['failsafe_rollback']['layers'][0]['method'] == 'remove'
    assert not os.path.lexists(db)


def test_rows_written_into_the_created_database_since_refuse_its_removal_unless_allowed(tmp_path):
    p = opened(tmp_path)
    db = str(tmp_path / 'app.db')
    engine.apply_phase(dict(p, layer=spec(tmp_path, db, create=True)), _run)
    conn = sqlite3.connect(db)
    conn.execute("INSERT INTO items VALUES (1, 'written by the new release')")
    conn.commit()
    conn.close()
    with pytest.raises(FailsafeError) as err:
        engine.rollback(p, _run)
    assert 'removing the SQLite database %s, which this deploy created, would drop the writes' % db in err.value.msg
    assert 'tables changed: items' in err.value.msg     # not tags: the migration wrote its row
    assert query(db, 'SELECT count(*) FROM items') == [(1,)]
    assert DeployState(p['state_dir'], 'app').read_journal()['status'] == 'rollback_failed'
    out = engine.rollback(dict(p, layer_secrets={'database': {'allow_data_loss': True}}), _run)
    entry = out['failsafe_rollback']['layers'][0]
    assert entry['method'] == 'remove' and entry['data_loss'] is True and entry['dropped_writes_in'] == ['items']
    assert entry['undid'] == 'database %s removed (this deploy created it) (writes dropped in items)' % db
    assert not os.path.lexists(db)


def test_a_file_that_took_the_place_of_the_created_one_is_left_as_it_is(tmp_path):
    p = opened(tmp_path)
    db = str(tmp_path / 'app.db')
    engine.apply_phase(dict(p, layer=spec(tmp_path, db, create=True)), _run)
    # another database put in its place (made first, then renamed over it: a new inode)
    other = str(tmp_path / 'other.db')
    conn = sqlite3.connect(other)
    conn.execute('CREATE TABLE other (id INTEGER)')
    conn.commit()
    conn.close()
    os.rename(other, db)
    out = engine.rollback(p, _run)
    entry = out['failsafe_rollback']['layers'][0]
    assert entry['method'] == 'kept' and entry['removed'] == []
    assert 'left as it is' in entry['undid']
    assert tables(db) == ['other']


def test_an_existing_file_is_never_touched_by_create(tmp_path):
    p = opened(tmp_path)
    db = str(tmp_path / 'app.db')
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE keep (id INTEGER PRIMARY KEY)")
    conn.execute("INSERT INTO keep VALUES (7)")
    conn.commit()
    conn.close()
    inode = os.stat(db).st_ino
    res = engine.apply_phase(dict(p, layer=spec(tmp_path, db, create=True)), _run)
    assert 'created' not in res and not res['msg'].startswith('created')
    record = [e for e in layers(p) if e['kind'] == 'database'][0]['record']
    assert 'created' not in record and record['backup']['method'] == 'backup'
    out = engine.rollback(p, _run)
    assert out['failsafe_rollback']['layers'][0]['method'] == 'reverse migrations'
    assert os.stat(db).st_ino == inode and tables(db) == ['failsafe_migrations', 'keep']
    assert query(db, 'SELECT id FROM keep') == [(7,)]


def test_a_missing_directory_is_refused_before_anything_changes(tmp_path):
    p = opened(tmp_path)
    db = str(tmp_path / 'no-such-dir' / 'app.db')
    with pytest.raises(FailsafeError) as err:
        engine.apply_phase(dict(p, layer=spec(tmp_path, db, create=True)), _run)
    assert 'neither does its directory %s' % (tmp_path / 'no-such-dir') in err.value.msg
    assert 'not its directory' in err.value.msg
    assert not os.path.exists(str(tmp_path / 'no-such-dir'))
    assert not os.path.exists(str(tmp_path / 'backups'))
    assert layers(p) == []


def test_a_pending_migration_without_a_down_step_is_refused_before_the_file_is_created(tmp_path):
    p = opened(tmp_path)
    db = str(tmp_path / 'app.db')
    files = dict((k, v) for k, v in FIRST.items() if k != '0002_tags.down.sql')
    with pytest.raises(FailsafeError, match='no down step'):
        engine.apply_phase(dict(p, layer=spec(tmp_path, db, files, create=True)), _run)
    assert not os.path.lexists(db) and layers(p) == []


def test_check_mode_says_it_would_create_the_file_and_creates_nothing(tmp_path):
    p = opened(tmp_path)
    db = str(tmp_path / 'app.db')
    res = engine.apply_phase(dict(p, layer=spec(tmp_path, db, create=True)), _run, check_mode=True)
    assert res['changed'] and res['creates'] == db
    assert res['msg'] == ('check mode: would create the SQLite database %s (it does not exist yet) and run '
                          '0001_items, 0002_tags' % db)
    assert 'CREATE TABLE items' in res['sql'] and 'CREATE TABLE tags' in res['sql']
    assert res['diff']['before_header'] == '%s (does not exist)' % db and res['diff']['after'] == res['sql']
    # a check run of a deploy has no staged release: it still says it would create the file
    missing = dict(spec(tmp_path, db, create=True), migrations=str(tmp_path / 'releases' / 'r9' / 'migrations'))
    res = engine.apply_phase(dict(p, layer=missing), _run, check_mode=True)
    assert res['changed'] and res['creates'] == db and 'would create the SQLite database %s' % db in res['msg']
    assert not os.path.lexists(db) and not os.path.lexists(db + '.failsafe-lock')
    assert not os.path.exists(str(tmp_path / 'backups')) and layers(p) == []
    # without create, a check run refuses the missing file as a real run would
    with pytest.raises(FailsafeError, match='no such file'):
        engine.apply_phase(dict(p, layer=spec(tmp_path, str(tmp_path / 'other.db'), create=False)), _run,
                           check_mode=True)


def test_create_applies_to_sqlite_only():
    for name in ('postgresql', 'mariadb'):
        with pytest.raises(LayerError, match='create applies to SQLite only'):
            DatabaseLayer({'engine': name, 'database': 'shop', 'migrations': '/m', 'create': True}, _run)
    DatabaseLayer({'engine': 'postgresql', 'database': 'shop', 'migrations': '/m', 'create': False}, _run)


def test_the_words_of_a_removed_and_of_a_kept_database():
    assert layer_words({'kind': 'database', 'database': '/srv/db/app.db', 'method': 'remove'}) == \
        'database /srv/db/app.db removed (this deploy created it)'
    assert layer_words({'kind': 'database', 'database': 'a.db', 'method': 'kept'}) == \
        'database a.db left as it is (another file took the place of the one this deploy created)'
