# -*- coding: utf-8 -*-
# Copyright: Contributors to failsafe.deploy
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The database layer on real engines: a private PostgreSQL 15 cluster, a private MariaDB server and SQLite files,
through the transaction engine's apply phase and staged rollback (the same calls the transaction module makes).

A migration failing half way leaves the schema as before (PostgreSQL, SQLite) or is undone by its down step
(MariaDB); the rollback runs the down steps of the release being abandoned and keeps the rows written since the
deploy; a restore that would drop such rows is refused unless the data loss is allowed; bad input is refused before
anything changes. PostgreSQL and MariaDB need root (their servers run as their own OS users)."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import fcntl
import os
import sqlite3
import subprocess
import time

import pytest

from ansible_collections.failsafe.deploy.plugins.module_utils import _engine as engine
from ansible_collections.failsafe.deploy.plugins.module_utils import kinds  # noqa: F401  # pylint: disable=unused-import
from ansible_collections.failsafe.deploy.plugins.module_utils._errors import FailsafeError
from ansible_collections.failsafe.deploy.plugins.module_utils._journal import DeployState

from ansible_collections.failsafe.deploy.tests import dbservers
from ansible_collections.failsafe.deploy.tests.requires import require, require_root


# The servers are shared by the tests of a test process (started by the first test that needs one, stopped when the
# session ends: tests/unit/conftest.py); each test makes a database of its own in them (Db, createdb).
@pytest.fixture
def pg():
    require_root('PostgreSQL tests need root (the cluster runs as the postgres OS user)')
    if not dbservers.pg_bin():
        error = dbservers.ensure_prereqs()
        require(dbservers.pg_bin(), 'no PostgreSQL binaries (/usr/lib/postgresql/*/bin/initdb) after '
                'scripts/db-prereqs.sh: %s' % error)
    return dbservers.shared('postgres')


@pytest.fixture
def maria():
    require_root('MariaDB tests need root (the server runs as the mysql OS user)')
    error = dbservers.ensure_prereqs()
    if error:
        pytest.fail('scripts/db-prereqs.sh failed: %s' % error)
    return dbservers.shared('mariadb')


class Db(object):
    """One engine's database under test: options for the layer, and SQL to seed and read it."""

    def __init__(self, engine_name, server, tmp_path, name):
        self.engine = engine_name
        self.server = server
        self.tmp = tmp_path
        if engine_name == 'sqlite':
            self.path = str(tmp_path / ('%s.db' % name))
            sqlite3.connect(self.path).close()
            self.opts = {'engine': 'sqlite', 'database': self.path}
        else:
            server.createdb(name)
            self.name = name
            self.opts = server.options(name)

    def sql(self, text):
        if self.engine == 'sqlite':
            conn = sqlite3.connect(self.path, isolation_level=None)
            try:
                rows = []
                for statement in [s for s in text.split(';') if s.strip()]:
                    rows = conn.execute(statement).fetchall()
                return '\n'.join('|'.join(str(v) for v in row) for row in rows)
            finally:
                conn.close()
        if self.engine == 'postgresql':
            return self.server.psql(text, self.name)
        return self.server.sql(text, self.name).replace('\t', '|')

    def server_sql(self, text):
        """A query about the server (its locks, its sessions) answered by the server's own database."""
        return self.server.psql(text) if self.engine == 'postgresql' else self.server.sql(text)

    def tables(self):
        if self.engine == 'sqlite':
            q = "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY 1"
        elif self.engine == 'postgresql':
            q = "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1"
        else:
            q = 'SELECT table_name FROM information_schema.tables WHERE table_schema = DATABASE() ORDER BY 1'
        return [t for t in self.sql(q).splitlines() if t and t != 'failsafe_migrations']

    def columns(self, table):
        if self.engine == 'sqlite':
            return [r.split('|')[1] for r in self.sql('PRAGMA table_info(%s)' % table).splitlines()]
        q = ("SELECT column_name FROM information_schema.columns WHERE table_name = '%s' AND table_schema = %s "
             'ORDER BY ordinal_position' % (table, "'public'" if self.engine == 'postgresql' else 'DATABASE()'))
        return self.sql(q).splitlines()


@pytest.fixture(params=['postgresql', 'mariadb', 'sqlite'])
def db(request, tmp_path):
    server = request.getfixturevalue({'postgresql': 'pg', 'mariadb': 'maria'}[request.param]) \
        if request.param != 'sqlite' else None
    name = 'app_%s' % request.node.name.split('[')[0][-20:].replace('-', '_')
    d = Db(request.param, server, tmp_path, name)
    d.sql('CREATE TABLE items (id INTEGER PRIMARY KEY, name VARCHAR(40) NOT NULL)')
    d.sql("INSERT INTO items (id, name) VALUES (1, 'one'), (2, 'two')")
    return d


def release(tmp_path, rid, migrations):
    """A release directory with its migrations: {file name: SQL}."""
    directory = tmp_path / 'releases' / rid / 'migrations'
    directory.mkdir(parents=True)
    for name, text in migrations.items():
        (directory / name).write_text(text)
    return str(directory)


GOOD = {
    '0001_note.up.sql': 'ALTER TABLE items ADD COLUMN note VARCHAR(80);',
    '0001_note.down.sql': 'ALTER TABLE items DROP COLUMN note;',
    '0002_tags.up.sql': 'CREATE TABLE tags (id INTEGER PRIMARY KEY, label VARCHAR(20));\n'
                        "INSERT INTO tags (id, label) VALUES (1, 'x');",
    '0002_tags.down.sql': 'DROP TABLE tags;',
}

# 0002 fails half way: its table is created, then an insert into a table that does not exist
HALF = dict(GOOD)
HALF['0002_tags.up.sql'] = ('CREATE TABLE tags (id INTEGER PRIMARY KEY, label VARCHAR(20));\n'
                            "INSERT INTO no_such_table (id) VALUES (1);")
HALF['0002_tags.down.sql'] = 'DROP TABLE IF EXISTS tags;'


def params(tmp_path, run_id='run-1'):
    return {'state_dir': str(tmp_path / 'state'), 'name': 'app', 'run_id': run_id, 'owner': 'ops@ctl',
            'controller': 'ctl', 'pid': 1, 'ttl': 600, 'recover': True, 'service': {'manager': 'none'}}


def layer(db, migrations, **extra):
    spec = dict(db.opts, kind='database', migrations=migrations, backup_dir=str(db.tmp / 'backups'), run_id='run-1')
    spec.update(extra)
    return spec


def _run(argv):
    return 0, '', ''


def _open(p):
    engine.open_phase(p, _run)


def test_a_migration_failing_half_way_leaves_nothing_and_the_rollback_restores_the_schema(db):
    p = params(db.tmp)
    _open(p)
    schema_before = {'items': db.columns('items'), 'tables': db.tables()}
    with pytest.raises(FailsafeError) as err:
        engine.apply_phase(dict(p, layer=layer(db, release(db.tmp, 'r2', HALF))), _run)
    assert 'migration 0002 failed' in err.value.msg
    # 0001 went in and is recorded; 0002 left nothing: rolled back (PostgreSQL, SQLite) or undone by its down step
    assert db.columns('items') == ['id', 'name', 'note']
    assert 'tags' not in db.tables()
    assert db.sql('SELECT version FROM failsafe_migrations').splitlines() == ['0001']
    if db.engine == 'mariadb':
        assert 'its down step undid' in err.value.msg
    else:
        assert 'transaction rolled back' in err.value.msg
    out = engine.rollback(p, _run)
    assert out['failsafe_rollback']['verified']
    assert {'items': db.columns('items'), 'tables': db.tables()} == schema_before
    assert db.sql('SELECT count(*) FROM failsafe_migrations') == '0'
    assert db.sql('SELECT id, name FROM items ORDER BY id').splitlines() == ['1|one', '2|two']
    assert DeployState(p['state_dir'], 'app').read_journal()['status'] == 'rolled_back'


def test_the_rollback_runs_the_down_steps_of_the_abandoned_release_and_keeps_rows_written_since(db):
    p = params(db.tmp)
    _open(p)
    res = engine.apply_phase(dict(p, layer=layer(db, release(db.tmp, 'r2', GOOD))), _run)
    assert res['changed'] and res['applied'] == ['0001', '0002']
    assert res['failsafe_layer_stages'] == ['database']
    assert db.columns('items') == ['id', 'name', 'note']
    rows = db.sql('SELECT version, checksum FROM failsafe_migrations ORDER BY version').splitlines()
    assert [r.split('|')[0] for r in rows] == ['0001', '0002'] and all(len(r.split('|')[1]) == 64 for r in rows)
    # the new release serves: rows written after the migration
    db.sql("INSERT INTO items (id, name, note) VALUES (3, 'three', 'new')")
    out = engine.rollback(p, _run)
    entry = out['failsafe_rollback']['layers'][0]
    assert entry['kind'] == 'database' and entry['method'] == 'reverse migrations'
    assert entry['reverted'] == ['0002', '0001']
    assert db.columns('items') == ['id', 'name'] and 'tags' not in db.tables()
    assert db.sql('SELECT id, name FROM items ORDER BY id').splitlines() == ['1|one', '2|two', '3|three']


def test_a_restore_that_would_drop_rows_written_since_is_refused_unless_allowed(db):
    p = params(db.tmp)
    _open(p)
    migrations = release(db.tmp, 'r2', {'0001_note.up.sql': GOOD['0001_note.up.sql']})
    with pytest.raises(FailsafeError, match='no down step'):
        engine.apply_phase(dict(p, layer=layer(db, migrations)), _run)
    assert db.columns('items') == ['id', 'name']          # refused before anything changed
    engine.apply_phase(dict(p, layer=layer(db, migrations, restore_only=['0001'])), _run)
    assert db.columns('items') == ['id', 'name', 'note']
    db.sql("INSERT INTO items (id, name) VALUES (3, 'three')")
    with pytest.raises(FailsafeError) as err:
        engine.rollback(p, _run)
    assert 'ROLLBACK FAILED at undo the database layer' in err.value.msg
    assert 'would drop the writes made since the deploy' in err.value.msg and 'items' in err.value.msg
    assert db.sql('SELECT count(*) FROM items') == '3'    # nothing dropped
    journal = DeployState(p['state_dir'], 'app').read_journal()
    assert journal['status'] == 'rollback_failed'
    out = engine.rollback(dict(p, layer_secrets={'database': {'allow_data_loss': True}}), _run)
    entry = out['failsafe_rollback']['layers'][0]
    assert entry['method'] == 'restore' and entry['data_loss'] is True
    assert [t.split('.')[-1] for t in entry['dropped_writes_in']] == ['items']
    assert db.columns('items') == ['id', 'name']
    assert db.sql('SELECT id, name FROM items ORDER BY id').splitlines() == ['1|one', '2|two']


def test_a_restore_with_no_writes_since_needs_no_permission(db):
    p = params(db.tmp)
    _open(p)
    migrations = release(db.tmp, 'r2', {'0001_note.up.sql': GOOD['0001_note.up.sql']})
    engine.apply_phase(dict(p, layer=layer(db, migrations, restore_only=['0001'])), _run)
    entry = engine.rollback(p, _run)['failsafe_rollback']['layers'][0]
    assert entry['method'] == 'restore' and entry['data_loss'] is False
    assert db.columns('items') == ['id', 'name']
    assert db.sql('SELECT count(*) FROM items') == '2'


def test_bad_input_is_refused_before_anything_changes(db):
    p = params(db.tmp)
    _open(p)
    first = release(db.tmp, 'r2', {k: v for k, v in GOOD.items() if k.startswith('0001')})
    engine.apply_phase(dict(p, layer=layer(db, first)), _run)
    # a file changed after it was applied
    changed = release(db.tmp, 'r3', dict(GOOD, **{'0001_note.up.sql': 'ALTER TABLE items ADD COLUMN note TEXT;'}))
    p3 = dict(params(db.tmp, 'run-3'), state_dir=str(db.tmp / 'state3'))
    _open(p3)
    with pytest.raises(FailsafeError, match='changed after they were applied: 0001'):
        engine.apply_phase(dict(p3, layer=layer(db, changed, run_id='run-3')), _run)
    assert 'tags' not in db.tables()
    assert not os.path.exists(str(db.tmp / 'backups' / 'run_3'))
    assert not DeployState(p3['state_dir'], 'app').read_journal().get('layers')
    # a database that cannot be reached
    opts = dict(db.opts)
    opts['database'] = str(db.tmp / 'missing.db') if db.engine == 'sqlite' else 'no_such_db'
    with pytest.raises(FailsafeError, match='cannot reach'):
        engine.apply_phase(dict(p3, layer=dict(layer(db, first, run_id='run-3'), **opts)), _run)


def test_check_mode_shows_the_sql_and_changes_nothing(db):
    p = params(db.tmp)
    _open(p)
    res = engine.apply_phase(dict(p, layer=layer(db, release(db.tmp, 'r2', GOOD))), _run, check_mode=True)
    assert res['changed'] and 'ALTER TABLE items ADD COLUMN note' in res['sql'] and 'CREATE TABLE tags' in res['sql']
    assert db.columns('items') == ['id', 'name'] and db.tables() == ['items']
    assert not os.path.exists(str(db.tmp / 'backups'))
    # a check run of a deploy does not stage the release: the plan says so instead of failing
    res = engine.apply_phase(dict(p, layer=layer(db, str(db.tmp / 'releases' / 'r9' / 'migrations'))), _run,
                             check_mode=True)
    assert res['changed'] and 'not on the host yet' in res['msg'] and res['sql'] is None


def test_a_second_run_holding_the_lock_is_refused(db, tmp_path):
    p = params(db.tmp)
    _open(p)
    holder = None
    if db.engine == 'sqlite':
        handle = open(db.path + '.failsafe-lock', 'a')
        fcntl.flock(handle, fcntl.LOCK_EX)
    elif db.engine == 'postgresql':
        holder = subprocess.Popen([os.path.join(db.server.bin, 'psql'), '-X', '-h', db.server.base, '-p',
                                   str(db.server.port), '-U', 'postgres', '-d', db.name, '-c',
                                   "SELECT pg_advisory_lock(hashtext('failsafe.deploy migrations')), pg_sleep(60)"])
    else:
        holder = subprocess.Popen(['mariadb', '--no-defaults', '--socket=%s' % db.server.socket, '--user=root',
                                   '-e', "SELECT GET_LOCK('failsafe.deploy:%s', 0), SLEEP(60)" % db.name])
    try:
        if holder is not None:
            # the second run must start only once the holder has the lock: waited for, not slept for (a loaded
            # machine may take seconds to start the client)
            if db.engine == 'postgresql':
                held = ("SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database "
                        "WHERE l.locktype = 'advisory' AND l.granted AND d.datname = '%s'" % db.name)
            else:
                held = "SELECT IS_USED_LOCK('failsafe.deploy:%s') IS NOT NULL" % db.name
            deadline = time.monotonic() + 60
            while db.server_sql(held) in ('0', ''):
                assert holder.poll() is None, 'the lock holder exited'
                assert time.monotonic() < deadline, 'the lock holder never took the lock'
                time.sleep(0.1)
        with pytest.raises(FailsafeError, match='another migration run holds the lock'):
            engine.apply_phase(dict(p, layer=layer(db, release(db.tmp, 'r2', GOOD), backup='none')), _run)
        assert db.columns('items') == ['id', 'name']
    finally:
        if holder is not None:
            holder.kill()
            holder.wait()
        else:
            handle.close()


def test_a_backup_that_would_not_fit_is_refused(tmp_path):
    require_root('mounting a small tmpfs needs root')
    mnt = tmp_path / 'small'
    mnt.mkdir()
    mounted = subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=256k', 'tmpfs', str(mnt)], check=False)
    require(mounted.returncode == 0, 'cannot mount a tmpfs here')
    try:
        path = str(tmp_path / 'big.db')
        conn = sqlite3.connect(path)
        conn.execute('CREATE TABLE blob (data BLOB)')
        conn.executemany('INSERT INTO blob VALUES (?)', [(os.urandom(4096),) for dummy in range(200)])
        conn.commit()
        conn.close()
        p = params(tmp_path)
        _open(p)
        spec = {'kind': 'database', 'engine': 'sqlite', 'database': path, 'run_id': 'run-1',
                'migrations': release(tmp_path, 'r2', GOOD), 'backup_dir': str(mnt / 'backups')}
        conn = sqlite3.connect(path)
        conn.execute('CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT)')
        conn.close()
        with pytest.raises(FailsafeError, match='would not fit on the disk'):
            engine.apply_phase(dict(p, layer=spec), _run)
        assert os.listdir(str(mnt)) == []
        conn = sqlite3.connect(path)
        assert [r[1] for r in conn.execute('PRAGMA table_info(items)')] == ['id', 'name']
        conn.close()
    finally:
        subprocess.run(['umount', str(mnt)], check=False)


def test_postgresql_copies_by_template_when_nothing_is_connected_and_dumps_otherwise(pg, tmp_path):
    d = Db('postgresql', pg, tmp_path, 'app_methods')
    d.sql('CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT)')
    d.sql("INSERT INTO items SELECT g, 'n' || g FROM generate_series(1, 1000) g")
    p = params(tmp_path)
    _open(p)
    migrations = release(tmp_path, 'r2', {'0001_note.up.sql': GOOD['0001_note.up.sql']})
    res = engine.apply_phase(dict(p, layer=layer(d, migrations, restore_only=['0001'])), _run)
    backup = res['record']['backup']
    assert backup['method'] == 'template'
    assert pg.psql("SELECT count(*) FROM items", backup['database']) == '1000'
    engine.rollback(p, _run)
    assert d.columns('items') == ['id', 'name'] and d.sql('SELECT count(*) FROM items') == '1000'
    # with a client connected to the source, the template copy cannot run: pg_dump -Fd -j
    p2 = dict(params(tmp_path, 'run-2'), state_dir=str(tmp_path / 'state2'))
    _open(p2)
    client = subprocess.Popen([os.path.join(pg.bin, 'psql'), '-X', '-h', pg.base, '-p', str(pg.port), '-U',
                               'postgres', '-d', 'app_methods', '-c', 'SELECT pg_sleep(60)'])
    try:
        # the copy must start only once the client is connected: waited for, not slept for (a loaded machine may
        # take seconds to start psql)
        deadline = time.monotonic() + 60
        while pg.psql("SELECT count(*) FROM pg_stat_activity WHERE datname = 'app_methods' AND pid <> "
                      "pg_backend_pid()") == '0':
            assert time.monotonic() < deadline, 'the psql client never connected'
            time.sleep(0.2)
        res = engine.apply_phase(dict(p2, layer=layer(d, migrations, restore_only=['0001'], run_id='run-2')), _run)
    finally:
        client.kill()
        client.wait()
    backup = res['record']['backup']
    assert backup['method'] == 'dump' and os.path.isfile(os.path.join(backup['path'], 'toc.dat'))
    engine.rollback(p2, _run)
    assert d.columns('items') == ['id', 'name'] and d.sql('SELECT count(*) FROM items') == '1000'


def test_only_the_newest_backup_is_kept(db):
    migrations = release(db.tmp, 'r2', {'0001_note.up.sql': GOOD['0001_note.up.sql']})
    backups = str(db.tmp / 'backups')
    records = []
    for n in (1, 2, 3):
        p = dict(params(db.tmp, 'run-%d' % n), state_dir=str(db.tmp / ('state%d' % n)))
        _open(p)
        res = engine.apply_phase(dict(p, layer=layer(db, migrations, restore_only=['0001'], run_id='run-%d' % n)),
                                 _run)
        records.append(res['record'])
    assert sorted(os.listdir(backups)) == ['run_3']
    assert records[1]['pruned'] == ['run_1'] and records[2]['pruned'] == ['run_2']
    if db.engine == 'postgresql':
        copies = db.server.psql("SELECT datname FROM pg_database WHERE starts_with(datname, '%s__failsafe_') "
                                'ORDER BY 1' % db.name).splitlines()
        assert copies == ['%s__failsafe_run_3' % db.name]


def test_mariadb_a_failed_migration_whose_down_step_fails_too_is_undone_by_the_backup(maria, tmp_path):
    d = Db('mariadb', maria, tmp_path, 'app_partial')
    d.sql('CREATE TABLE items (id INTEGER PRIMARY KEY, name VARCHAR(40) NOT NULL)')
    d.sql("INSERT INTO items (id, name) VALUES (1, 'one'), (2, 'two')")
    broken = dict(HALF)
    broken['0002_tags.down.sql'] = 'INSERT INTO no_such_table (id) VALUES (1);\nDROP TABLE tags;'
    p = params(tmp_path)
    _open(p)
    with pytest.raises(FailsafeError) as err:
        engine.apply_phase(dict(p, layer=layer(d, release(tmp_path, 'r2', broken))), _run)
    assert 'its down step failed too' in err.value.msg
    assert 'tags' in d.tables()                                   # half applied: DDL committed as it went
    out = engine.rollback(p, _run)
    entry = out['failsafe_rollback']['layers'][0]
    assert entry['method'] == 'restore' and entry['data_loss'] is False
    assert d.tables() == ['items'] and d.columns('items') == ['id', 'name']
    assert d.sql('SELECT id, name FROM items ORDER BY id').splitlines() == ['1|one', '2|two']


def test_rows_written_while_the_migration_ran_also_count_as_writes_a_restore_would_drop(db):
    """The backup is taken before the migration: a row written into a table the migration did not alter, after the
    backup and before the migration ended (here by the migration itself, which the layer cannot tell from the old
    release writing meanwhile), would be lost by a restore, so the restore is refused."""
    p = params(db.tmp)
    _open(p)
    up = "CREATE TABLE tags (id INTEGER PRIMARY KEY);\nINSERT INTO items (id, name) VALUES (7, 'meanwhile');"
    migrations = release(db.tmp, 'r2', {'0001_tags.up.sql': up})
    engine.apply_phase(dict(p, layer=layer(db, migrations, restore_only=['0001'])), _run)
    with pytest.raises(FailsafeError) as err:
        engine.rollback(p, _run)
    assert 'would drop the writes made since the deploy' in err.value.msg and 'items' in err.value.msg
    assert 'tags' in db.tables() and db.sql('SELECT count(*) FROM items') == '3'
