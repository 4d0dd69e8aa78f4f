# -*- coding: utf-8 -*-
# Copyright: Contributors to failsafe.deploy
# SPDX-License-Identifier: GPL-3.0-or-later
"""Given the demo setup with a PostgreSQL database migrated by failsafe.deploy.migrate, when a deploy whose health
check fails after a successful migration is rolled back, then code and schema are back and the rows written between
the migration and the rollback are still there.

Real ansible-playbook runs of playbooks/deploy.yml on this machine (the examples/demo setup in a private
directory, the auto_rollback callback, the example app under a real supervisord) against a private PostgreSQL 15
cluster. The release archives of the example app get a migrations/ directory: 1.0.0 and 2.0.0 create the table,
3.0.0 (unhealthy) adds a column and a table. The migrate step's after-hook writes a row, as the new release would
while it serves."""

import json
import os
import sys

import pytest

from support import ROOT, add_migrations

if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from tests import dbservers  # noqa: E402  pylint: disable=wrong-import-position
from tests.requires import require, require_root  # noqa: E402  pylint: disable=wrong-import-position

pytestmark = pytest.mark.slow

MIGRATIONS = {
    '0001_items.up.sql': 'CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL);',
    '0001_items.down.sql': 'DROP TABLE items;',
    '0002_note.up.sql': 'ALTER TABLE items ADD COLUMN note TEXT;\nCREATE TABLE tags (id INTEGER PRIMARY KEY);',
    '0002_note.down.sql': 'DROP TABLE tags;\nALTER TABLE items DROP COLUMN note;',
}
RELEASE_MIGRATIONS = {'1.0.0': ['0001'], '2.0.0': ['0001'], '3.0.0': ['0001', '0002']}

HOOK = """---
- name: The new release writes a row while it serves
  ansible.builtin.command:
    argv: [psql, -X, -v, ON_ERROR_STOP=1, -h, "{{ failsafe_migrate_host }}", -p, "{{ failsafe_migrate_port }}",
           -U, postgres, -d, "{{ failsafe_migrate_database }}", -c,
           "INSERT INTO items (id, name, note) VALUES (100, 'written after the migration', 'by 3.0.0')"]
  changed_when: true
"""


@pytest.fixture(scope='module')
def pg():
    require_root('PostgreSQL tests need root (the cluster runs as the postgres OS user)')
    if not dbservers.pg_bin():
        error = dbservers.ensure_prereqs()
        require(dbservers.pg_bin(), 'no PostgreSQL binaries (/usr/lib/postgresql/*/bin/initdb) after '
                'scripts/db-prereqs.sh: %s' % error)
    server = dbservers.Postgres().start()
    yield server
    server.stop()


def test_a_failed_health_check_after_a_migration_rolls_code_and_schema_back_and_keeps_the_rows(
        local_deploy, pg, tmp_path):
    d = local_deploy
    dist = os.path.join(d.dir, 'dist')
    for version, wanted in RELEASE_MIGRATIONS.items():
        add_migrations(os.path.join(dist, 'app-%s.tar.gz' % version),
                       dict((k, v) for k, v in MIGRATIONS.items() if k[:4] in wanted))
    pg.createdb('demo')
    hook = tmp_path / 'write-a-row.yml'
    hook.write_text(HOOK)
    extra = tmp_path / 'db.json'
    settings = {'failsafe_migrate_enabled': True, 'failsafe_migrate_engine': 'postgresql',
                'failsafe_migrate_database': 'demo', 'failsafe_migrate_host': pg.base,
                'failsafe_migrate_port': str(pg.port), 'failsafe_migrate_user': 'postgres',
                'failsafe_migrate_options': {'bin_dir': pg.bin}}
    extra.write_text(json.dumps(settings))
    d.env['PATH'] = pg.bin + os.pathsep + d.env['PATH']

    proc = d.deploy('1.0.0', '-e', '@%s' % extra)
    assert proc.returncode == 0, proc.stdout[-6000:]
    assert pg.psql('SELECT version FROM failsafe_migrations', 'demo') == '0001'
    pg.psql("INSERT INTO items VALUES (1, 'one'), (2, 'two')", 'demo')

    failed = d.deploy('3.0.0', '-e', '@%s' % extra, '-e', 'failsafe_migrate_after_tasks=%s' % hook)
    assert failed.returncode != 0
    assert 'Back up and migrate the database' in failed.stdout
    # code back on 1.0.0, serving
    assert d.current() == 'releases/1.0.0'
    assert d.http('/version') == (200, '1.0.0')
    # schema back: the down steps of 3.0.0 (still on disk) ran; 1.0.0 does not know them
    cols = pg.psql("SELECT column_name FROM information_schema.columns WHERE table_name = 'items' "
                   'ORDER BY ordinal_position', 'demo').splitlines()
    assert cols == ['id', 'name']
    assert pg.psql("SELECT to_regclass('public.tags') IS NULL", 'demo') == 't'
    assert pg.psql('SELECT version FROM failsafe_migrations', 'demo') == '0001'
    # the row written between the migration and the rollback is still there
    assert pg.psql('SELECT id, name FROM items ORDER BY id', 'demo').splitlines() == [
        '1|one', '2|two', '100|written after the migration']
    journal = d.journal()
    assert journal['status'] == 'rolled_back' and journal['release'] == '3.0.0'
    kinds = [entry['kind'] for entry in journal['layers']]
    assert 'database' in kinds
    # the incident report says how the database came back
    reports = d.incident_reports()
    with open(reports[-1]) as f:
        incident = json.load(f)
    assert incident['outcome'] == 'rolled_back'
    assert 'reverse migrations' in json.dumps(incident)


PLAYBOOK = """---
- name: Apply the database layer with a password
  hosts: localhost
  connection: local
  gather_facts: false
  vars:
    ansible_python_interpreter: "{{ ansible_playbook_python }}"
  tasks:
    - name: Open a transaction of layers only
      failsafe.deploy.transaction:
        phase: open
        state_dir: %(state)s
        run_id: run-secret
    - name: Migrate
      failsafe.deploy.transaction:
        phase: apply
        state_dir: %(state)s
        run_id: run-secret
        layer:
          kind: database
          engine: sqlite
          database: %(db)s
          password: s3cret-db-password
          migrations: %(migrations)s
          backup_dir: %(backups)s
      register: out
    - name: Show what came back
      ansible.builtin.debug:
        var: out
"""


def test_the_password_of_the_database_layer_never_shows(tmp_path):
    """A real ansible-playbook run at -vvv: the layer's secret option is masked in the module's result and never
    written to the journal."""
    import sqlite3
    import subprocess
    from support import VENV_BIN
    db = str(tmp_path / 'app.db')
    conn = sqlite3.connect(db)
    conn.execute('CREATE TABLE items (id INTEGER PRIMARY KEY)')
    conn.close()
    migrations = tmp_path / 'migrations'
    migrations.mkdir()
    (migrations / '0001_note.up.sql').write_text('ALTER TABLE items ADD COLUMN note TEXT;')
    (migrations / '0001_note.down.sql').write_text('ALTER TABLE items DROP COLUMN note;')
    playbook = tmp_path / 'play.yml'
    playbook.write_text(PLAYBOOK % {'state': tmp_path / 'state', 'db': db, 'migrations': migrations,
                                    'backups': tmp_path / 'backups'})
    env = dict(os.environ, PATH=VENV_BIN + os.pathsep + os.environ['PATH'],
               ANSIBLE_COLLECTIONS_PATH=os.path.join(ROOT, '.build', 'collections'),
               ANSIBLE_COLLECTIONS_SCAN_SYS_PATH='false', ANSIBLE_HOME=str(tmp_path / 'ansible-home'),
               ANSIBLE_NOCOLOR='1')
    proc = subprocess.run(['ansible-playbook', '-i', 'localhost,', str(playbook), '-vvv'], env=env, cwd=str(tmp_path),
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    conn = sqlite3.connect(db)
    assert [r[1] for r in conn.execute('PRAGMA table_info(items)')] == ['id', 'note']   # it did run
    conn.close()
    assert 's3cret-db-password' not in proc.stdout + proc.stderr
    assert 'VALUE_SPECIFIED_IN_NO_LOG_PARAMETER' in proc.stdout
    with open(str(tmp_path / 'state' / 'app' / 'journal.json')) as handle:
        assert 's3cret-db-password' not in handle.read()


RESTORE_ONLY = {
    '0001_items.up.sql': MIGRATIONS['0001_items.up.sql'],
    '0001_items.down.sql': MIGRATIONS['0001_items.down.sql'],
    '0002_note.up.sql': 'ALTER TABLE items ADD COLUMN note TEXT;',     # no down step: accepted as restore-only
}

SQLITE_HOOK = """---
- name: The new release writes a row while it serves
  ansible.builtin.command:
    argv: ["{{ ansible_playbook_python }}", -c, "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]);
           c.execute(\\"INSERT INTO items (id, name, note) VALUES (100, 'written after the migration', 'x')\\");
           c.commit()", "{{ failsafe_migrate_database }}"]
  changed_when: true
"""


def test_a_restore_that_would_drop_rows_written_since_is_refused_until_the_loss_is_allowed(local_deploy, tmp_path):
    """SQLite this time: the database file lives beside the demo. The rollback of a restore-only migration refuses to
    restore the backup over a row written since the deploy (ROLLBACK FAILED naming the database layer, nothing
    dropped); a rollback run again with the data loss allowed restores it and says which writes it dropped."""
    import sqlite3
    d = local_deploy
    dist = os.path.join(d.dir, 'dist')
    for version, wanted in RELEASE_MIGRATIONS.items():
        add_migrations(os.path.join(dist, 'app-%s.tar.gz' % version),
                       dict((k, v) for k, v in RESTORE_ONLY.items() if k[:4] in wanted))
    db = os.path.join(d.dir, 'app.db')
    sqlite3.connect(db).close()
    hook = tmp_path / 'write-a-row.yml'
    hook.write_text(SQLITE_HOOK)
    extra = tmp_path / 'db.json'
    extra.write_text(json.dumps({'failsafe_migrate_enabled': True, 'failsafe_migrate_engine': 'sqlite',
                                 'failsafe_migrate_database': db, 'failsafe_migrate_restore_only': ['0002']}))

    def read(sql):
        conn = sqlite3.connect(db)
        try:
            return conn.execute(sql).fetchall()
        finally:
            conn.close()

    proc = d.deploy('1.0.0', '-e', '@%s' % extra)
    assert proc.returncode == 0, proc.stdout[-6000:]
    conn = sqlite3.connect(db)
    conn.execute("INSERT INTO items VALUES (1, 'one'), (2, 'two')")
    conn.commit()
    conn.close()

    failed = d.deploy('3.0.0', '-e', '@%s' % extra, '-e', 'failsafe_migrate_after_tasks=%s' % hook)
    assert failed.returncode != 0
    assert 'ROLLBACK FAILED' in failed.stdout and 'would drop the writes made since the deploy' in failed.stdout
    # the code went back; the database was left as it is, the row written since still there
    assert d.current() == 'releases/1.0.0'
    assert [r[1] for r in read('PRAGMA table_info(items)')] == ['id', 'name', 'note']
    assert [r[0] for r in read('SELECT id FROM items ORDER BY id')] == [1, 2, 100]
    journal = d.journal()
    assert journal['status'] == 'rollback_failed' and 'database' in journal['outcome']['failed_step']

    allowed = d.playbook('failsafe.deploy.rollback', '-e', json.dumps(
        {'failsafe_rollback_layer_secrets': {'database': {'allow_data_loss': True}}}))
    assert allowed.returncode == 0, allowed.stdout[-6000:]
    assert [r[1] for r in read('PRAGMA table_info(items)')] == ['id', 'name']
    assert [r[0] for r in read('SELECT id FROM items ORDER BY id')] == [1, 2]
    assert [r[0] for r in read('SELECT version FROM failsafe_migrations')] == ['0001']
    assert d.journal()['status'] == 'rolled_back'
    assert 'DATA LOSS (allowed for this deploy)' in allowed.stdout and 'items' in allowed.stdout


ALEMBIC_ENV = '''import os
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
ALEMBIC_REVISION = '''revision = %(rev)r
down_revision = %(down)r
branch_labels = None
depends_on = None

from alembic import op


def upgrade():
    op.execute(%(up)r)


def downgrade():
    op.execute(%(down_sql)r)
'''
# (name, previous, up, down): release 1.0.0 and 2.0.0 ship the first, 3.0.0 all three
CHANGES = [
    ('a1', None, 'CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL)', 'DROP TABLE items'),
    ('b2', 'a1', 'ALTER TABLE items ADD COLUMN note TEXT', 'ALTER TABLE items DROP COLUMN note'),
    ('c3', 'b2', 'CREATE TABLE tags (id INTEGER PRIMARY KEY)', 'DROP TABLE tags'),
]


def tool_project(tool, changes):
    """The migrations/ directory of a release, as {path: text}, for an Alembic or a sqitch project."""
    if tool == 'alembic':
        files = {'alembic.ini': '[alembic]\nscript_location = %(here)s\n', 'env.py': ALEMBIC_ENV,
                 'script.py.mako': ''}
        for rev, down, up, down_sql in changes:
            values = {'rev': rev, 'down': down, 'up': up, 'down_sql': down_sql}
            files['versions/%s.py' % rev] = ALEMBIC_REVISION % values
        return files
    files = {'sqitch.conf': '[core]\n\tengine = sqlite\n'}
    plan = ['%syntax-version=1.0.0', '%project=app', '']
    for name, dummy, up, down in changes:
        plan.append('%s 2026-01-01T00:00:00Z Ops <ops@example.org> # %s' % (name, name))
        files['deploy/%s.sql' % name] = 'BEGIN;\n%s;\nCOMMIT;\n' % up
        files['revert/%s.sql' % name] = 'BEGIN;\n%s;\nCOMMIT;\n' % down
        files['verify/%s.sql' % name] = 'SELECT 1;\n'
    files['sqitch.plan'] = '\n'.join(plan) + '\n'
    return files


@pytest.mark.parametrize('tool', ['alembic', 'sqitch'])
def test_a_tool_project_deploys_fails_and_rolls_back_to_the_revision_recorded_before(local_deploy, tmp_path, tool):
    """Alembic and sqitch through their own commands, in real deploys: 3.0.0 migrates to c3, fails its health
    check, and the rollback takes the database down to a1 (recorded before the deploy) with 3.0.0's own down steps,
    keeping the row written in between."""
    import shutil
    import sqlite3
    if tool == 'sqitch' and not shutil.which('sqitch'):
        require_root('sqitch is missing and only root can install it (scripts/db-prereqs.sh)')
        error = dbservers.ensure_prereqs()
        if error:
            pytest.fail('scripts/db-prereqs.sh failed: %s' % error)
    d = local_deploy
    dist = os.path.join(d.dir, 'dist')
    for version in ('1.0.0', '3.0.0'):
        add_migrations(os.path.join(dist, 'app-%s.tar.gz' % version),
                       tool_project(tool, CHANGES if version == '3.0.0' else CHANGES[:1]))
    db = os.path.join(d.dir, 'app.db')
    sqlite3.connect(db).close()
    settings = {'failsafe_migrate_enabled': True, 'failsafe_migrate_engine': 'sqlite',
                'failsafe_migrate_database': db, 'failsafe_migrate_tool': tool}
    if tool == 'alembic':
        settings['failsafe_migrate_environment'] = {'APP_DATABASE_URL': 'sqlite:///%s' % db}
    else:
        settings['failsafe_migrate_options'] = {'sqitch_target': 'db:sqlite:%s' % db}
        settings['failsafe_migrate_environment'] = {'SQITCH_USER_NAME': 'ops', 'SQITCH_USER_EMAIL': 'ops@example.org',
                                                    'HOME': str(tmp_path)}
    extra = tmp_path / 'db.json'
    extra.write_text(json.dumps(settings))
    hook = tmp_path / 'write-a-row.yml'
    hook.write_text(SQLITE_HOOK)

    def read(sql):
        conn = sqlite3.connect(db)
        try:
            return conn.execute(sql).fetchall()
        finally:
            conn.close()

    proc = d.deploy('1.0.0', '-e', '@%s' % extra)
    assert proc.returncode == 0, proc.stdout[-6000:]
    conn = sqlite3.connect(db)
    conn.execute("INSERT INTO items VALUES (1, 'one')")
    conn.commit()
    conn.close()
    failed = d.deploy('3.0.0', '-e', '@%s' % extra, '-e', 'failsafe_migrate_after_tasks=%s' % hook)
    assert failed.returncode != 0
    assert d.current() == 'releases/1.0.0'
    assert [r[1] for r in read('PRAGMA table_info(items)')] == ['id', 'name']
    assert read("SELECT name FROM sqlite_master WHERE name = 'tags'") == []
    assert [r[0] for r in read('SELECT id FROM items ORDER BY id')] == [1, 100]
    if tool == 'alembic':
        assert read('SELECT version_num FROM alembic_version') == [('a1',)]
    else:
        registry = sqlite3.connect(os.path.join(d.dir, 'sqitch.db'))
        try:
            assert [r[0] for r in registry.execute('SELECT change FROM changes')] == ['a1']
        finally:
            registry.close()
    journal = d.journal()
    assert journal['status'] == 'rolled_back' and 'database' in [e['kind'] for e in journal['layers']]


def test_check_mode_shows_the_sql_of_the_new_release_and_changes_nothing(local_deploy, tmp_path):
    """A --check deploy does not stage the release: the migrate role unpacks its migrations alone into a scratch
    directory, shows the SQL they would run, and leaves the database, the releases and the scratch space as they
    were."""
    import glob
    import sqlite3
    d = local_deploy
    dist = os.path.join(d.dir, 'dist')
    for version, wanted in RELEASE_MIGRATIONS.items():
        add_migrations(os.path.join(dist, 'app-%s.tar.gz' % version),
                       dict((k, v) for k, v in MIGRATIONS.items() if k[:4] in wanted))
    db = os.path.join(d.dir, 'app.db')
    sqlite3.connect(db).close()
    extra = tmp_path / 'db.json'
    extra.write_text(json.dumps({'failsafe_migrate_enabled': True, 'failsafe_migrate_engine': 'sqlite',
                                 'failsafe_migrate_database': db}))
    proc = d.deploy('1.0.0', '-e', '@%s' % extra)
    assert proc.returncode == 0, proc.stdout[-6000:]
    with open(db, 'rb') as handle:
        before = handle.read()
    scratch = set(glob.glob('/tmp/*.failsafe-migrations'))
    checked = d.deploy('3.0.0', '-e', '@%s' % extra, '--check')
    assert checked.returncode == 0, checked.stdout[-6000:]
    assert 'ALTER TABLE items ADD COLUMN note' in checked.stdout and 'CREATE TABLE tags' in checked.stdout
    with open(db, 'rb') as handle:
        assert handle.read() == before
    assert not os.path.exists(os.path.join(d.app_root, 'releases', '3.0.0'))
    assert set(glob.glob('/tmp/*.failsafe-migrations')) == scratch
    assert d.current() == 'releases/1.0.0'
