# -*- coding: utf-8 -*-
# Copyright: Contributors to failsafe.deploy
# SPDX-License-Identifier: GPL-3.0-or-later
"""The database layer's backup and restore on PostgreSQL, against pg_dump + pg_restore, in the same run.

A private PostgreSQL 15 cluster (tests/dbservers.py: initdb in a scratch directory, a unix socket, run as the
``postgres`` user; needs root) holds a generated database of about ``db_mb`` MB (one table of rows with text and an
index). Timed, each ``repeats`` times:

- ours: the layer's backup (``CREATE DATABASE ... TEMPLATE ... STRATEGY FILE_COPY``, nothing else connected) plus its
  restore (the database dropped and the copy renamed into its place), through the layer's own engine code;
- ours with a client connected: the layer's fallback, ``pg_dump -Fd -j 2`` plus ``pg_restore -j 2``;
- baseline: ``pg_dump -Fc`` plus ``pg_restore`` into a fresh database, what a deploy script usually does.

The checksums that verify a backup (schema and per-table data) are timed on their own.
"""

import os
import subprocess
import sys
import time

from common import ROOT, ratio, stats

if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


class DatabaseBench(object):
    def __init__(self, ctx):
        self.ctx = ctx
        self.server = None

    def _engine(self, options):
        # the frozen copy of the collection the run benchmarks (bench/run.py freeze_collection)
        if self.ctx.collections not in sys.path:
            sys.path.insert(0, self.ctx.collections)
        from ansible_collections.failsafe.deploy.plugins.module_utils.kinds.database import Postgres
        return Postgres(options)

    def _fill(self, name, megabytes):
        rows = max(1000, int(megabytes * 1024 * 1024 / 330))
        self.server.createdb(name)
        self.server.psql('CREATE TABLE events (id bigint PRIMARY KEY, kind text NOT NULL, body text NOT NULL);'
                         "INSERT INTO events SELECT g, 'k' || (g %% 17), md5(g::text) || repeat(md5((g * 7)::text), 6)"
                         ' FROM generate_series(1, %d) g;'
                         'CREATE INDEX events_kind ON events (kind); VACUUM ANALYZE events;' % rows, name)
        return int(self.server.psql("SELECT pg_database_size('%s')" % name))

    def run(self):
        from tests import dbservers
        if os.geteuid() != 0:
            raise RuntimeError('the database benchmark needs root (its PostgreSQL runs as the postgres user)')
        self.server = dbservers.Postgres().start()
        try:
            return self._measure(dbservers)
        finally:
            self.server.stop()

    def _measure(self, dbservers):
        megabytes = getattr(self.ctx, 'db_mb', 200)
        size = self._fill('bench', megabytes)
        work = os.path.join(self.ctx.work, 'db')
        os.makedirs(work, exist_ok=True)
        os.chmod(work, 0o777)
        engine = self._engine(dict(self.server.options('bench'), jobs=2))
        ours, fallback, baseline, checks = [], [], [], []
        ours_parts = {'backup': [], 'restore': []}
        env = dict(os.environ, PGHOST=self.server.base, PGPORT=str(self.server.port), PGUSER='postgres')
        for rep in range(self.ctx.repeats):
            where = {'dir': os.path.join(work, 'ours%d' % rep), 'tag': 'bench%d' % rep}
            os.makedirs(where['dir'])
            t0 = time.monotonic()
            backup = engine.backup(where, 'template')
            t1 = time.monotonic()
            backup_state = engine.state(backup['database'])
            t1b = time.monotonic()
            engine.restore(backup)
            t2 = time.monotonic()
            assert backup['method'] == 'template', backup
            ours.append(t2 - t1b + t1 - t0)
            ours_parts['backup'].append(t1 - t0)
            ours_parts['restore'].append(t2 - t1b)
            t0 = time.monotonic()
            state = engine.state()
            checks.append(time.monotonic() - t0)
            assert state['schema'] == backup_state['schema'] and state['tables'] == backup_state['tables'], \
                'the restored database differs from its backup'

            # the fallback: a client is connected, so no template copy
            where = {'dir': os.path.join(work, 'fallback%d' % rep), 'tag': 'fb%d' % rep}
            os.makedirs(where['dir'])
            client = subprocess.Popen([os.path.join(self.server.bin, 'psql'), '-X', '-d', 'bench', '-c',
                                       'SELECT pg_sleep(600)'], env=env, stdout=subprocess.DEVNULL)
            try:
                deadline = time.time() + 30
                while not engine.others_connected('bench') and time.time() < deadline:
                    time.sleep(0.1)
                t0 = time.monotonic()
                backup = engine.backup(where, 'auto')
            finally:
                client.kill()
                client.wait()
            assert backup['method'] == 'dump', backup
            engine.restore(backup)
            fallback.append(time.monotonic() - t0)
            engine.drop_backup(backup)

            # the baseline: pg_dump -Fc, then pg_restore into a fresh database
            dump = os.path.join(work, 'baseline%d.dump' % rep)
            t0 = time.monotonic()
            subprocess.run([os.path.join(self.server.bin, 'pg_dump'), '-Fc', '-f', dump, 'bench'], env=env,
                           check=True)
            self.server.psql('DROP DATABASE IF EXISTS bench_restored')
            self.server.psql('CREATE DATABASE bench_restored')
            subprocess.run([os.path.join(self.server.bin, 'pg_restore'), '-d', 'bench_restored', dump], env=env,
                           check=True)
            baseline.append(time.monotonic() - t0)
            os.unlink(dump)
            self.server.psql('DROP DATABASE bench_restored')
        out = {'db_bytes': size, 'ours': stats(ours), 'ours_backup': stats(ours_parts['backup']),
               'ours_restore': stats(ours_parts['restore']), 'fallback': stats(fallback),
               'baseline': stats(baseline), 'verify_checksums': stats(checks)}
        out['speedup'] = ratio(out['baseline'], out['ours'])
        out['fallback_speedup'] = ratio(out['baseline'], out['fallback'])
        return out
