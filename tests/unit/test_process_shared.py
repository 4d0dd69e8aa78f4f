# -*- coding: utf-8 -*-
# Copyright: Contributors to failsafe.deploy
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The servers and files the unit tests of one test process share (tests/process_shared.py, tests/dbservers.py,
tests/unit/conftest.py), in a real pytest session that runs each test in a fork of its own as ansible-test units
does (its ansible_forked plugin): the tests find the PostgreSQL cluster and the MariaDB server the first one started,
each test has a database of its own, a file made ``once`` is made once, and when the session ends no server is left
running and the shared directory is gone."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import json
import os
import subprocess
import sys

from ansible_collections.failsafe.deploy.tests import dbservers, process_shared
from ansible_collections.failsafe.deploy.tests.requires import require, require_root

COLLECTIONS = os.path.abspath(os.path.join(os.path.dirname(dbservers.__file__), '..', '..', '..', '..'))


def _forked_plugin_dir():
    """Where ansible-test keeps its ansible_forked plugin: on the path already under ansible-test units."""
    try:
        import ansible_forked  # pylint: disable=import-outside-toplevel
        return os.path.dirname(ansible_forked.__file__)
    except ImportError:
        pass
    try:
        import ansible_test  # pylint: disable=import-outside-toplevel
    except ImportError:
        return None
    return os.path.join(os.path.dirname(ansible_test.__file__), '_util', 'target', 'pytest', 'plugins')


# Each test records what it saw: its own pid, the servers' pids and directories, the databases there, the shared file.
INNER = r'''
import json, os
from ansible_collections.failsafe.deploy.tests import dbservers, process_shared

def _made(path):
    with open(os.environ['OUT'] + '.made', 'a') as handle:
        handle.write(path + '\n')
    with open(path, 'w') as handle:
        handle.write('built')

def _record(name):
    pg, maria = dbservers.shared('postgres'), dbservers.shared('mariadb')
    pg.createdb('db_' + name)
    maria.createdb('db_' + name)
    with open(os.path.join(pg.data, 'postmaster.pid')) as handle:
        pg_pid = int(handle.readline())
    shared = process_shared.once('artifact', _made)
    with open(os.environ['OUT'], 'a') as handle:
        handle.write(json.dumps({
            'test': name, 'pid': os.getpid(), 'pg_pid': pg_pid, 'pg_base': pg.base, 'maria_pid': maria._pid(),
            'maria_base': maria.base, 'shared': os.environ[process_shared.ENV], 'artifact': shared,
            'pg_dbs': sorted(pg.psql("SELECT datname FROM pg_database WHERE datname LIKE 'db_%'").split()),
            'maria_dbs': sorted(maria.sql("SHOW DATABASES LIKE 'db\\_%'").split())}) + '\n')

def test_one():
    _record('one')

def test_two():
    _record('two')
'''


def _alive(pid):
    try:
        with open('/proc/%d/stat' % pid) as handle:
            return handle.read().rsplit(')', 1)[1].split()[0] not in ('Z', 'X')
    except (OSError, IndexError):
        return False


def test_forked_tests_share_one_server_of_each_engine_which_the_session_end_stops(tmp_path):
    require_root('the database servers run as their own OS users')
    require(dbservers.pg_bin() and not dbservers.ensure_prereqs(), 'PostgreSQL and MariaDB (scripts/db-prereqs.sh)')
    forked = _forked_plugin_dir()
    require(forked, "ansible-test's ansible_forked pytest plugin (ansible-core's ansible_test)")
    (tmp_path / 'test_inner.py').write_text(INNER)
    out = tmp_path / 'seen.jsonl'
    env = dict(os.environ, OUT=str(out), PYTEST_PLUGINS='ansible_forked',
               PYTHONPATH=os.pathsep.join([COLLECTIONS, forked, os.environ.get('PYTHONPATH', '')]))
    env.pop(process_shared.ENV, None)
    proc = subprocess.run([sys.executable, '-m', 'pytest', '-q', '-p', 'no:cacheprovider', '--rootdir', str(tmp_path),
                           '-p', 'ansible_collections.failsafe.deploy.tests.unit.conftest', str(tmp_path)],
                          cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    one, two = [json.loads(line) for line in out.read_text().splitlines()]
    # two forks of the one test process, which named the shared directory for both
    assert one['pid'] != two['pid'] and one['pid'] != os.getpid()
    assert one['shared'] == two['shared'] and one['shared'] != os.environ.get(process_shared.ENV)
    # the servers the first test started served the second: same processes, same directories, both databases there
    assert one['pg_pid'] == two['pg_pid'] and one['pg_base'] == two['pg_base']
    assert one['maria_pid'] == two['maria_pid'] and one['maria_base'] == two['maria_base']
    assert one['pg_dbs'] == ['db_one'] and two['pg_dbs'] == ['db_one', 'db_two']
    assert one['maria_dbs'] == ['db_one'] and two['maria_dbs'] == ['db_one', 'db_two']
    # made once, by the first test
    assert one['artifact'] == two['artifact'] and (tmp_path / 'seen.jsonl.made').read_text() == one['artifact'] + '\n'
    # the session's end stopped both servers and removed them, and the shared directory
    for pid in (one['pg_pid'], one['maria_pid']):
        assert not _alive(pid), 'server %d left running after the session' % pid
    for path in (one['pg_base'], one['maria_base'], one['shared']):
        assert not os.path.exists(path), '%s left after the session' % path
