# -*- coding: utf-8 -*-
# Private to this collection: not a public API.
# Copyright: Contributors to failsafe.deploy
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The ``database`` layer kind (rollback stage ``database``): a backup, then the release's migrations; undone by
the reverse migrations of the release being abandoned, or by the backup when the operator allows what it drops.

Engines: PostgreSQL (psql, pg_dump, pg_restore), MariaDB (mariadb, mariadb-dump) and SQLite (Python's sqlite3),
driven through their command-line clients so that the target needs nothing but the standard library. Tools:
``sql`` (plain versioned files ``NNNN_name.up.sql`` and ``NNNN_name.down.sql``, run by this module, recorded with
checksums in the table ``failsafe_migrations`` of the database), ``alembic`` and ``sqitch`` (through their own
commands, up to a revision and down to the revision recorded before the deploy).

- ``capture`` refuses bad input before anything changes (a database that cannot be reached, a pending migration
  without a down step unless it is accepted as restore-only, an applied migration whose file changed, a backup that
  would not fit on the disk), then takes the backup and records its checksums (schema and data, per table) and the
  revision before the deploy.
- ``apply`` migrates under a lock (a PostgreSQL advisory lock or a MariaDB GET_LOCK held by the one session that
  runs the migrations; a file lock for SQLite), each migration in a transaction where DDL is transactional
  (PostgreSQL, SQLite), so a failing one leaves nothing; on MariaDB a failed migration is undone by its down step.
  It then notes the per-table checksums of the migrated database next to the backup: the mark against which a
  rollback tells the writes made since the deploy.
- ``undo`` prefers the reverse migrations (they keep the rows written since the deploy), read from the migrations
  directory of the release being abandoned; it restores the backup only when a down step is missing (restore-only)
  or fails, and refuses to when tables changed since the migration (writes the restore would drop), unless
  ``allow_data_loss`` is set for this deploy: the report says so.
- ``verify`` proves the schema is the one before the deploy (and, after a restore, the data is the backup's).

SQLite with ``create``: a database file that does not exist is created empty by ``capture`` (its directory must
exist), after the checks, and the journal records it (path and identity); the migrations then run on it. ``undo``
removes that file (and the files SQLite and the lock made beside it), unless rows were written into it since the
migration (then only with ``allow_data_loss``), or another file took its place (left as it is). A file that exists
is never touched by the option.
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import errno
import fcntl
import glob
import hashlib
import json
import os
import re
import shutil
import sqlite3
import subprocess
import time

from ansible_collections.failsafe.deploy.plugins.module_utils._layers import Layer, LayerError, register

TABLE = 'failsafe_migrations'
MIGRATION_RE = re.compile(r'^(?P<version>[0-9]+)_(?P<name>[A-Za-z0-9_.-]+?)\.(?P<dir>up|down)\.sql$')
ENGINES = ('postgresql', 'mariadb', 'sqlite')
TOOLS = ('sql', 'alembic', 'sqitch')


def _sha256(data):
    if not isinstance(data, bytes):
        data = data.encode('utf-8')
    return hashlib.sha256(data).hexdigest()


def _read(path):
    with open(path, 'rb') as handle:
        return handle.read()


def _quote_ident(name, quote='"'):
    return quote + name.replace(quote, quote + quote) + quote


def _literal(value):
    return "'" + str(value).replace("'", "''") + "'"


def _tail(text, lines=6):
    return ' | '.join(text.strip().splitlines()[-lines:]) if text and text.strip() else ''


def _empty_state():
    """The state of an empty database (no table): what a database this deploy creates starts from."""
    return {'schema': _sha256(json.dumps([], sort_keys=True)), 'tables': {}, 'table_schemas': {}}


def _exec(argv, env=None, stdin=None, cwd=None):
    """Run a command: (rc, out, err), text; a missing program is rc 127 with a clear error."""
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                env=env, cwd=cwd)
        out, err = proc.communicate(stdin.encode('utf-8') if stdin is not None else None)
    except OSError as e:
        return 127, '', '%s: %s' % (argv[0], e.strerror)
    return proc.returncode, out.decode('utf-8', 'replace'), err.decode('utf-8', 'replace')


# --- plain SQL migrations -------------------------------------------------------------------------------------------

def read_migrations(directory):
    """The plain SQL migrations of a release: [{version, name, up, down, checksum, down_checksum}] by version."""
    if not directory or not os.path.isdir(directory):
        raise LayerError('the migrations directory %s does not exist' % directory, migrations=directory)
    found = {}
    for entry in sorted(os.listdir(directory)):
        m = MIGRATION_RE.match(entry)
        if not m:
            continue
        item = found.setdefault(m.group('version'), {'version': m.group('version'), 'name': m.group('name')})
        if item['name'] != m.group('name'):
            raise LayerError('migration %s has two names in %s: %s and %s'
                             % (m.group('version'), directory, item['name'], m.group('name')))
        item[m.group('dir')] = os.path.join(directory, entry)
    out = []
    for version in sorted(found, key=lambda v: (int(v), v)):
        item = found[version]
        if 'up' not in item:
            raise LayerError('migration %s_%s has a down step but no up step in %s'
                             % (version, item['name'], directory))
        item['checksum'] = _sha256(_read(item['up']))
        item['down_checksum'] = _sha256(_read(item['down'])) if 'down' in item else None
        out.append(item)
    return out


# --- engines --------------------------------------------------------------------------------------------------------

class Engine(object):
    """One database engine, reached through its command-line client. ``o`` are the layer's options."""

    name = None

    def __init__(self, o):
        self.o = o
        self.db = o.get('database')

    # connection, schema and data
    def ping(self):
        raise NotImplementedError

    def tables(self):
        raise NotImplementedError

    def schema(self):
        """A canonical description of the schema (list of rows), the migrations table left out."""
        raise NotImplementedError

    def table_sums(self, db=None):
        """{table: checksum of its rows}; the migrations table left out."""
        raise NotImplementedError

    def size(self):
        raise NotImplementedError

    def table_schemas(self, db=None):
        """{table: checksum of its columns}: tells a table the migration altered from one whose rows changed."""
        raise NotImplementedError

    def state(self, db=None):
        schema = self.schema_of(db)
        return {'schema': _sha256(json.dumps(schema, sort_keys=True)), 'tables': self.table_sums(db),
                'table_schemas': self.table_schemas(db)}

    def schema_of(self, db):
        return self.schema() if db is None else self.schema(db)

    # the migrations table
    def applied(self):
        """[{version, name, checksum}] recorded in the migrations table (empty without it)."""
        raise NotImplementedError


class Postgres(Engine):
    name = 'postgresql'

    def _bin(self, program):
        bin_dir = self.o.get('bin_dir')
        if bin_dir:
            return os.path.join(bin_dir, program)
        for candidate in sorted(glob.glob('/usr/lib/postgresql/*/bin/%s' % program), reverse=True):
            return candidate
        return program

    def _env(self):
        env = dict(os.environ, LC_ALL='C', PGCONNECT_TIMEOUT=str(self.o.get('connect_timeout') or 10))
        if self.o.get('password'):
            env['PGPASSWORD'] = self.o['password']
        return env

    def _conn(self):
        args = []
        if self.o.get('host'):
            args += ['-h', str(self.o['host'])]
        if self.o.get('port'):
            args += ['-p', str(self.o['port'])]
        if self.o.get('user'):
            args += ['-U', str(self.o['user'])]
        return args

    def psql(self, sql=None, db=None, script=None, extra=()):
        argv = [self._bin('psql'), '-X', '-q', '-A', '-t', '-v', 'ON_ERROR_STOP=1'] + self._conn()
        argv += ['-d', db or self.db] + list(extra)
        if script:
            argv += ['-f', script]
        return _exec(argv, env=self._env(), stdin=sql)

    def query(self, sql, db=None):
        rc, out, err = self.psql(sql, db=db)
        if rc != 0:
            raise LayerError('PostgreSQL database %s: %s' % (db or self.db, err.strip() or 'psql failed (rc %s)' % rc),
                             rc=rc)
        return out

    def ping(self):
        rc, out, err = self.psql('SELECT 1')
        if rc != 0:
            raise LayerError('cannot reach the PostgreSQL database %s%s: %s'
                             % (self.db, (' on %s' % self.o['host']) if self.o.get('host') else '',
                                err.strip() or 'psql rc %s' % rc), rc=rc)

    def tables(self, db=None):
        out = self.query("SELECT quote_ident(schemaname) || '.' || quote_ident(tablename) FROM pg_tables "
                         "WHERE schemaname NOT IN ('pg_catalog', 'information_schema') AND tablename <> '%s' "
                         'ORDER BY 1' % TABLE, db=db)
        return [line for line in out.splitlines() if line.strip()]

    def schema(self, db=None):
        sql = ("SELECT 'c', table_schema, table_name, column_name, data_type, is_nullable, "
               "coalesce(column_default, ''), ordinal_position::text FROM information_schema.columns "
               "WHERE table_schema NOT IN ('pg_catalog', 'information_schema') AND table_name <> '%s' "
               "UNION ALL SELECT 'i', schemaname, tablename, indexname, indexdef, '', '', '' FROM pg_indexes "
               "WHERE schemaname NOT IN ('pg_catalog', 'information_schema') AND tablename <> '%s' "
               "UNION ALL SELECT 'k', n.nspname, t.relname, c.conname, pg_get_constraintdef(c.oid), '', '', '' "
               "FROM pg_constraint c JOIN pg_class t ON t.oid = c.conrelid JOIN pg_namespace n ON n.oid = t.relnamespace "
               "WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND t.relname <> '%s' "
               "UNION ALL SELECT 'v', schemaname, viewname, definition, '', '', '', '' FROM pg_views "
               "WHERE schemaname NOT IN ('pg_catalog', 'information_schema') "
               "ORDER BY 1, 2, 3, 4" % (TABLE, TABLE, TABLE))
        # ordinal_position moves when a column is dropped and added back: the order of names is what counts
        rows = [line.split('|') for line in self.query(sql, db=db).splitlines() if line.strip()]
        return [row[:7] for row in rows]

    def table_sums(self, db=None):
        tables = self.tables(db)
        if not tables:
            return {}
        parts = ["SELECT %s, count(*)::text || ':' || coalesce(md5(string_agg(t::text, E'\\n' ORDER BY t::text)), '') "
                 'FROM %s t' % (_literal(name), name) for name in tables]
        out = self.query(' UNION ALL '.join(parts), db=db)
        return dict(line.split('|', 1) for line in out.splitlines() if line.strip())

    def table_schemas(self, db=None):
        out = self.query("SELECT quote_ident(table_schema) || '.' || quote_ident(table_name), md5(string_agg("
                         "column_name || ':' || data_type || ':' || is_nullable || ':' || coalesce(column_default, ''), "
                         "',' ORDER BY column_name)) FROM information_schema.columns "
                         "WHERE table_schema NOT IN ('pg_catalog', 'information_schema') AND table_name <> '%s' "
                         'GROUP BY 1' % TABLE, db=db)
        return dict(line.split('|', 1) for line in out.splitlines() if line.strip())

    def size(self):
        return int(self.query('SELECT pg_database_size(current_database())').strip())

    def data_directory(self):
        """The server's data directory when this host can see it (the server runs here), else None."""
        rc, out, err = self.psql('SHOW data_directory')
        path = out.strip() if rc == 0 else ''
        try:
            return path if path and os.path.isdir(path) else None
        except OSError:
            return None

    def exists(self, db):
        out = self.query('SELECT count(*) FROM pg_database WHERE datname = %s' % _literal(db), db='postgres')
        return out.strip() == '1'

    def others_connected(self, db):
        out = self.query('SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()'
                         % _literal(db), db='postgres')
        return int(out.strip() or 0)

    def applied(self):
        if self.query("SELECT to_regclass('public.%s') IS NOT NULL" % TABLE).strip() != 't':
            return []
        out = self.query('SELECT version, name, checksum FROM public.%s ORDER BY version' % TABLE)
        return [dict(zip(('version', 'name', 'checksum'), line.split('|'))) for line in out.splitlines()
                if line.strip()]

    # backup and restore
    def backup(self, where, method):
        """Copy the database: a template copy (nothing else connected) or pg_dump -Fd -j. Returns the backup."""
        if method in ('auto', 'template') and not self.others_connected(self.db):
            copy = '%s__failsafe_%s' % (self.db, where['tag'])
            copy = copy[:63]
            if self.exists(copy):
                self.query('DROP DATABASE %s' % _quote_ident(copy), db='postgres')
            rc, out, err = self.psql('CREATE DATABASE %s TEMPLATE %s STRATEGY FILE_COPY'
                                     % (_quote_ident(copy), _quote_ident(self.db)), db='postgres')
            if rc == 0:
                return {'method': 'template', 'database': copy}
            if method == 'template':
                raise LayerError('the template copy of %s failed: %s' % (self.db, err.strip()))
            # auto: a client connected meanwhile, or no right to create databases: pg_dump does the backup
        elif method == 'template':
            raise LayerError('backup=template needs no other connection to %s, and %d are open'
                             % (self.db, self.others_connected(self.db)))
        path = os.path.join(where['dir'], 'pg_dump')
        if os.path.exists(path):
            shutil.rmtree(path)
        argv = [self._bin('pg_dump'), '-Fd', '-j', str(self.o.get('jobs') or 2), '-f', path] + self._conn() + [self.db]
        rc, out, err = _exec(argv, env=self._env())
        if rc != 0:
            raise LayerError('pg_dump of %s failed (rc %s): %s' % (self.db, rc, err.strip()))
        return {'method': 'dump', 'path': path}

    def backup_state(self, backup):
        if backup['method'] == 'template':
            return self.state(backup['database'])
        return None

    def drop_backup(self, backup):
        if backup.get('method') == 'template' and self.exists(backup['database']):
            self.query('DROP DATABASE %s' % _quote_ident(backup['database']), db='postgres')
        elif backup.get('path') and os.path.isdir(backup['path']):
            shutil.rmtree(backup['path'])

    def restore(self, backup):
        if backup['method'] == 'template':
            # the copy takes the database's place (a rename: no data is copied twice). A restore cut short after
            # the rename finds no copy left, and the database with the backup's checksums.
            if not self.exists(backup['database']):
                if self.exists(self.db) and self.state() == backup.get('state'):
                    return
                raise LayerError('the backup copy %s of %s is gone' % (backup['database'], self.db))
            self.query('DROP DATABASE IF EXISTS %s WITH (FORCE)' % _quote_ident(self.db), db='postgres')
            self.query('ALTER DATABASE %s RENAME TO %s' % (_quote_ident(backup['database']), _quote_ident(self.db)),
                       db='postgres')
            return
        self.query('DROP DATABASE IF EXISTS %s WITH (FORCE)' % _quote_ident(self.db), db='postgres')
        self.query('CREATE DATABASE %s' % _quote_ident(self.db), db='postgres')
        argv = [self._bin('pg_restore'), '-j', str(self.o.get('jobs') or 2), '-d', self.db] + self._conn()
        rc, out, err = _exec(argv + [backup['path']], env=self._env())
        if rc != 0:
            raise LayerError('pg_restore of %s failed (rc %s): %s' % (self.db, rc, err.strip()))

    def run_migrations(self, steps, direction, run_id):
        """Run the steps in one psql session holding an advisory lock, each in its own transaction with its row in
        the migrations table. Returns (versions done, failed version or None, error)."""
        lines = ['\\set ON_ERROR_STOP 1',
                 "DO $$ BEGIN IF NOT pg_try_advisory_lock(hashtext('failsafe.deploy migrations')) THEN "
                 "RAISE EXCEPTION 'another migration run holds the lock of database %', current_database(); "
                 'END IF; END $$;',
                 'CREATE TABLE IF NOT EXISTS public.%s (version text PRIMARY KEY, name text NOT NULL, '
                 'checksum text NOT NULL, down_checksum text, applied_at timestamptz NOT NULL DEFAULT now(), '
                 'run_id text);' % TABLE]
        for step in steps:
            lines += ['\\echo failsafe-begin %s' % step['version'], 'BEGIN;', "\\i '%s'" % step[direction]]
            if direction == 'up':
                lines.append('INSERT INTO public.%s (version, name, checksum, down_checksum, run_id) '
                             'VALUES (%s, %s, %s, %s, %s);'
                             % (TABLE, _literal(step['version']), _literal(step['name']), _literal(step['checksum']),
                                _literal(step['down_checksum']) if step.get('down_checksum') else 'NULL',
                                _literal(run_id)))
            else:
                lines.append('DELETE FROM public.%s WHERE version = %s;' % (TABLE, _literal(step['version'])))
            lines += ['COMMIT;', '\\echo failsafe-done %s' % step['version']]
        rc, out, err = self.psql('\n'.join(lines) + '\n', extra=['-q'])
        return _markers(out, rc, err)


def _markers(out, rc, err):
    done = []
    began = None
    for line in out.splitlines():
        if line.startswith('failsafe-begin '):
            began = line.split(' ', 1)[1].strip()
        elif line.startswith('failsafe-done '):
            done.append(line.split(' ', 1)[1].strip())
            began = None
    if rc == 0:
        return done, None, None
    return done, began, err.strip() or out.strip() or 'rc %s' % rc


class MariaDB(Engine):
    name = 'mariadb'

    def _env(self):
        env = dict(os.environ, LC_ALL='C')
        if self.o.get('password'):
            env['MYSQL_PWD'] = self.o['password']
        return env

    def _conn(self, client=True):
        args = ['--connect-timeout=%s' % (self.o.get('connect_timeout') or 10)] if client else []
        host = str(self.o.get('host') or '')
        if host.startswith('/'):
            args.append('--socket=%s' % host)
        elif host:
            args.append('--host=%s' % host)
        if self.o.get('port'):
            args.append('--port=%s' % self.o['port'])
        if self.o.get('user'):
            args.append('--user=%s' % self.o['user'])
        return args

    def client(self, sql, db=None):
        argv = [self.o.get('client') or 'mariadb', '--no-defaults', '-N', '-B'] + self._conn()
        argv.append(db or self.db)
        return _exec(argv, env=self._env(), stdin=sql)

    def query(self, sql, db=None):
        rc, out, err = self.client(sql, db=db)
        if rc != 0:
            raise LayerError('MariaDB database %s: %s' % (db or self.db, err.strip() or 'rc %s' % rc), rc=rc)
        return out

    def ping(self):
        rc, out, err = self.client('SELECT 1')
        if rc != 0:
            raise LayerError('cannot reach the MariaDB database %s%s: %s'
                             % (self.db, (' on %s' % self.o['host']) if self.o.get('host') else '',
                                err.strip() or 'rc %s' % rc), rc=rc)

    def tables(self, db=None):
        out = self.query("SELECT table_name FROM information_schema.tables WHERE table_schema = DATABASE() "
                         "AND table_type = 'BASE TABLE' AND table_name <> '%s' ORDER BY 1" % TABLE, db=db)
        return [line for line in out.splitlines() if line.strip()]

    def schema(self, db=None):
        sql = ("SELECT 'c', table_name, column_name, column_type, is_nullable, coalesce(column_default, ''), "
               "column_key FROM information_schema.columns WHERE table_schema = DATABASE() AND table_name <> '%s' "
               "UNION ALL SELECT 'i', table_name, index_name, column_name, non_unique, seq_in_index, '' "
               "FROM information_schema.statistics WHERE table_schema = DATABASE() AND table_name <> '%s' "
               "ORDER BY 1, 2, 3, 4" % (TABLE, TABLE))
        return [line.split('\t') for line in self.query(sql, db=db).splitlines() if line.strip()]

    def table_sums(self, db=None):
        tables = self.tables(db)
        if not tables:
            return {}
        out = self.query('CHECKSUM TABLE %s EXTENDED' % ', '.join(_quote_ident(t, '`') for t in tables), db=db)
        sums = {}
        counts = self.query(' UNION ALL '.join("SELECT %s, count(*) FROM %s" % (_literal(t), _quote_ident(t, '`'))
                                               for t in tables), db=db)
        count_of = dict(line.split('\t', 1) for line in counts.splitlines() if line.strip())
        for line in out.splitlines():
            if line.strip():
                name, value = line.split('\t', 1)
                table = name.split('.', 1)[-1]
                sums[table] = '%s:%s' % (count_of.get(table, '?'), value)
        return sums

    def table_schemas(self, db=None):
        out = self.query("SELECT table_name, md5(group_concat(concat_ws(':', column_name, column_type, is_nullable, "
                         "coalesce(column_default, '')) ORDER BY column_name)) FROM information_schema.columns "
                         "WHERE table_schema = DATABASE() AND table_name <> '%s' GROUP BY table_name" % TABLE, db=db)
        return dict(line.split('\t', 1) for line in out.splitlines() if line.strip())

    def size(self):
        out = self.query('SELECT coalesce(sum(data_length + index_length), 0) FROM information_schema.tables '
                         'WHERE table_schema = DATABASE()')
        return int(out.strip() or 0)

    def applied(self):
        out = self.query("SELECT count(*) FROM information_schema.tables WHERE table_schema = DATABASE() "
                         "AND table_name = '%s'" % TABLE)
        if out.strip() != '1':
            return []
        out = self.query('SELECT version, name, checksum FROM %s ORDER BY version' % TABLE)
        return [dict(zip(('version', 'name', 'checksum'), line.split('\t'))) for line in out.splitlines()
                if line.strip()]

    def backup(self, where, method):
        path = os.path.join(where['dir'], 'mariadb-dump.sql')
        argv = [self.o.get('dump') or 'mariadb-dump', '--no-defaults', '--single-transaction', '--routines',
                '--triggers', '--events', '--result-file=%s' % path] + self._conn(False) + [self.db]
        rc, out, err = _exec(argv, env=self._env())
        if rc != 0:
            raise LayerError('mariadb-dump of %s failed (rc %s): %s' % (self.db, rc, err.strip()))
        return {'method': 'dump', 'path': path}

    def backup_state(self, backup):
        return None

    def drop_backup(self, backup):
        if backup.get('path') and os.path.exists(backup['path']):
            os.unlink(backup['path'])

    def restore(self, backup):
        self.query('DROP DATABASE IF EXISTS %s; CREATE DATABASE %s'
                   % (_quote_ident(self.db, '`'), _quote_ident(self.db, '`')), db='mysql')
        with open(backup['path']) as handle:
            sql = handle.read()
        self.query(sql)

    def run_migrations(self, steps, direction, run_id):
        """One session holding GET_LOCK; each step's statements, then its row. DDL commits as it goes."""
        lines = ['SELECT GET_LOCK(%s, 0) INTO @failsafe_lock;' % _literal('failsafe.deploy:%s' % self.db),
                 'DELIMITER //',
                 "IF @failsafe_lock IS NULL OR @failsafe_lock <> 1 THEN SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = "
                 "'another migration run holds the lock of this database'; END IF//",
                 'DELIMITER ;',
                 'CREATE TABLE IF NOT EXISTS %s (version VARCHAR(64) PRIMARY KEY, name VARCHAR(255) NOT NULL, '
                 'checksum CHAR(64) NOT NULL, down_checksum CHAR(64), applied_at TIMESTAMP NOT NULL DEFAULT '
                 'CURRENT_TIMESTAMP, run_id VARCHAR(255));' % TABLE]
        for step in steps:
            lines += ["SELECT 'failsafe-begin %s';" % step['version'], _read(step[direction]).decode('utf-8'), ';']
            if direction == 'up':
                lines.append('INSERT INTO %s (version, name, checksum, down_checksum, run_id) VALUES (%s, %s, %s, %s, %s);'
                             % (TABLE, _literal(step['version']), _literal(step['name']), _literal(step['checksum']),
                                _literal(step['down_checksum']) if step.get('down_checksum') else 'NULL',
                                _literal(run_id)))
            else:
                lines.append('DELETE FROM %s WHERE version = %s;' % (TABLE, _literal(step['version'])))
            lines.append("SELECT 'failsafe-done %s';" % step['version'])
        rc, out, err = self.client('\n'.join(lines) + '\n')
        return _markers(out, rc, err)


class SQLite(Engine):
    name = 'sqlite'
    # the files SQLite (its journals) and the migration lock keep beside the database
    SIBLINGS = ('-journal', '-wal', '-shm', '.failsafe-lock')

    def create(self):
        """Create an empty database where nothing is (O_EXCL: never a file that exists), with SQLite's header
        written. Returns its identity (device, inode): a rollback removes the file only while it is this one."""
        fd = os.open(self.db, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        os.close(fd)
        try:
            conn = self.connect()
            try:
                conn.execute('VACUUM')
            finally:
                conn.close()
        except sqlite3.Error as e:
            os.unlink(self.db)
            raise LayerError('cannot create the SQLite database %s: %s' % (self.db, e))
        st = os.stat(self.db)
        return st.st_dev, st.st_ino

    def connect(self, path=None):
        path = path or self.db
        conn = sqlite3.connect(path, timeout=float(self.o.get('connect_timeout') or 10), isolation_level=None)
        return conn

    def missing(self):
        """True when there is nothing at the database's path (what ``create`` may create)."""
        return not os.path.lexists(self.db)

    def ping(self):
        if not self.db or not os.path.isfile(self.db):
            raise LayerError('cannot reach the SQLite database %s: no such file. Create it (an empty file is an empty '
                             'SQLite database), or let the deploy create it (create: true; failsafe_migrate_create in '
                             'the migrate role)' % self.db)
        try:
            conn = self.connect()
            try:
                conn.execute('SELECT count(*) FROM sqlite_master').fetchall()
            finally:
                conn.close()
        except sqlite3.Error as e:
            raise LayerError('cannot reach the SQLite database %s: %s' % (self.db, e))

    def tables(self, db=None):
        conn = self.connect(db)
        try:
            return [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name <> ? "
                                               "AND name NOT LIKE 'sqlite_%' ORDER BY 1", (TABLE,))]
        finally:
            conn.close()

    def schema(self, db=None):
        conn = self.connect(db)
        try:
            rows = []
            for table in self.tables(db):
                for col in conn.execute('PRAGMA table_info(%s)' % _quote_ident(table)):
                    rows.append(['c', table] + [str(v) for v in col[1:]])
                for idx in conn.execute('PRAGMA index_list(%s)' % _quote_ident(table)):
                    cols = [str(c[2]) for c in conn.execute('PRAGMA index_info(%s)' % _quote_ident(idx[1]))]
                    rows.append(['i', table, idx[1], str(idx[2]), ','.join(cols)])
            for kind, name, sql in conn.execute("SELECT type, name, sql FROM sqlite_master WHERE type IN "
                                                "('view', 'trigger') ORDER BY 1, 2"):
                rows.append([kind, name, sql or ''])
            return rows
        finally:
            conn.close()

    def table_sums(self, db=None):
        conn = self.connect(db)
        try:
            sums = {}
            for table in self.tables(db):
                digest = hashlib.sha256()
                count = 0
                for row in conn.execute('SELECT * FROM %s ORDER BY 1' % _quote_ident(table)):
                    digest.update(repr(row).encode('utf-8'))
                    count += 1
                sums[table] = '%d:%s' % (count, digest.hexdigest())
            return sums
        finally:
            conn.close()

    def table_schemas(self, db=None):
        conn = self.connect(db)
        try:
            out = {}
            for table in self.tables(db):
                columns = conn.execute('PRAGMA table_info(%s)' % _quote_ident(table)).fetchall()
                out[table] = _sha256(repr(sorted(tuple(col[1:]) for col in columns)))
            return out
        finally:
            conn.close()

    def size(self):
        return os.path.getsize(self.db)

    def applied(self):
        if not os.path.exists(self.db):
            # a database the deploy is about to create: nothing applied (connecting would create the file)
            return []
        conn = self.connect()
        try:
            if not conn.execute("SELECT count(*) FROM sqlite_master WHERE name = ?", (TABLE,)).fetchone()[0]:
                return []
            return [{'version': r[0], 'name': r[1], 'checksum': r[2]}
                    for r in conn.execute('SELECT version, name, checksum FROM %s ORDER BY version' % TABLE)]
        finally:
            conn.close()

    def backup(self, where, method):
        path = os.path.join(where['dir'], 'sqlite.db')
        if os.path.exists(path):
            os.unlink(path)
        src = self.connect()
        dst = sqlite3.connect(path)
        try:
            src.backup(dst)
        finally:
            dst.close()
            src.close()
        return {'method': 'backup', 'path': path}

    def backup_state(self, backup):
        return self.state(backup['path'])

    def drop_backup(self, backup):
        if backup.get('path') and os.path.exists(backup['path']):
            os.unlink(backup['path'])

    def restore(self, backup):
        src = sqlite3.connect(backup['path'])
        dst = self.connect()
        try:
            src.backup(dst)
        finally:
            dst.close()
            src.close()

    def run_migrations(self, steps, direction, run_id):
        lock_path = self.db + '.failsafe-lock'
        handle = open(lock_path, 'a')
        try:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except (IOError, OSError) as e:
                if e.errno in (errno.EAGAIN, errno.EACCES):
                    return [], None, 'another migration run holds the lock %s' % lock_path
                raise
            conn = self.connect()
            done = []
            try:
                conn.execute('CREATE TABLE IF NOT EXISTS %s (version TEXT PRIMARY KEY, name TEXT NOT NULL, '
                             'checksum TEXT NOT NULL, down_checksum TEXT, applied_at TEXT NOT NULL '
                             "DEFAULT CURRENT_TIMESTAMP, run_id TEXT)" % TABLE)
                for step in steps:
                    sql = _read(step[direction]).decode('utf-8')
                    if direction == 'up':
                        down = _literal(step['down_checksum']) if step.get('down_checksum') else 'NULL'
                        values = (TABLE, _literal(step['version']), _literal(step['name']),
                                  _literal(step['checksum']), down, _literal(run_id))
                        row = ('INSERT INTO %s (version, name, checksum, down_checksum, run_id) VALUES '
                               '(%s, %s, %s, %s, %s);' % values)
                    else:
                        row = 'DELETE FROM %s WHERE version = %s;' % (TABLE, _literal(step['version']))
                    try:
                        conn.executescript('BEGIN;\n%s\n;\n%s\nCOMMIT;' % (sql, row))
                    except sqlite3.Error as e:
                        if conn.in_transaction:
                            conn.execute('ROLLBACK')
                        return done, step['version'], str(e)
                    done.append(step['version'])
            finally:
                conn.close()
            return done, None, None
        finally:
            handle.close()


ENGINE_CLASSES = {'postgresql': Postgres, 'mariadb': MariaDB, 'sqlite': SQLite}


# --- tools: alembic and sqitch --------------------------------------------------------------------------------------

class Tool(object):
    """A migration tool run through its own command in the release's migrations directory."""

    def __init__(self, o, directory):
        self.o = o
        self.dir = directory

    def _env(self):
        env = dict(os.environ, LC_ALL='C.UTF-8', LANG='C.UTF-8')
        env.update(dict((str(k), str(v)) for k, v in (self.o.get('environment') or {}).items()))
        if self.o.get('password'):
            env.setdefault('FAILSAFE_DATABASE_PASSWORD', self.o['password'])
        return env

    def cmd(self, argv, what):
        if not os.path.isdir(self.dir):
            raise LayerError('the migrations directory %s does not exist' % self.dir, migrations=self.dir)
        rc, out, err = _exec(argv, env=self._env(), cwd=self.dir)
        if rc != 0:
            raise LayerError('%s failed (rc %s): %s' % (what, rc, _tail(err) or _tail(out)), rc=rc, stdout=out,
                             stderr=err)
        return out


class Alembic(Tool):
    def _argv(self, *args):
        argv = [self.o.get('alembic') or 'alembic']
        if self.o.get('alembic_config'):
            argv += ['-c', self.o['alembic_config']]
        return argv + list(args)

    def current(self):
        out = self.cmd(self._argv('current'), 'alembic current')
        revs = [line.split()[0] for line in out.splitlines() if line.strip() and not line.startswith('INFO')]
        return revs[0] if revs else None

    def up(self, target):
        return self.cmd(self._argv('upgrade', target or 'head'), 'alembic upgrade %s' % (target or 'head'))

    def down(self, target):
        return self.cmd(self._argv('downgrade', target or 'base'), 'alembic downgrade %s' % (target or 'base'))

    def plan(self, current, target):
        return self.cmd(self._argv('upgrade', '%s:%s' % (current or 'base', target or 'head'), '--sql'),
                        'alembic upgrade --sql')


class Sqitch(Tool):
    def _argv(self, *args):
        argv = [self.o.get('sqitch') or 'sqitch'] + list(args)
        if self.o.get('sqitch_target') and args and args[0] in ('status', 'deploy', 'revert', 'verify'):
            argv += ['--target', self.o['sqitch_target']]
        return argv

    def current(self):
        rc, out, err = _exec(self._argv('status'), env=self._env(), cwd=self.dir)
        if rc != 0:
            if 'No changes deployed' in out + err:
                return None
            raise LayerError('sqitch status failed (rc %s): %s' % (rc, _tail(err) or _tail(out)), rc=rc)
        for line in out.splitlines():
            m = re.match(r'^#\s*Name:\s*(\S+)', line)
            if m:
                return m.group(1)
        return None

    def up(self, target):
        return self.cmd(self._argv('deploy', *(['--to', target] if target else [])),
                        'sqitch deploy%s' % (' --to %s' % target if target else ''))

    def down(self, target):
        if target:
            return self.cmd(self._argv('revert', '-y', '--to', target), 'sqitch revert --to %s' % target)
        return self.cmd(self._argv('revert', '-y'), 'sqitch revert')

    def plan(self, current, target):
        plan_file = os.path.join(self.dir, 'sqitch.plan')
        changes = []
        for line in _read(plan_file).decode('utf-8').splitlines():
            if line.strip() and not line.startswith(('%', '#', '@')):
                changes.append(line.split()[0])
        start = changes.index(current) + 1 if current in changes else 0
        end = changes.index(target) + 1 if target in changes else len(changes)
        text = []
        for change in changes[start:end]:
            path = os.path.join(self.dir, 'deploy', change + '.sql')
            text.append('-- %s\n%s' % (change, _read(path).decode('utf-8') if os.path.exists(path) else ''))
        return '\n'.join(text)


TOOL_CLASSES = {'alembic': Alembic, 'sqitch': Sqitch}


# --- the layer ------------------------------------------------------------------------------------------------------

@register
class DatabaseLayer(Layer):
    """The ``database`` layer kind. Options (the ``layer`` dict): ``engine``, ``database`` (a name, or the file of
    SQLite), ``host`` (or socket directory / socket), ``port``, ``user``, ``password`` (secret), ``tool`` (sql,
    alembic, sqitch), ``migrations`` (the release's migrations directory), ``target`` (version, revision or change;
    default: the latest), ``backup`` (auto, template, dump, none), ``backup_dir``, ``restore_only`` (versions
    accepted without a down step), ``allow_data_loss``, ``jobs``, ``bin_dir``, ``environment``, ``run_id``, ``create``
    (SQLite: create the database file when it does not exist)."""

    kind = 'database'
    stage = 'database'
    secret_options = ('password',)

    def __init__(self, options, run):
        self.o = dict(options or {})
        engine = self.o.get('engine')
        if engine not in ENGINES:
            raise LayerError('database layer: engine must be one of %s, got %r' % (', '.join(ENGINES), engine))
        if not self.o.get('database'):
            raise LayerError('database layer: database is required (a database name, or the file of SQLite)')
        self.tool = self.o.get('tool') or 'sql'
        if self.tool not in TOOLS:
            raise LayerError('database layer: tool must be one of %s, got %r' % (', '.join(TOOLS), self.tool))
        if not self.o.get('migrations'):
            raise LayerError('database layer: migrations (the directory of the release\'s migrations) is required')
        self.backup_mode = self.o.get('backup') or 'auto'
        if self.backup_mode not in ('auto', 'template', 'dump', 'none'):
            raise LayerError('database layer: backup must be auto, template, dump or none, got %r' % self.backup_mode)
        if self.o.get('create') and engine != 'sqlite':
            raise LayerError('database layer: create applies to SQLite only (a %s database is created on its server, '
                             'not by the deploy), got create: true with engine %s' % (engine, engine))
        self.engine = ENGINE_CLASSES[engine](self.o)

    def describe(self, options):
        return 'migrate the %s database %s with %s from %s' % (self.engine.name, self.o['database'], self.tool,
                                                               self.o['migrations'])

    def _applied(self):
        """The migrations recorded in the database, in the order of their numbers (9 before 10)."""
        return sorted(self.engine.applied(), key=lambda a: (int(a['version']) if a['version'].isdigit() else -1,
                                                            a['version']))

    # -- what is pending
    def _pending(self):
        """Plain SQL: (migrations of the release, pending ones up to target); refuses bad input."""
        migrations = read_migrations(self.o['migrations'])
        applied = self._applied()
        by_version = dict((m['version'], m) for m in migrations)
        changed = [a['version'] for a in applied
                   if a['version'] in by_version and by_version[a['version']]['checksum'] != a['checksum']]
        if changed:
            raise LayerError('migration file(s) changed after they were applied: %s (the checksum recorded in %s '
                             'differs from %s). Restore the file as applied, or write a new migration.'
                             % (', '.join(changed), TABLE, self.o['migrations']), changed=changed)
        done = set(a['version'] for a in applied)
        target = self.o.get('target')
        if target and target not in by_version:
            raise LayerError('target migration %s is not in %s' % (target, self.o['migrations']))
        pending = []
        for m in migrations:
            if m['version'] in done:
                continue
            if target and int(m['version']) > int(target):
                break
            pending.append(m)
        restore_only = set(str(v) for v in self.o.get('restore_only') or [])
        no_down = [m['version'] for m in pending if 'down' not in m and m['version'] not in restore_only]
        if no_down:
            raise LayerError('migration(s) %s have no down step (%s), so a rollback could only restore the backup and '
                             'drop the writes made since the deploy. Add the down step, or accept restore-only for '
                             'them (restore_only: [%s]).'
                             % (', '.join(no_down), ', '.join('%s_<name>.down.sql' % v for v in no_down),
                                ', '.join(no_down)), missing_down=no_down)
        return migrations, applied, pending

    def _tool(self):
        return TOOL_CLASSES[self.tool](self.o, self.o['migrations'])

    # -- a database this deploy creates (SQLite, ``create``)
    def _creates(self):
        """True when this deploy creates the database: SQLite, ``create`` set and nothing at its path. A file that
        exists is never touched by the option."""
        return self.engine.name == 'sqlite' and bool(self.o.get('create')) and self.engine.missing()

    def _check_creatable(self):
        """Refuse a database that cannot be created: its directory is missing or not writable by this user."""
        db = self.o['database']
        directory = os.path.dirname(os.path.abspath(db))
        if not os.path.isdir(directory):
            raise LayerError('the SQLite database %s does not exist, and neither does its directory %s: create makes '
                             'the database file, not its directory. Create the directory, or point the database '
                             'elsewhere.' % (db, directory), path=db, directory=directory)
        if not os.access(directory, os.W_OK | os.X_OK):
            raise LayerError('the SQLite database %s does not exist, and its directory %s is not writable by this '
                             'user, so the deploy cannot create it. Create the file, or let this user write to the '
                             'directory.' % (db, directory), path=db, directory=directory)

    def _capture_created(self):
        """``capture`` of a database this deploy creates: the same checks (migrations, down steps), nothing to back
        up, then the file is created last and its identity recorded (the journal keeps it before anything migrates)."""
        self._check_creatable()
        db = self.o['database']
        record = {'engine': self.engine.name, 'tool': self.tool, 'database': db}
        if self.tool == 'sql':
            dummy, dummy2, pending = self._pending()
            record['before'] = []
            record['pending'] = [m['version'] for m in pending]
            record['restore_only'] = [m['version'] for m in pending if 'down' not in m]
        else:
            record['before'] = None
        record['state'] = _empty_state()
        if self.o.get('backup_dir'):
            # nothing to back up; the mark taken after the migration goes here (a rollback tells later writes by it)
            where = self._backup_dir()
            if not os.path.isdir(where['dir']):
                os.makedirs(where['dir'], 0o700)
            record['mark_dir'] = where['dir']
        siblings = [db + suffix for suffix in SQLite.SIBLINGS if not os.path.lexists(db + suffix)]
        try:
            device, inode = self.engine.create()
        except OSError as e:
            if e.errno == errno.EEXIST:
                raise LayerError('the SQLite database %s appeared while the deploy was about to create it: it is left '
                                 'as it is; run the deploy again' % db, path=db)
            raise LayerError('cannot create the SQLite database %s: %s' % (db, e.strerror), path=db)
        record['created'] = {'path': db, 'device': device, 'inode': inode, 'siblings': siblings}
        return record

    def _created_is_there(self, made):
        """True while the file at the path is the one this deploy created (same device and inode)."""
        try:
            st = os.lstat(made['path'])
        except OSError:
            return False
        return (st.st_dev, st.st_ino) == (made.get('device'), made.get('inode'))

    def _writes_into_created(self, record):
        """Tables of the created database whose rows changed since the migration's mark (without a mark: every
        table that holds rows); removing the file would drop them."""
        data = self._read_mark(record) or {}
        mark = data.get('tables')
        try:
            now = self.engine.table_sums()
        except sqlite3.Error as e:
            raise LayerError('cannot read the SQLite database %s, which this deploy created, to tell the writes made '
                             'since the deploy: %s' % (self.o['database'], e))
        has_rows = dict((t, not str(v).startswith('0:')) for t, v in now.items())
        if mark is None:
            return sorted(t for t in now if has_rows[t])
        return sorted(t for t in now if (now[t] != mark[t] if t in mark else has_rows[t]))

    def _remove_created(self, record):
        """Undo a database this deploy created: remove the file (and what SQLite and the lock made beside it) while
        it is the one created; refuse when that would drop writes made since, unless ``allow_data_loss``."""
        made = record['created']
        path = made['path']
        out = {'created': True, 'data_loss': False, 'dropped_writes_in': []}
        if os.path.lexists(path) and not self._created_is_there(made):
            out.update(method='kept', removed=[])
            return False, out
        removed = []
        if os.path.lexists(path):
            writes = self._writes_into_created(record)
            if writes and not self.o.get('allow_data_loss'):
                raise LayerError('removing the SQLite database %s, which this deploy created, would drop the writes '
                                 'made since the deploy (tables changed: %s). Refusing: copy what must be kept and '
                                 'run the rollback again, or allow the data loss for this deploy (allow_data_loss: '
                                 'true, e.g. in failsafe_rollback_layer_secrets).' % (path, ', '.join(writes)),
                                 writes_since=writes)
            os.unlink(path)
            removed.append(path)
            out.update(data_loss=bool(writes), dropped_writes_in=writes)
        for sibling in made.get('siblings') or []:
            if os.path.lexists(sibling):
                os.unlink(sibling)
                removed.append(sibling)
        out.update(method='remove', removed=removed)
        return bool(removed), out

    def plan(self, options):
        creates = self._creates()
        if creates:
            self._check_creatable()
        else:
            self.engine.ping()
        db = self.o['database']
        first = ('create the SQLite database %s (it does not exist yet)' % db) if creates else 'back up %s' % db
        if not os.path.isdir(self.o['migrations']):
            # a check-mode deploy does not stage the release: its migrations are not on the host yet
            return {'changed': True, 'sql': None, 'creates': db if creates else None,
                    'msg': 'check mode: would %s and migrate it with %s from %s, which is not on the host '
                           'yet (a check run does not stage the release), so the SQL cannot be shown'
                           % (first, self.tool, self.o['migrations'])}
        if self.tool == 'sql':
            dummy, dummy2, pending = self._pending()
            sql = ''.join('-- %s_%s (up)\n%s\n' % (m['version'], m['name'], _read(m['up']).decode('utf-8'))
                          for m in pending)
            names = ['%s_%s' % (m['version'], m['name']) for m in pending]
        else:
            tool = self._tool()
            # a database not created yet has no revision (asking the tool would create the file)
            current = None if creates else tool.current()
            sql = tool.plan(current, self.o.get('target'))
            names = [self.o.get('target') or 'the latest']
        changed = bool(sql.strip()) or creates
        if sql.strip():
            msg = 'check mode: would %s and run %s' % (first, ', '.join(names))
        elif creates:
            msg = 'check mode: would create the SQLite database %s (it does not exist yet); no migration to run' % db
        else:
            msg = 'check mode: the database %s is up to date' % db
        diff = {'before': '', 'after': sql}
        if creates:
            diff.update(before_header='%s (does not exist)' % db, after_header='%s (created empty, then migrated)' % db)
        return {'changed': changed, 'msg': msg, 'sql': sql, 'diff': diff, 'creates': db if creates else None}

    def _backup_dir(self):
        base = self.o.get('backup_dir')
        if not base:
            raise LayerError('database layer: backup_dir is required unless backup is none')
        tag = re.sub(r'[^A-Za-z0-9_]', '_', str(self.o.get('run_id') or int(time.time())))
        path = os.path.join(base, tag)
        return {'dir': path, 'tag': tag}

    def _check_space(self, where):
        base = self.o.get('backup_dir')
        probe = base
        while probe and not os.path.exists(probe):
            probe = os.path.dirname(probe)
        st = os.statvfs(probe or '/')
        free = st.f_bavail * st.f_frsize
        need = self.engine.size()
        if self.engine.name == 'postgresql' and self.backup_mode in ('auto', 'template'):
            # the template copy is written in the server's data directory: checked when it is on this host
            data = self.engine.data_directory()
            if not data:
                return need, None
            st = os.statvfs(data)
            base, free = data, st.f_bavail * st.f_frsize
        if need > free:
            raise LayerError('the backup of %s would not fit on the disk: it needs about %d MB and %s has %d MB free. '
                             'Free space, or point backup_dir elsewhere.'
                             % (self.o['database'], need // 2 ** 20 + 1, base, free // 2 ** 20),
                             need_bytes=need, free_bytes=free)
        return need, free

    def capture(self, params):
        if self._creates():
            return self._capture_created()
        self.engine.ping()
        record = {'engine': self.engine.name, 'tool': self.tool, 'database': self.o['database']}
        if self.tool == 'sql':
            dummy, applied, pending = self._pending()
            record['before'] = [a['version'] for a in applied]
            record['pending'] = [m['version'] for m in pending]
            record['restore_only'] = [m['version'] for m in pending if 'down' not in m]
        else:
            record['before'] = self._tool().current()
        record['state'] = self.engine.state()
        if self.backup_mode != 'none':
            where = self._backup_dir()
            self._check_space(where)
            if not os.path.isdir(where['dir']):
                os.makedirs(where['dir'], 0o700)
            backup = self.engine.backup(where, self.backup_mode)
            state = self.engine.backup_state(backup)
            if state is not None and state['schema'] != record['state']['schema']:
                raise LayerError('the backup of %s does not match its schema: it changed while it was copied' %
                                 self.o['database'])
            backup['state'] = state or record['state']
            backup['dir'] = where['dir']
            record['backup'] = backup
            record['pruned'] = self._prune(where)
        return record

    def _prune(self, where):
        """Remove the backups of earlier runs beyond ``keep_backups`` (default 1: only the newest, this one)."""
        keep = max(1, int(self.o.get('keep_backups') or 1))
        base = self.o['backup_dir']
        others = [name for name in os.listdir(base) if name != where['tag'] and os.path.isdir(os.path.join(base, name))]
        others.sort(key=lambda name: os.path.getmtime(os.path.join(base, name)), reverse=True)
        pruned = []
        for name in others[keep - 1:]:
            self.engine.drop_backup({'method': 'template', 'database': ('%s__failsafe_%s' % (self.db_name(), name))[:63]}
                                    if self.engine.name == 'postgresql' else {})
            shutil.rmtree(os.path.join(base, name), ignore_errors=True)
            pruned.append(name)
        return pruned

    def db_name(self):
        return self.o['database']

    def _mark_path(self, record):
        where = (record.get('backup') or {}).get('dir') or record.get('mark_dir')
        return os.path.join(where, 'after-migrate.json') if where else None

    def _mark(self, record, partial=None):
        """Note the state of the database as this deploy left it: a rollback tells later writes from it.
        ``partial``: a MariaDB migration left half applied (no down step could undo it): only the backup can."""
        path = self._mark_path(record)
        if path:
            tmp = path + '.tmp'
            state = self.engine.state()
            backup = (record.get('backup') or {}).get('state') or {}
            # rows that changed since the backup in tables the migration did not alter: written by others while
            # it ran (or by a data migration: the two cannot be told apart, so both count as writes a restore drops)
            before_tables = backup.get('tables') or {}
            before_schemas = backup.get('table_schemas')

            def written(table):
                rows_changed = table in state['tables'] and state['tables'][table] != before_tables[table]
                same_columns = before_schemas is not None and \
                    state['table_schemas'].get(table) == before_schemas.get(table)
                return rows_changed and same_columns

            during = sorted(t for t in before_tables if written(t))
            with open(tmp, 'w') as handle:
                json.dump({'tables': state['tables'], 'written_during': during, 'time': time.time(),
                           'partial': partial}, handle)
            os.rename(tmp, path)

    def _read_mark(self, record):
        path = self._mark_path(record)
        if path and os.path.exists(path):
            with open(path) as handle:
                return json.load(handle)
        return None

    def apply(self, params, record):
        res = self._apply(record)
        if record.get('created'):
            res.update(changed=True, created=record['created']['path'],
                       msg='created the SQLite database %s (it did not exist); %s' % (record['created']['path'],
                                                                                      res['msg']))
        return res

    def _apply(self, record):
        if self.tool != 'sql':
            tool = self._tool()
            before = tool.current()
            try:
                tool.up(self.o.get('target'))
            finally:
                self._mark(record)
            after = tool.current()
            return {'changed': before != after, 'revision': after, 'previous_revision': record.get('before'),
                    'msg': 'migrated %s from %s to %s' % (self.o['database'], before or 'nothing', after)}
        migrations, applied, pending = self._pending()
        if not pending:
            self._mark(record)
            return {'changed': False, 'applied': [], 'msg': 'the database %s is up to date' % self.o['database']}
        done, failed, error = self.engine.run_migrations(pending, 'up', self.o.get('run_id'))
        if failed is None and error:
            self._mark(record)
            raise LayerError('the migrations of %s did not start: %s' % (self.o['database'], error))
        if failed is not None:
            what, partial = 'nothing of it is left (its transaction rolled back)', None
            if self.engine.name == 'mariadb':
                what, partial = self._undo_failed_step(migrations, failed)
            self._mark(record, partial=partial)
            raise LayerError('migration %s failed: %s; %s. Applied before it in this run: %s.'
                             % (failed, _tail(error), what, ', '.join(done) or 'none'),
                             applied=done, failed_migration=failed)
        self._mark(record)
        return {'changed': True, 'applied': done,
                'msg': 'migrated %s: %s' % (self.o['database'], ', '.join(done))}

    def _undo_failed_step(self, migrations, failed):
        """MariaDB: the failed step's DDL committed as it went; run its down step (written to tolerate a partial up)."""
        step = [m for m in migrations if m['version'] == failed][0]
        if 'down' not in step:
            return 'it has no down step: the rollback restores the backup', failed
        done, bad, error = self.engine.run_migrations([step], 'down', self.o.get('run_id'))
        if bad is not None or error:
            return 'its down step failed too (%s): the rollback restores the backup' % _tail(error), failed
        return 'its down step undid what it had done', None

    # -- undo
    def _writes_since(self, record):
        """Tables whose rows a restore of the backup would drop: changed since this deploy's migration (or since the
        backup when it did not finish), and those whose rows changed while it ran although their columns did not."""
        data = self._read_mark(record) or {}
        mark = data.get('tables')
        if mark is None:
            mark = record['backup']['state']['tables']
        now = self.engine.table_sums()
        since = set(t for t in set(now) | set(mark) if now.get(t) != mark.get(t))
        return sorted(since.union(data.get('written_during') or []))

    def _restore(self, record, why):
        backup = record.get('backup')
        if not backup:
            raise LayerError('%s, and there is no backup to restore (backup: none)' % why)
        writes = self._writes_since(record)
        if writes and not self.o.get('allow_data_loss'):
            raise LayerError('%s; restoring the backup of %s would drop the writes made since the deploy (tables '
                             'changed: %s). Refusing: fix the down step and run the rollback again, or allow the data '
                             'loss for this deploy (allow_data_loss: true, e.g. in failsafe_rollback_layer_secrets).'
                             % (why, self.o['database'], ', '.join(writes)), writes_since=writes)
        self.engine.restore(backup)
        state = self.engine.state()
        if state != backup['state']:
            saved = backup['state']
            schema = 'same' if state['schema'] == saved['schema'] else 'differs'
            differ = sorted(t for t in set(state['tables']) | set(saved['tables'])
                            if state['tables'].get(t) != saved['tables'].get(t))
            raise LayerError('the restored database %s does not match the checksums of its backup (schema %s, '
                             'tables differing: %s)' % (self.o['database'], schema, ', '.join(differ) or 'none'))
        # the restored state is the new mark: a rollback run again compares with it, and restores nothing twice
        self._mark(record)
        return {'method': 'restore', 'data_loss': bool(writes), 'dropped_writes_in': writes}

    def undo(self, record):
        report = {'database': self.o['database'], 'engine': self.engine.name, 'tool': self.tool,
                  'revision': record.get('before')}
        if record.get('created'):
            changed, words = self._remove_created(record)
            report.update(words)
            return {'changed': changed, 'report': report}
        self.engine.ping()
        if self.tool != 'sql':
            tool = self._tool()
            if tool.current() != record.get('before'):
                try:
                    tool.down(record.get('before'))
                    report['method'] = 'reverse migrations'
                except LayerError as e:
                    report.update(self._restore(record, 'the downgrade failed (%s)' % e.msg))
            else:
                report['method'] = 'nothing to undo'
            return {'changed': report['method'] != 'nothing to undo', 'report': report}
        before = set(record.get('before') or [])
        applied = [a for a in self._applied() if a['version'] not in before]
        partial = (self._read_mark(record) or {}).get('partial')
        if partial:
            report.update(self._restore(record, 'migration %s was left half applied (MariaDB commits DDL as it goes) '
                                                'and its down step could not undo it' % partial))
            report['reverted'] = [a['version'] for a in reversed(applied)] + [partial]
            return {'changed': True, 'report': report}
        if not applied:
            report['method'] = 'nothing to undo'
            return {'changed': False, 'report': report}
        # the down steps of the release being abandoned: its migrations directory, still on disk
        try:
            by_version = dict((m['version'], m) for m in read_migrations(self.o['migrations']))
        except LayerError as e:
            by_version = {}
            missing_dir = e.msg
        else:
            missing_dir = None
        steps = list(reversed([by_version.get(a['version'], {'version': a['version']}) for a in applied]))
        without = [s['version'] for s in steps if 'down' not in s]
        if without:
            why = missing_dir or 'migration(s) %s have no down step' % ', '.join(without)
            report.update(self._restore(record, why))
            report['reverted'] = [a['version'] for a in reversed(applied)]
            return {'changed': True, 'report': report}
        done, failed, error = self.engine.run_migrations(steps, 'down', self.o.get('run_id'))
        if failed is not None or error:
            report.update(self._restore(record, 'the down step of migration %s failed (%s)'
                                        % (failed, _tail(error))))
        else:
            report['method'] = 'reverse migrations'
        report['reverted'] = [s['version'] for s in steps]
        return {'changed': True, 'report': report}

    def verify(self, record):
        problems = []
        made = record.get('created')
        if made:
            if self._created_is_there(made):
                problems.append('the SQLite database %s, which this deploy created, is still there' % made['path'])
            elif not os.path.lexists(made['path']):
                left = [p for p in made.get('siblings') or [] if os.path.lexists(p)]
                if left:
                    problems.append('files beside the removed database %s are still there: %s'
                                    % (made['path'], ', '.join(left)))
            return problems
        if self.tool == 'sql':
            now = [a['version'] for a in self._applied()]
            if now != list(record.get('before') or []):
                problems.append('the migrations recorded in %s are %s, not %s as before the deploy'
                                % (TABLE, now or 'none', record.get('before') or 'none'))
        else:
            current = self._tool().current()
            if current != record.get('before'):
                problems.append('%s is at revision %s, not %s as before the deploy'
                                % (self.tool, current, record.get('before')))
        state = self.engine.state()
        if state['schema'] != record['state']['schema']:
            problems.append('the schema of %s differs from the one before the deploy' % self.o['database'])
        return problems
