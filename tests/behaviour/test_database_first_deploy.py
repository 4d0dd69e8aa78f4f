# -*- coding: utf-8 -*-
# Copyright: Contributors to failsafe.deploy
# SPDX-License-Identifier: GPL-3.0-or-later
"""Given a first deploy whose SQLite database file does not exist yet, then the preflight refuses it before anything
changes unless failsafe_migrate_create lets the deploy create the file; a deploy that created it and failed after the
migration is rolled back to no database file.

Real ansible-playbook runs of failsafe.deploy.deploy on this machine (the examples/demo setup in a private directory,
shared by the tests of this file in their order, the auto_rollback callback, the example app under a real
supervisord). The releases get a migrations/ directory that creates a table. The oracle is the host: the database
file (read with sqlite3), the app root, the state directory, the app's HTTP answers, and the verdict of
scripts/deploy_outcome.py read from the incident report."""

import json
import os
import subprocess
import sys

import pytest

from support import ROOT, add_migrations, tree_digest

pytestmark = pytest.mark.slow

ITEMS = {'0001_items.up.sql': 'CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL);',
         '0001_items.down.sql': 'DROP TABLE items;'}
FAIL_HOOK = """---
- name: Fail after the migration
  ansible.builtin.fail:
    msg: the after-migrate hook fails on purpose
"""


@pytest.fixture(scope='module')
def site(module_deploy, tmp_path_factory):
    """The demo site, its releases with migrations, and the settings of a database file in a directory that exists."""
    d = module_deploy
    for version in ('1.0.0', '2.0.0'):
        add_migrations(os.path.join(d.dir, 'dist', 'app-%s.tar.gz' % version), ITEMS)
    d.db = os.path.join(d.dir, 'db', 'app.db')
    os.makedirs(os.path.dirname(d.db))
    base = tmp_path_factory.mktemp('settings')
    d.settings = {}
    for name, create in (('plain', False), ('create', True)):
        path = base / ('%s.json' % name)
        path.write_text(json.dumps({'failsafe_migrate_enabled': True, 'failsafe_migrate_engine': 'sqlite',
                                    'failsafe_migrate_database': d.db, 'failsafe_migrate_create': create}))
        d.settings[name] = '@%s' % path
    d.fail_hook = str(base / 'fail.yml')
    with open(d.fail_hook, 'w') as handle:
        handle.write(FAIL_HOOK)
    return d


def outcome(d, rc):
    proc = subprocess.run([sys.executable, os.path.join(ROOT, 'scripts', 'deploy_outcome.py'), '--report-dir',
                           d.incidents, '--rc', str(rc)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          check=False)
    return proc.returncode, dict(line.split('=', 1) for line in proc.stdout.splitlines() if '=' in line)


def new_incident(d, before):
    new = [r for r in d.incident_reports() if r not in before]
    assert len(new) == 1, new
    with open(new[0]) as handle:
        return json.load(handle)


def query(db, sql):
    import sqlite3
    conn = sqlite3.connect(db)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def releases(d):
    path = os.path.join(d.app_root, 'releases')
    return sorted(os.listdir(path)) if os.path.isdir(path) else []


def test_a_first_deploy_whose_sqlite_file_is_missing_is_refused_before_any_change(site):
    d = site
    before = tree_digest([d.app_root, d.state_dir, d.program_conf, os.path.dirname(d.db)])
    reports = d.incident_reports()
    proc = d.deploy('1.0.0', '-e', d.settings['plain'])
    out = proc.stdout
    assert proc.returncode != 0, out[-4000:]
    assert 'Refusing to deploy: the SQLite database %s does not exist' % d.db in out, out[-4000:]
    assert 'failsafe_migrate_create: true' in out and 'no transaction opened' in out
    assert 'Open the deploy transaction' not in out, 'the refusal comes before the open phase'
    # nothing changed on the host: no database file, no release, no transaction, no history line
    assert tree_digest([d.app_root, d.state_dir, d.program_conf, os.path.dirname(d.db)]) == before
    assert not os.path.lexists(d.db) and os.listdir(os.path.dirname(d.db)) == []
    assert releases(d) == []
    assert not os.path.exists(os.path.join(d.state_dir, 'demo-app', 'journal.json'))
    assert not os.path.exists(os.path.join(d.state_dir, 'demo-app', 'history.jsonl'))
    assert not os.path.exists(d.lock_path())
    # the report: refused before any change, cause input, and the verdict a pipeline reads
    incident = new_incident(d, reports)
    assert incident['outcome'] == 'refused', incident['outcome']
    assert incident['summary']['outcome_label'] == 'REFUSED BEFORE ANY CHANGE'
    assert incident['summary']['causes'] == ['input'], incident['summary']
    assert [(f['cause'], f['evidence'], f['host']) for f in incident['failures']] == [
        ('input', 'database file missing', 'localhost')]
    assert incident['rollback']['hosts'] == {} and incident['transactions'] == {}
    assert 'failsafe_migrate_create' in json.dumps(incident['failures'])
    assert not any(n.endswith('.rollback.log') for n in os.listdir(d.incidents))
    assert outcome(d, proc.returncode)[0] == 4 and outcome(d, proc.returncode)[1]['outcome'] == 'refused'


def test_a_check_run_with_create_says_it_would_create_the_file_and_changes_nothing(site):
    d = site
    before = tree_digest([d.app_root, d.state_dir, d.program_conf, os.path.dirname(d.db)])
    proc = d.deploy('1.0.0', '-e', d.settings['create'], '--check')
    assert proc.returncode == 0, proc.stdout[-6000:]
    assert 'would create the SQLite database %s (it does not exist yet)' % d.db in proc.stdout, proc.stdout[-6000:]
    assert not os.path.lexists(d.db) and os.listdir(os.path.dirname(d.db)) == []
    assert tree_digest([d.app_root, d.state_dir, d.program_conf, os.path.dirname(d.db)]) == before
    assert releases(d) == []


def test_a_first_deploy_that_created_the_file_and_failed_after_the_migration_removes_it(site):
    d = site
    reports = d.incident_reports()
    proc = d.deploy('2.0.0', '-e', d.settings['create'], '-e', 'failsafe_migrate_after_tasks=%s' % d.fail_hook)
    out = proc.stdout
    assert proc.returncode != 0, out[-4000:]
    assert 'the after-migrate hook fails on purpose' in out
    # the migration had run on the file the deploy created (its journal says so); the rollback removed it
    journal = d.journal()
    assert journal['status'] == 'rolled_back' and journal['release'] == '2.0.0', journal.get('status')
    entry = [e for e in journal['layers'] if e['kind'] == 'database'][0]
    assert entry['record']['created']['path'] == d.db and entry['record']['pending'] == ['0001']
    assert not os.path.lexists(d.db), 'the database file the deploy created is gone'
    assert os.listdir(os.path.dirname(d.db)) == [], 'and the lock file beside it'
    assert not os.path.lexists(os.path.join(d.app_root, 'current'))
    # every summary says so
    words = 'database %s removed (this deploy created it)' % d.db
    assert words in out, out[-6000:]
    incident = new_incident(d, reports)
    assert incident['outcome'] == 'rolled_back'
    assert words in json.dumps(incident)
    assert outcome(d, proc.returncode)[0] == 1


def test_a_first_deploy_with_create_makes_the_database_migrates_it_and_serves(site):
    d = site
    assert not os.path.lexists(d.db)
    proc = d.deploy('1.0.0', '-e', d.settings['create'])
    assert proc.returncode == 0, proc.stdout[-6000:]
    record = [e for e in d.journal()['layers'] if e['kind'] == 'database'][0]['record']
    assert record['created']['path'] == d.db and record['created']['inode'] == os.stat(d.db).st_ino
    assert query(d.db, 'SELECT version FROM failsafe_migrations') == [('0001',)]
    assert [r[1] for r in query(d.db, 'PRAGMA table_info(items)')] == ['id', 'name']
    assert d.current() == 'releases/1.0.0' and d.http('/version') == (200, '1.0.0')
    assert d.journal()['status'] == 'committed'
    # the next deploy finds the file, which create leaves as it is (backed up, not created again)
    inode = os.stat(d.db).st_ino
    again = d.deploy('1.0.0', '-e', d.settings['create'], '-e', 'failsafe_force=true')
    assert again.returncode == 0, again.stdout[-6000:]
    assert os.stat(d.db).st_ino == inode and query(d.db, 'SELECT version FROM failsafe_migrations') == [('0001',)]
    record = [e for e in d.journal()['layers'] if e['kind'] == 'database'][0]['record']
    assert 'created' not in record and record['backup']['method'] == 'backup'
