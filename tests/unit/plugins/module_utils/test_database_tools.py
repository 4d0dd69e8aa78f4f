# -*- coding: utf-8 -*-
# Copyright: Contributors to failsafe.deploy
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The database layer driving the migration tools people already use, through their own commands: an Alembic
project (on SQLite) and a sqitch project (on a private PostgreSQL cluster). Each deploys release 1 (committed), then
release 2, which fails after its migration: the rollback takes the database down to the revision recorded before the
deploy, with the down steps of release 2 (the release being abandoned), and keeps the rows written in between."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import os
import shutil
import sqlite3
import subprocess
import sys

import pytest

from ansible_collections.failsafe.deploy.plugins.module_utils import _engine as engine
from ansible_collections.failsafe.deploy.plugins.module_utils import kinds  # noqa: F401  # pylint: disable=unused-import
from ansible_collections.failsafe.deploy.plugins.module_utils._errors import FailsafeError
from ansible_collections.failsafe.deploy.plugins.module_utils._journal import DeployState

from ansible_collections.failsafe.deploy.tests import dbservers
from ansible_collections.failsafe.deploy.tests.requires import require, require_root

ALEMBIC = os.path.join(os.path.dirname(sys.executable), 'alembic')


def _run(argv):
    return 0, '', ''


def params(tmp_path, run_id, state='state'):
    return {'state_dir': str(tmp_path / state), 'name': 'app', 'run_id': run_id, 'owner': 'ops@ctl',
            'controller': 'ctl', 'pid': 1, 'ttl': 600, 'recover': True, 'service': {'manager': 'none'}}


def deploy(tmp_path, run_id, spec):
    """Open a transaction (state directory of its own) and apply the database layer in it."""
    p = params(tmp_path, run_id, 'state-%s' % run_id)
    engine.open_phase(p, _run)
    res = engine.apply_phase(dict(p, layer=dict(spec, run_id=run_id)), _run)
    return p, res


REVISION = '''\
revision = %(rev)r
down_revision = %(down)r
branch_labels = None
depends_on = None

from alembic import op


def upgrade():
    op.execute(%(up)r)


def downgrade():
    op.execute(%(down_sql)r)
'''

ENV_PY = '''\
import os
from alembic import context
from sqlalchemy import create_engine, pool

url = os.environ['APP_DATABASE_URL']
if context.is_offline_mode():
    context.configure(url=url, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    with create_engine(url, poolclass=pool.NullPool).connect() as connection:
        context.configure(connection=connection, transactional_ddl=True)
        with context.begin_transaction():
            context.run_migrations()
'''

REVISIONS = [
    ('a1', None, 'CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL)', 'DROP TABLE items'),
    ('b2', 'a1', 'ALTER TABLE items ADD COLUMN note TEXT', 'ALTER TABLE items DROP COLUMN note'),
    ('c3', 'b2', 'CREATE TABLE tags (id INTEGER PRIMARY KEY, label TEXT)', 'DROP TABLE tags'),
]


def alembic_release(tmp_path, rid, revisions):
    directory = tmp_path / 'releases' / rid / 'migrations'
    (directory / 'versions').mkdir(parents=True)
    (directory / 'alembic.ini').write_text('[alembic]\nscript_location = %(here)s\n')
    (directory / 'env.py').write_text(ENV_PY)
    (directory / 'script.py.mako').write_text('')
    for rev, down, up, down_sql in revisions:
        (directory / 'versions' / ('%s.py' % rev)).write_text(
            REVISION % {'rev': rev, 'down': down, 'up': up, 'down_sql': down_sql})
    return str(directory)


def test_an_alembic_project_deploys_fails_and_rolls_back_to_the_revision_recorded_before(tmp_path):
    if not os.path.exists(ALEMBIC):
        pytest.fail('alembic is missing from the test environment (requirements-dev.txt)')
    path = str(tmp_path / 'app.db')
    sqlite3.connect(path).close()
    base = {'kind': 'database', 'engine': 'sqlite', 'database': path, 'tool': 'alembic', 'alembic': ALEMBIC,
            'environment': {'APP_DATABASE_URL': 'sqlite:///%s' % path}, 'backup_dir': str(tmp_path / 'backups')}
    # release 1 knows a1 only
    r1 = alembic_release(tmp_path, 'r1', REVISIONS[:1])
    p1, res = deploy(tmp_path, 'run-1', dict(base, migrations=r1))
    assert res['revision'] == 'a1'
    conn = sqlite3.connect(path)
    conn.execute("INSERT INTO items (id, name) VALUES (1, 'one')")
    conn.commit()
    conn.close()
    # release 2 brings b2 and c3; check mode shows their SQL first
    r2 = alembic_release(tmp_path, 'r2', REVISIONS)
    plan = engine.apply_phase(dict(p1, layer=dict(base, migrations=r2)), _run,
                              check_mode=True)
    assert 'ALTER TABLE items ADD COLUMN note' in plan['sql'] and 'CREATE TABLE tags' in plan['sql']
    p2, res = deploy(tmp_path, 'run-2', dict(base, migrations=r2))
    assert res['revision'] == 'c3' and res['previous_revision'] == 'a1'
    conn = sqlite3.connect(path)
    conn.execute("INSERT INTO items (id, name, note) VALUES (2, 'two', 'written by release 2')")
    conn.commit()
    conn.close()
    # the target release r1 does not know b2 or c3: the down steps come from r2, still on disk
    out = engine.rollback(p2, _run)
    entry = out['failsafe_rollback']['layers'][0]
    assert entry['method'] == 'reverse migrations' and entry['revision'] == 'a1'
    conn = sqlite3.connect(path)
    assert conn.execute('SELECT version_num FROM alembic_version').fetchall() == [('a1',)]
    assert [r[1] for r in conn.execute('PRAGMA table_info(items)')] == ['id', 'name']
    assert conn.execute("SELECT name FROM sqlite_master WHERE name = 'tags'").fetchall() == []
    assert conn.execute('SELECT id, name FROM items ORDER BY id').fetchall() == [(1, 'one'), (2, 'two')]
    conn.close()
    assert DeployState(p2['state_dir'], 'app').read_journal()['status'] == 'rolled_back'


SQITCH_CHANGES = [
    ('items', 'CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL);', 'DROP TABLE items;'),
    ('note', 'ALTER TABLE items ADD COLUMN note TEXT;', 'ALTER TABLE items DROP COLUMN note;'),
    ('tags', 'CREATE TABLE tags (id INTEGER PRIMARY KEY, label TEXT);', 'DROP TABLE tags;'),
]


def sqitch_release(tmp_path, rid, changes):
    directory = tmp_path / 'releases' / rid / 'migrations'
    for sub in ('deploy', 'revert', 'verify'):
        (directory / sub).mkdir(parents=True)
    (directory / 'sqitch.conf').write_text('[core]\n\tengine = pg\n')
    plan = ['%syntax-version=1.0.0', '%project=app', '']
    for name, up, down in changes:
        plan.append('%s 2026-01-01T00:00:00Z Ops <ops@example.org> # %s' % (name, name))
        (directory / 'deploy' / ('%s.sql' % name)).write_text('BEGIN;\n%s\nCOMMIT;\n' % up)
        (directory / 'revert' / ('%s.sql' % name)).write_text('BEGIN;\n%s\nCOMMIT;\n' % down)
        (directory / 'verify' / ('%s.sql' % name)).write_text('SELECT 1;\n')
    (directory / 'sqitch.plan').write_text('\n'.join(plan) + '\n')
    return str(directory)


@pytest.fixture
def pg():
    """The PostgreSQL cluster the tests of this test process share (tests/unit/conftest.py stops it)."""
    require_root('PostgreSQL tests need root (the cluster runs as the postgres OS user)')
    error = dbservers.ensure_prereqs()
    require(dbservers.pg_bin(), 'no PostgreSQL binaries (/usr/lib/postgresql/*/bin/initdb) after '
            'scripts/db-prereqs.sh: %s' % error)
    if error:
        pytest.fail('scripts/db-prereqs.sh failed: %s' % error)
    return dbservers.shared('postgres')


def test_a_sqitch_project_deploys_fails_and_rolls_back_to_the_change_recorded_before(pg, tmp_path):
    if not shutil.which('sqitch'):
        pytest.fail('sqitch is missing after scripts/db-prereqs.sh')
    pg.createdb('app_sqitch')
    base = dict(pg.options('app_sqitch'), kind='database', tool='sqitch', sqitch_target='db:pg:app_sqitch',
                environment={'PGHOST': pg.base, 'PGPORT': str(pg.port), 'PGUSER': 'postgres',
                             'SQITCH_USER_NAME': 'ops', 'SQITCH_USER_EMAIL': 'ops@example.org',
                             'HOME': str(tmp_path)},
                backup_dir=str(tmp_path / 'backups'))
    r1 = sqitch_release(tmp_path, 'r1', SQITCH_CHANGES[:1])
    p1, res = deploy(tmp_path, 'run-1', dict(base, migrations=r1))
    assert res['revision'] == 'items'
    pg.psql("INSERT INTO items (id, name) VALUES (1, 'one')", 'app_sqitch')
    r2 = sqitch_release(tmp_path, 'r2', SQITCH_CHANGES)
    p2, res = deploy(tmp_path, 'run-2', dict(base, migrations=r2))
    assert res['revision'] == 'tags' and res['previous_revision'] == 'items'
    pg.psql("INSERT INTO items (id, name, note) VALUES (2, 'two', 'written by release 2')", 'app_sqitch')
    out = engine.rollback(p2, _run)
    entry = out['failsafe_rollback']['layers'][0]
    assert entry['method'] == 'reverse migrations' and entry['revision'] == 'items'
    cols = pg.psql("SELECT column_name FROM information_schema.columns WHERE table_name = 'items' "
                   'ORDER BY ordinal_position', 'app_sqitch').splitlines()
    assert cols == ['id', 'name']
    assert pg.psql("SELECT to_regclass('public.tags') IS NULL", 'app_sqitch') == 't'
    assert pg.psql('SELECT id, name FROM items ORDER BY id', 'app_sqitch').splitlines() == ['1|one', '2|two']
    status = subprocess.run(['sqitch', 'status', '--target', 'db:pg:app_sqitch'], cwd=r2, capture_output=True,
                            text=True, env=dict(os.environ, **base['environment']), check=False)
    assert [line.split()[-1] for line in status.stdout.splitlines() if line.startswith('# Name:')] == ['items']
    # a release whose second change fails: sqitch reverts what that deploy did, the rollback finds nothing to undo
    broken = SQITCH_CHANGES[:2] + [('broken', 'CREATE TABLE broken (id INTEGER); INSERT INTO nowhere VALUES (1);',
                                    'DROP TABLE broken;')]
    r3 = sqitch_release(tmp_path, 'r3', broken)
    with pytest.raises(FailsafeError, match='sqitch deploy failed'):
        deploy(tmp_path, 'run-3', dict(base, migrations=r3))
    cols = pg.psql("SELECT column_name FROM information_schema.columns WHERE table_name = 'items' "
                   'ORDER BY ordinal_position', 'app_sqitch').splitlines()
    assert cols == ['id', 'name'] and pg.psql("SELECT to_regclass('public.broken') IS NULL", 'app_sqitch') == 't'
    out = engine.rollback(params(tmp_path, 'run-3', 'state-run-3'), _run)
    assert out['failsafe_rollback']['layers'][0]['method'] == 'nothing to undo'
    assert DeployState(p2['state_dir'], 'app').read_journal()['status'] == 'rolled_back'
