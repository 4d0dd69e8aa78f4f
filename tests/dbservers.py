# -*- coding: utf-8 -*-
# Copyright: Contributors to failsafe.deploy
# SPDX-License-Identifier: GPL-3.0-or-later
"""Private database servers for the tests and the bench: a PostgreSQL 15 cluster (initdb in a scratch directory,
pg_ctl start on a unix socket and a free port, run as the ``postgres`` OS user) and a MariaDB server (its own
datadir and socket, run as ``mysql``, no network). Never a system service: each session starts its own and stops
it. Both need root (to run the servers as their own users); scripts/db-prereqs.sh installs MariaDB.

The unit tests share one server of each engine per test process through ``shared()``, each test in a database of its
own (see tests/process_shared.py)."""

import glob
import json
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time

# relative: the bench imports this module as tests.dbservers beside a copy of the collection without its tests
from . import process_shared
from .helpers import free_port

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def session_end():
    """Stops every server the tests of this test process started (its pytest_sessionfinish, where none of its tests
    runs any more)."""
    base = os.environ.get(process_shared.ENV)
    for kind, cls in sorted(_KINDS.items()):
        state = os.path.join(base, kind + '.json') if base else ''
        if state and os.path.exists(state):
            with open(state) as handle:
                cls.from_state(json.load(handle)).stop()
            os.unlink(state)


def shared(kind):
    """The running server of ``kind`` ('postgres' or 'mariadb') that the tests of this test process share (see
    tests/process_shared.py: under ansible-test units each test runs in a fork, and a server per test cost seconds
    of initdb or mariadb-install-db each time), started by the first test that needs it (again if a test left it
    dead); it outlives the fork and session_end stops it. Each test makes its own database in it (``createdb``)."""
    base = process_shared.directory()
    if not base:
        raise RuntimeError('no directory for the shared database servers (%s): tests/unit/conftest.py names it '
                           'when pytest starts' % process_shared.ENV)
    cls = _KINDS[kind]
    state = os.path.join(base, kind + '.json')
    with process_shared.Lock(kind):
        if os.path.exists(state):
            with open(state) as handle:
                server = cls.from_state(json.load(handle))
            if server.running():
                return server
            server.stop()
            os.unlink(state)
        server = cls().start()
        with open(state + '.tmp', 'w') as handle:
            json.dump(server.state(), handle)
        os.rename(state + '.tmp', state)
        return server


def _pid_from(path):
    try:
        with open(path) as handle:
            return int(handle.readline().strip())
    except (OSError, ValueError):
        return None


def pg_bin():
    found = sorted(glob.glob('/usr/lib/postgresql/*/bin/initdb'), reverse=True)
    return os.path.dirname(found[0]) if found else None


def ensure_prereqs():
    """Install MariaDB and sqitch through the project's own script (root only). Returns an error or None. Once it
    succeeded in a test process that shares its servers, its tests need not run it again."""
    base = process_shared.directory()
    done = os.path.join(base, 'db-prereqs.ok') if base else None
    if done and os.path.exists(done):
        return None
    proc = subprocess.run(['bash', os.path.join(ROOT, 'scripts', 'db-prereqs.sh')], capture_output=True, text=True,
                          check=False)
    if proc.returncode != 0:
        return (proc.stderr or proc.stdout).strip()
    if done:
        open(done, 'w').close()
    return None


def _scratch(owner):
    base = tempfile.mkdtemp(prefix='failsafe-db-', dir='/tmp')
    os.chmod(base, 0o755)
    user = pwd.getpwnam(owner)
    os.chown(base, user.pw_uid, user.pw_gid)
    return base


class Postgres(object):
    """A private PostgreSQL cluster: connection options for the database layer in ``options(db)``."""

    def __init__(self):
        self.bin = pg_bin()
        self.base = _scratch('postgres')
        self.data = os.path.join(self.base, 'data')
        self.port = free_port()
        self.log = os.path.join(self.base, 'server.log')

    def state(self):
        return {'bin': self.bin, 'base': self.base, 'port': self.port}

    @classmethod
    def from_state(cls, state):
        server = cls.__new__(cls)
        server.bin, server.base, server.port = state['bin'], state['base'], state['port']
        server.data = os.path.join(server.base, 'data')
        server.log = os.path.join(server.base, 'server.log')
        return server

    def running(self):
        pid = _pid_from(os.path.join(self.data, 'postmaster.pid'))
        return pid is not None and process_shared.alive(pid)

    def _as_pg(self, argv, **kw):
        return subprocess.run(['runuser', '-u', 'postgres', '--'] + argv, capture_output=True, text=True, check=False, **kw)

    def start(self):
        res = self._as_pg([os.path.join(self.bin, 'initdb'), '-D', self.data, '-A', 'trust', '-U', 'postgres',
                           '-E', 'UTF8', '--no-sync'])
        if res.returncode != 0:
            raise RuntimeError('initdb failed: %s' % res.stderr)
        opts = "-k %s -p %d -c listen_addresses='' -c fsync=off -c max_connections=40" % (self.base, self.port)
        res = self._as_pg([os.path.join(self.bin, 'pg_ctl'), '-D', self.data, '-l', self.log, '-o', opts, '-w',
                           '-t', '60', 'start'])
        if res.returncode != 0:
            raise RuntimeError('pg_ctl start failed: %s %s' % (res.stderr, open(self.log).read()))
        return self

    def stop(self):
        self._as_pg([os.path.join(self.bin, 'pg_ctl'), '-D', self.data, '-m', 'immediate', '-w', 'stop'])
        shutil.rmtree(self.base, ignore_errors=True)

    def options(self, database):
        return {'engine': 'postgresql', 'database': database, 'host': self.base, 'port': self.port,
                'user': 'postgres', 'bin_dir': self.bin}

    def psql(self, sql, database='postgres', check=True):
        res = subprocess.run([os.path.join(self.bin, 'psql'), '-X', '-q', '-A', '-t', '-v', 'ON_ERROR_STOP=1',
                              '-h', self.base, '-p', str(self.port), '-U', 'postgres', '-d', database],
                             input=sql, capture_output=True, text=True, check=False)
        if check and res.returncode != 0:
            raise RuntimeError('psql: %s' % res.stderr)
        return res.stdout.strip()

    def createdb(self, name):
        """A new empty database ``name``: dropped first with the layer's backup copies of it (``<name>__failsafe_*``),
        which an earlier test of the same name may have left in a shared server."""
        old = self.psql("SELECT datname FROM pg_database WHERE datname = '%s' OR starts_with(datname, '%s__failsafe_')"
                        % (name, name)).splitlines()
        for datname in old:
            self.psql('DROP DATABASE IF EXISTS "%s" WITH (FORCE)' % datname)
        self.psql('CREATE DATABASE "%s"' % name)


class MariaDB(object):
    """A private MariaDB server on a unix socket only."""

    def __init__(self):
        self.base = _scratch('mysql')
        self.data = os.path.join(self.base, 'data')
        self.socket = os.path.join(self.base, 'mysqld.sock')
        self.log = os.path.join(self.base, 'server.log')
        # a temporary directory of its own: servers that share /tmp collide on their temporary table names
        self.tmp = os.path.join(self.base, 'tmp')
        os.mkdir(self.tmp)
        os.chown(self.tmp, pwd.getpwnam('mysql').pw_uid, pwd.getpwnam('mysql').pw_gid)
        self.proc = None

    def state(self):
        return {'base': self.base}

    @classmethod
    def from_state(cls, state):
        server = cls.__new__(cls)
        server.base = state['base']
        server.data = os.path.join(server.base, 'data')
        server.socket = os.path.join(server.base, 'mysqld.sock')
        server.log = os.path.join(server.base, 'server.log')
        server.tmp = os.path.join(server.base, 'tmp')
        server.proc = None
        return server

    def _pid(self):
        return _pid_from(os.path.join(self.base, 'mysqld.pid'))

    def running(self):
        pid = self._pid()
        return pid is not None and process_shared.alive(pid)

    def start(self):
        res = subprocess.run(['mariadb-install-db', '--no-defaults', '--datadir=%s' % self.data, '--user=mysql',
                              '--auth-root-authentication-method=socket', '--skip-test-db', '--tmpdir=%s' % self.tmp],
                             capture_output=True, text=True, check=False)
        if res.returncode != 0:
            raise RuntimeError('mariadb-install-db failed: %s %s' % (res.stdout, res.stderr))
        self.proc = subprocess.Popen(['mariadbd', '--no-defaults', '--datadir=%s' % self.data, '--user=mysql',
                                      '--socket=%s' % self.socket, '--skip-networking', '--log-error=%s' % self.log,
                                      '--tmpdir=%s' % self.tmp,
                                      '--pid-file=%s' % os.path.join(self.base, 'mysqld.pid'),
                                      '--innodb-buffer-pool-size=32M', '--innodb-log-file-size=16M',
                                      '--skip-innodb-doublewrite', '--innodb-flush-log-at-trx-commit=0'],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 60
        while time.time() < deadline:
            if self.sql('SELECT 1', check=False)[0] == 0:
                return self
            if self.proc.poll() is not None:
                break
            time.sleep(0.3)
        raise RuntimeError('mariadbd did not start: %s' % (open(self.log).read() if os.path.exists(self.log) else ''))

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        elif self.proc is None:
            # started by another process (a forked test): known by its pid file only
            pid = self._pid()
            if pid is not None and process_shared.alive(pid):
                os.kill(pid, signal.SIGTERM)
                deadline = time.time() + 30
                while process_shared.alive(pid) and time.time() < deadline:
                    time.sleep(0.1)
                if process_shared.alive(pid):
                    os.kill(pid, signal.SIGKILL)
        shutil.rmtree(self.base, ignore_errors=True)

    def options(self, database):
        return {'engine': 'mariadb', 'database': database, 'host': self.socket, 'user': 'root'}

    def sql(self, sql, database=None, check=True):
        argv = ['mariadb', '--no-defaults', '-N', '-B', '--socket=%s' % self.socket, '--user=root']
        res = subprocess.run(argv + ([database] if database else []), input=sql, capture_output=True, text=True,
                             check=False)
        if check and res.returncode != 0:
            raise RuntimeError('mariadb: %s' % res.stderr)
        return (res.returncode, res.stdout.strip()) if not check else res.stdout.strip()

    def createdb(self, name):
        self.sql('DROP DATABASE IF EXISTS `%s`; CREATE DATABASE `%s`' % (name, name))


_KINDS = {'postgres': Postgres, 'mariadb': MariaDB}
