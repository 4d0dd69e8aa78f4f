# -*- coding: utf-8 -*-
# Copyright: Contributors to failsafe.deploy
# SPDX-License-Identifier: GPL-3.0-or-later
"""Given a host on release 2.0.0 with an SQLite database, when a deploy of 3.0.0 is rolled back, then every summary
of the rollback names the release the app really serves afterwards and what each layer undid: the rollback's last
line, the lines under the ROLLED BACK banner, the incident report's per-host rows and the rolled_back alert.

What the app serves is asked of the app itself (HTTP /version) and of the host (the ``current`` link, the database
schema), never of the collection. Two cases:

- the migration of 3.0.0 fails: nothing was activated, 2.0.0 kept running; the summary must not say ``None``;
- the migration of 3.0.0 succeeds and its health check fails: the rollback is staged (the code stage, then the
  database stage, each a call of its own), and its last line, printed by the database stage, sums up both stages.

Real ansible-playbook runs of failsafe.deploy.deploy on this machine (the examples/demo setup in a private directory,
the auto_rollback callback, the example app under a real supervisord)."""

import json
import os
import re
import sqlite3

import pytest

from support import add_migrations

pytestmark = pytest.mark.slow

ITEMS = {'0001_items.up.sql': 'CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL);',
         '0001_items.down.sql': 'DROP TABLE items;'}
NOTE = {'0002_note.up.sql': 'ALTER TABLE items ADD COLUMN note TEXT;',
        '0002_note.down.sql': 'ALTER TABLE items DROP COLUMN note;'}
BROKEN = {'0002_note.up.sql': 'ALTER TABLE no_such_table ADD COLUMN note TEXT;',
          '0002_note.down.sql': 'SELECT 1;'}


def _setup(d, tmp_path, second):
    dist = os.path.join(d.dir, 'dist')
    add_migrations(os.path.join(dist, 'app-2.0.0.tar.gz'), ITEMS)
    add_migrations(os.path.join(dist, 'app-3.0.0.tar.gz'), dict(ITEMS, **second))
    db = os.path.join(d.dir, 'app.db')
    sqlite3.connect(db).close()
    extra = tmp_path / 'db.json'
    extra.write_text(json.dumps({'failsafe_migrate_enabled': True, 'failsafe_migrate_engine': 'sqlite',
                                 'failsafe_migrate_database': db}))
    ok = d.deploy('2.0.0', '-e', '@%s' % extra)
    assert ok.returncode == 0, ok.stdout[-6000:]
    return db, extra


def _columns(db):
    conn = sqlite3.connect(db)
    try:
        return [row[1] for row in conn.execute('PRAGMA table_info(items)')]
    finally:
        conn.close()


def _served(d):
    """The release the host really runs: its current link and what the app answers, which must agree."""
    link = os.path.basename(d.current())
    status, version = d.http('/version')
    assert status == 200 and version == link, (status, version, link)
    return version


def _rollback_lines(stdout):
    """The rollback's own summary lines (the module's msg, relayed from the rollback run), in order."""
    return re.findall(r'"msg": "((?:rolled back|undid the) [^"]*)"', stdout)


def _banner_lines(stdout):
    """The lines the callback prints under its ROLLED BACK banner, one per host."""
    lines = stdout.splitlines()
    start = [i for i, line in enumerate(lines) if line.startswith('failsafe auto_rollback: ROLLED BACK')]
    assert start, stdout[-4000:]
    out = []
    for line in lines[start[-1] + 1:]:
        if not line.startswith('  ') or line.startswith('  incident report'):
            break
        out.append(line.strip())
    return out


def _said(d, stdout):
    """Everything the run said about the host's rollback: the last rollback line, the banner line of localhost,
    the report's per-host values and Markdown row, the rolled_back alert's summary."""
    report_path = d.incident_reports()[-1]
    with open(report_path) as handle:
        report = json.load(handle)
    with open(report_path[:-len('.json')] + '.md') as handle:
        md = handle.read()
    with open(os.path.join(d.incidents, 'alerts.jsonl')) as handle:
        alerts = [json.loads(line) for line in handle if line.strip()]
    rolled = [a for a in alerts if a.get('event') == 'rolled_back' and a.get('incident_id') == report['incident_id']]
    row = re.search(r'^\| localhost \| ok \| ([^|]*) \|', md, re.M)
    bullet = re.search(r'^- \*\*localhost\*\* (.*)$', md, re.M)
    return {'report': report, 'last': _rollback_lines(stdout)[-1], 'banner': _banner_lines(stdout),
            'restored': report['rollback']['hosts']['localhost']['restored'],
            'md_row': row.group(1).strip() if row else None, 'md_bullet': bullet.group(1) if bullet else None,
            'alert': rolled[-1]['summary'] if rolled else None}


def test_a_failed_migration_is_summed_up_with_the_release_that_kept_running(local_deploy, tmp_path):
    d = local_deploy
    db, extra = _setup(d, tmp_path, BROKEN)
    failed = d.deploy('3.0.0', '-e', '@%s' % extra)
    assert failed.returncode != 0
    assert 'migration 0002 failed' in failed.stdout
    # the host, asked directly: 2.0.0 serves, the schema is 2.0.0's
    served = _served(d)
    assert served == '2.0.0'
    assert _columns(db) == ['id', 'name']
    said = _said(d, failed.stdout)
    assert said['report']['outcome'] == 'rolled_back'
    # the rollback's last line: the release that runs, that 3.0.0 never ran, and what each layer undid
    last = said['last']
    assert 'None' not in last, last
    assert '3.0.0 -> %s, the release this host runs now' % served in last, last
    assert 'never activated' in last and 'restore proven' in last, last
    # the banner and the report name the same release and the same undone layers; none says None
    banner = said['banner']
    assert len(banner) == 1 and banner[0].startswith('localhost: runs release %s (3.0.0 rolled back); undone: '
                                                     % served), banner
    assert said['md_bullet'].startswith('runs release %s (3.0.0 rolled back); undone: ' % served)
    for words in ('0 path(s) restored (none had changed)', 'app.db unchanged (nothing to undo)',
                  'staged release 3.0.0 removed'):
        assert words in last, last
        assert words in banner[0], banner
        assert words in said['md_bullet'], said['md_bullet']
    assert 'None' not in banner[0] + said['md_bullet']
    assert said['restored']['running_release'] == served
    assert said['restored']['target_release'] == served
    assert said['md_row'] == served
    assert said['alert'].endswith('rolled back localhost to release %s' % served), said['alert']


def test_the_last_line_of_a_staged_rollback_sums_up_every_stage(local_deploy, tmp_path):
    d = local_deploy
    db, extra = _setup(d, tmp_path, NOTE)
    failed = d.deploy('3.0.0', '-e', '@%s' % extra)
    assert failed.returncode != 0
    served = _served(d)
    assert served == '2.0.0'
    assert _columns(db) == ['id', 'name']
    said = _said(d, failed.stdout)
    assert said['report']['outcome'] == 'rolled_back'
    lines = _rollback_lines(failed.stdout)
    # staged: the code stage's call, then the database stage's call, whose line is the last one
    assert len(lines) == 2 and lines[0].startswith('undid the code stage(s)'), lines
    assert 'still to undo: the database stage(s)' in lines[0]
    last = said['last']
    paths = said['restored']['restored']
    assert len(paths) >= 2, paths
    assert 'None' not in last, last
    assert '3.0.0 -> %s, the release this host runs now' % served in last, last
    # both stages, each with what its layers undid; not the database stage alone
    code = re.search(r'code stage: ([^;]*)', last)
    database = re.search(r'database stage: ([^;]*)', last)
    assert code and database, last
    assert '%d path(s) restored' % len(paths) in code.group(1), last
    assert 'release switched back from 3.0.0 to %s (3.0.0 quarantined)' % served in code.group(1), last
    assert 'service restarted' in code.group(1), last
    assert 'migrated back (undid 0002) to 0001' in database.group(1), last
    assert 'nothing' not in last, last
    # the banner line and the report sum up both stages the same way
    banner = said['banner']
    assert len(banner) == 1 and banner[0].startswith('localhost: runs release %s (3.0.0 rolled back); undone: '
                                                     % served), banner
    for words in ('%d path(s) restored' % len(paths), 'release switched back from 3.0.0 to %s' % served,
                  'service restarted', 'migrated back (undid 0002) to 0001'):
        assert words in banner[0], banner
        assert words in said['md_bullet'], said['md_bullet']
    assert said['restored']['running_release'] == served
    assert said['md_row'] == served
    assert said['alert'].endswith('rolled back localhost to release %s' % served), said['alert']
