# -*- coding: utf-8 -*-
# Copyright: Contributors to failsafe.deploy
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The transaction engine: one check definition for every phase, and the single-call rollback of a partial apply.

Health checks run against a real local HTTP server; the service manager is ``none`` here (the service layer has
its own tests with a real supervisord)."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import json
import os
import threading
import time

from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from ansible_collections.failsafe.deploy.plugins.module_utils import _engine as engine
from ansible_collections.failsafe.deploy.plugins.module_utils._errors import FailsafeError
from ansible_collections.failsafe.deploy.plugins.module_utils._health import CheckError, normalize_checks
from ansible_collections.failsafe.deploy.plugins.module_utils._journal import DeployState
from ansible_collections.failsafe.deploy.plugins.module_utils._release import (
    ReleaseRoot, ensure_active, ensure_staged, ensure_verified,
)

from ansible_collections.failsafe.deploy.tests.unit.plugins.module_utils.test_layers import digest as tree_digest
from ansible_collections.failsafe.deploy.tests.unit.plugins.module_utils.test_release import (
    MIB, make_bomb, make_tarball, mount_small_fs,
)


def digest(app):
    """What a deploy changes and a rollback must put back: shared/ and where current points."""
    return (tree_digest(os.path.join(app, 'shared')), os.readlink(os.path.join(app, 'current')))


class Handler(BaseHTTPRequestHandler):
    hits = []

    def log_message(self, *args):
        pass

    def _answer(self):
        Handler.hits.append((self.command, self.path, self.headers.get('X-Probe')))
        if self.path.startswith('/slow'):
            time.sleep(0.3)
        status = 503 if self.path.startswith('/down') else 200
        body = json.dumps({'status': 'down' if status == 503 else 'ok', 'release': '1.0'}).encode()
        self.send_response(status)
        self.send_header('Content-Type', 'application/json')
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        if self.command != 'HEAD':
            self.wfile.write(body)

    do_GET = do_HEAD = do_POST = _answer


@pytest.fixture(scope='module')
def server():
    httpd = ThreadingHTTPServer(('127.0.0.1', 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield 'http://127.0.0.1:%d' % httpd.server_address[1]
    httpd.shutdown()


# Every option of a check, each set to something other than its default.
def every_option_checks(base):
    return [
        {'name': 'health', 'url': base + '/health', 'method': 'POST', 'status_code': [200, 204],
         'body_regex': '"status": *"ok"', 'json_query': "release == '1.0'", 'max_latency': 5,
         'headers': {'X-Probe': 'yes'}, 'timeout': 2, 'retries': 1, 'delay': 0.1, 'sleep': 0.1,
         'validate_certs': False, 'use_proxy': False},
        {'name': 'port', 'port': int(base.rsplit(':', 1)[1]), 'host': '127.0.0.1', 'type': 'tcp', 'retries': 0},
        {'name': 'cmd', 'cmd': ['sh', '-c', 'echo "{\\"ok\\": true}"; exit 3'], 'expect_rc': 3,
         'json_query': 'ok', 'retries': 0},
        {'name': 'slow', 'url': base + '/slow', 'max_latency': 0.1, 'retries': 1, 'sleep': 0},
        {'name': 'down', 'url': base + '/down', 'body_regex': 'never', 'retries': 2, 'sleep': 0},
    ]


def _shape(results):
    return [(r['name'], r['ok'], r['attempts'], r['expected'], r.get('status'), r.get('rc'), r['error'] is None)
            for r in results]


@pytest.fixture
def host(tmp_path):
    """An application root with 1.0 verified and current, 2.0 staged, and a state directory."""
    app = tmp_path / 'app'
    (app / 'shared').mkdir(parents=True)
    (app / 'shared' / 'app.json').write_text('{"label": "one"}')
    rr = ReleaseRoot(str(app))
    for rid in ('1.0', '2.0'):
        src = tmp_path / ('src-' + rid)
        src.mkdir()
        (src / 'VERSION').write_text(rid)
        ensure_staged(rr, rid, str(src))
    ensure_active(rr, '1.0')
    ensure_verified(rr, '1.0')
    return {'state_dir': str(tmp_path / 'state'), 'name': 'app', 'app_root': str(app), 'release': '2.0',
            'run_id': 'run-1', 'snapshot_paths': [str(app / 'current'), str(app / 'shared')],
            'service': {'manager': 'none'}, 'min_free_mb': 0, 'check_running': False}


def no_run(argv):
    raise AssertionError('no command expected with manager none: %r' % (argv,))


def test_verify_and_rollback_run_the_same_check_list_the_same_way(server, host):
    checks = every_option_checks(server)
    defaults = {'retries': 4, 'sleep': 0.05, 'timeout': 3, 'delay': 0}
    Handler.hits[:] = []
    engine.open_phase(dict(host), no_run)
    with pytest.raises(engine.EngineError) as verify_err:
        engine.verify_phase(dict(host, checks=checks, check_defaults=defaults))
    verify_hits = list(Handler.hits)
    verify_results = verify_err.value.details['checks']
    Handler.hits[:] = []
    with pytest.raises(engine.EngineError) as rollback_err:
        engine.rollback(dict(host, checks=checks, check_defaults=defaults, reason='test'), no_run)
    rollback_results = rollback_err.value.details['checks']
    assert _shape(verify_results) == _shape(rollback_results)
    assert Handler.hits == verify_hits, 'the same requests, methods and headers in both'
    by_name = dict((r['name'], r) for r in verify_results)
    # every option honoured: POST with the header, JSON query, tcp, expected exit code, latency ceiling, retries
    assert ('POST', '/health', 'yes') in verify_hits
    assert by_name['health']['ok'] and by_name['health']['attempts'] == 1
    assert by_name['port']['ok'] and by_name['cmd']['ok'] and by_name['cmd']['rc'] == 3
    assert not by_name['slow']['ok'] and by_name['slow']['attempts'] == 2 and 'latency' in by_name['slow']['error']
    assert not by_name['down']['ok'] and by_name['down']['attempts'] == 3 and by_name['down']['status'] == 503
    # the failure message names each failed check, what it expected and what came back
    for err in (verify_err.value.msg, rollback_err.value.msg):
        assert "check 'down' failed after 3 attempt(s)" in err
        assert 'status 503' in err and '"status": "down"' in err
        assert "check 'slow'" in err and "check 'health'" not in err


@pytest.mark.parametrize('bad, words', [
    ({'url': 'http://x', 'port': 1}, 'exactly one of url, port or cmd'),
    ({'url': 'http://x', 'retries': -1}, 'retries must not be negative'),
    ({'url': 'http://x', 'body_regex': '('}, 'not a valid regular expression'),
    ({'port': 80, 'body_regex': 'x'}, 'body_regex does not apply to a tcp probe'),
    ({'url': 'http://x', 'stauts_code': [200]}, 'unknown option(s) stauts_code'),
    ({'cmd': []}, 'cmd is empty'),
])
def test_a_malformed_check_is_refused_naming_it_before_anything_runs(bad, words):
    with pytest.raises(CheckError) as err:
        normalize_checks([{'name': 'ok', 'url': 'http://127.0.0.1:1/'}, dict(bad, name='broken')])
    assert words in err.value.msg and 'broken' in err.value.msg


def test_open_refuses_a_malformed_check_and_changes_nothing(host):
    with pytest.raises(engine.EngineError) as err:
        engine.open_phase(dict(host, checks=[{'url': 'http://x', 'retries': 'many'}]), no_run)
    assert err.value.details['refused'] == 'input'
    assert err.value.details['input_error'] == 'malformed health checks'
    ds = DeployState(host['state_dir'], 'app')
    assert ds.read_journal() is None and ds.read_lock() is None


def _tree(top):
    """Every path under top with its type and content (or link target): what a refusal must leave as it was."""
    found = {}
    for where, dirs, files in os.walk(str(top)):
        for name in dirs + files:
            path = os.path.join(where, name)
            if os.path.islink(path):
                found[path] = ('link', os.readlink(path))
            elif os.path.isdir(path):
                found[path] = ('dir',)
            else:
                with open(path, 'rb') as handle:
                    found[path] = ('file', handle.read())
    return found


@pytest.mark.parametrize('release', ['../../../tmp/evil', 'a/b', '/srv/app/releases/1.0', '..', '.', '',
                                     '2.0 beta', '2.0\n', 'r\x00'])
def test_open_refuses_a_release_id_that_is_not_a_plain_name_before_the_lock_and_creates_nothing(
        tmp_path, host, release):
    before = _tree(tmp_path)
    with pytest.raises(engine.EngineError) as err:
        engine.open_phase(dict(host, release=release), no_run)
    assert err.value.details['refused'] == 'input'
    assert err.value.details['input_error'] == 'invalid release id'
    assert err.value.msg.startswith("Refusing to deploy: invalid release id %r" % (release,)), err.value.msg
    assert 'Nothing was changed: no lock taken, no transaction opened.' in err.value.msg
    assert not os.path.exists(host['state_dir']), 'not even the state directory is made'
    assert _tree(tmp_path) == before


def test_a_bad_release_id_is_refused_before_a_dead_runs_recovery_and_a_held_lock(tmp_path, host):
    # an earlier run died with its transaction open and its lock held: a deploy with a bad id is refused for its
    # id, and neither recovers that transaction nor touches the lock
    engine.open_phase(dict(host, run_id='run-0'), no_run)
    ds = DeployState(host['state_dir'], 'app')
    lock = ds.read_lock()
    lock['expires'] = 0
    with open(ds.lock_path, 'w') as handle:
        json.dump(lock, handle)
    before = _tree(tmp_path)
    with pytest.raises(engine.EngineError) as err:
        engine.open_phase(dict(host, release='../2.0'), no_run)
    assert err.value.details['refused'] == 'input', err.value.msg
    assert _tree(tmp_path) == before
    assert ds.read_journal()['status'] == 'open' and ds.read_journal()['run_id'] == 'run-0'


@pytest.mark.parametrize('make', ['absent', 'unreadable'])
def test_open_refuses_a_release_archive_on_the_host_that_is_not_there_or_unreadable(tmp_path, host, make):
    src = tmp_path / 'app-3.0.tar.gz'
    if make == 'unreadable':
        if os.geteuid() == 0:
            # root reads any file: a directory without the x bit hides the archive from nobody, so take a name
            # whose parent is a file instead (ENOTDIR), which no one can read
            src = tmp_path / 'a-file' / 'app-3.0.tar.gz'
            (tmp_path / 'a-file').write_text('')
        else:
            src.write_bytes(b'x')
            src.chmod(0)
    before = _tree(tmp_path)
    with pytest.raises(engine.EngineError) as err:
        engine.open_phase(dict(host, release='3.0', src=str(src), remote_src=True), no_run)
    assert err.value.details['refused'] == 'input'
    assert str(src) in err.value.msg and 'Nothing was changed' in err.value.msg
    assert _tree(tmp_path) == before
    assert not os.path.exists(host['state_dir'])


def test_open_refuses_malformed_rollback_checks_before_anything_changes(tmp_path, host):
    before = _tree(tmp_path)
    with pytest.raises(engine.EngineError) as err:
        engine.open_phase(dict(host, rollback_checks=[{'url': 'http://x', 'port': 1, 'name': 'back'}]), no_run)
    assert err.value.details['input_error'] == 'malformed health checks'
    assert 'check #1 (back)' in err.value.msg
    assert _tree(tmp_path) == before


@pytest.mark.parametrize('cut', ['after-open', 'after-files', 'after-switch'])
def test_rollback_in_one_call_undoes_a_partial_apply(host, cut):
    app = host['app_root']
    before = digest(app)
    opened = engine.open_phase(dict(host), no_run)
    assert opened['needed'] and opened['snapshot']['snapshot']
    if cut in ('after-files', 'after-switch'):
        with open(os.path.join(app, 'shared', 'app.json'), 'w') as handle:
            handle.write('{"label": "two"}')
        with open(os.path.join(app, 'shared', 'extra.txt'), 'w') as handle:
            handle.write('new')
    if cut == 'after-switch':
        engine.activate_phase(dict(host), no_run)
        assert ReleaseRoot(app).read_current() == '2.0'
    assert digest(app) != before or cut == 'after-open'
    res = engine.rollback(dict(host, reason='test'), no_run)
    report = res['failsafe_rollback']
    switched = cut == 'after-switch'
    assert report['verified'] is True
    # a layer never applied is never undone: before the switch the release pointer is left alone (the journal's
    # undone list below); either way the report names the release the host runs after the rollback, never None
    assert report['target_release'] == '1.0' and report['running_release'] == '1.0'
    assert '2.0 -> 1.0, the release this host runs now' in res['msg']
    assert ('was never activated' in res['msg']) is not switched
    assert report['quarantined'] is switched, 'only an activated release is quarantined'
    assert ReleaseRoot(app).read_current() == '1.0'
    assert ReleaseRoot(app).load_ledger()['releases']['2.0']['state'] == ('failed' if switched else 'staged')
    journal = DeployState(host['state_dir'], 'app').read_journal()
    assert journal['status'] == 'rolled_back'
    # (the service manager is none here: nothing to restart)
    assert journal['rollback']['undone'] == (['files', 'release'] if switched else ['files'])
    assert DeployState(host['state_dir'], 'app').read_lock() is None
    # everything the snapshot captured is as it was
    assert digest(app) == before
    assert os.path.exists(os.path.join(app, 'shared', 'extra.txt')) is False
    with open(os.path.join(app, 'shared', 'app.json')) as handle:
        assert handle.read() == '{"label": "one"}'
    # nothing left to undo
    assert engine.rollback(dict(host), no_run)['nothing_to_undo'] is True


# --- the size bound of the release archive ----------------------------------------------------------------------

@pytest.fixture
def small_host(tmp_path):
    """The host fixture's application root on an 8 MiB tmpfs of the test's own (the state directory stays off it)."""
    fs = str(tmp_path / 'small')
    unmount = mount_small_fs(fs)
    app = os.path.join(fs, 'app')
    rr = ReleaseRoot(app)
    src = tmp_path / 'src-1.0'
    src.mkdir()
    (src / 'VERSION').write_text('1.0')
    ensure_staged(rr, '1.0', str(src))
    ensure_active(rr, '1.0')
    ensure_verified(rr, '1.0')
    yield {'state_dir': str(tmp_path / 'state'), 'name': 'app', 'app_root': app, 'release': '3.0', 'run_id': 'run-1',
           'service': {'manager': 'none'}, 'min_free_mb': 1, 'check_running': False, 'fs': fs}
    unmount()


def _untouched(p):
    """What a refused archive must leave as it was: free blocks and inodes of the releases' file system, releases/,
    the ledger, and the journal and lock (no transaction opened, the lock given back)."""
    rr = ReleaseRoot(p['app_root'])
    st = os.statvfs(rr.releases_dir)
    ds = DeployState(p['state_dir'], p['name'])
    return {'free': (st.f_bavail, st.f_favail), 'releases': sorted(os.listdir(rr.releases_dir)),
            'ledger': rr.load_ledger(), 'journal': ds.read_journal(), 'lock': ds.read_lock()}


@pytest.mark.parametrize('known', ['on-the-host', 'read-on-the-controller'])
def test_open_refuses_an_archive_larger_than_the_free_space_before_the_transaction_opens(tmp_path, small_host, known):
    bomb = make_bomb(tmp_path / 'bomb.tar.gz', 50 * MIB)
    size = engine.archive_size(bomb)
    if known == 'on-the-host':
        p = dict(small_host, src=bomb, remote_src=True)
    else:  # the action plugin read it on the controller: src names the controller's file, not one on the host
        p = dict(small_host, src='dist/app-3.0.tgz', src_size=size)
    before = _untouched(p)
    assert before['journal'] is None and before['lock'] is None
    free = os.statvfs(small_host['fs']).f_bavail * os.statvfs(small_host['fs']).f_frsize
    with pytest.raises(FailsafeError) as err:
        engine.open_phase(p, no_run)
    msg = err.value.msg
    releases = os.path.join(small_host['app_root'], 'releases')
    assert 'release archive %s would write 50.0 MiB (%d bytes) into %s' % (p['src'], size, releases) in msg, msg
    assert 'whose file system has %.1f MiB (%d bytes) free' % (free / 1048576.0, free) in msg, msg
    assert 'failsafe_preflight_min_free_mb keeps 1.0 MiB (1048576 bytes) of it free' in msg, msg
    assert _untouched(p) == before


def test_open_bounds_the_archive_by_max_release_size_unless_the_release_is_already_staged(host):
    ds = DeployState(host['state_dir'], 'app')
    p = dict(host, release='3.0', src='dist/app-3.0.tgz', src_size=3 * MIB, max_release_size=MIB)
    with pytest.raises(FailsafeError) as err:
        engine.open_phase(p, no_run)
    assert 'would write 3.0 MiB (%d bytes)' % (3 * MIB) in err.value.msg
    assert 'largest release allowed (failsafe_release_max_size is 1.0 MiB (1048576 bytes))' in err.value.msg
    assert ds.read_journal() is None and ds.read_lock() is None
    assert not os.path.exists(os.path.join(host['app_root'], 'releases', '3.0'))
    # 2.0 is staged already: the stage phase extracts nothing, so there is nothing to bound
    opened = engine.open_phase(dict(p, release='2.0'), no_run)
    assert opened['needed'] and opened['release_size'] is None and ds.read_journal()['status'] == 'open'
    engine.rollback(dict(host, reason='test'), no_run)
    opened = engine.open_phase(dict(p, run_id='run-2', max_release_size=3 * MIB), no_run)
    assert opened['release_size'] == 3 * MIB and ds.read_journal()['release'] == '3.0'


def test_stage_refuses_an_archive_larger_than_the_free_space_before_extracting_and_a_normal_one_stages(
        tmp_path, small_host):
    p = dict(small_host)
    opened = engine.open_phase(p, no_run)  # the archive is not known when the transaction opens
    assert opened['release_size'] is None
    bomb = make_bomb(tmp_path / 'bomb.tar.gz', 50 * MIB)
    before = _untouched(p)
    with pytest.raises(FailsafeError) as err:
        engine.stage_phase(dict(p, src=bomb))
    assert 'would write 50.0 MiB (%d bytes) into %s' % (engine.archive_size(bomb),
                                                        os.path.join(p['app_root'], 'releases')) in err.value.msg
    assert _untouched(p) == before, 'no temporary directory, nothing extracted, no release step'
    good = make_tarball(tmp_path / 'good.tar.gz', {'./VERSION': '3.0'})
    res = engine.stage_phase(dict(p, src=good))
    assert res['extracted'] and ReleaseRoot(p['app_root']).has_release_dir('3.0')


# --- crash safety of the single-call rollback ---------------------------------------------------------------------

# Every crash point between the layers of a rollback (and in its close); a re-run after each finishes the job.
ENGINE_POINTS = ['engine.files-undone', 'engine.release-undone', 'engine.service-undone', 'engine.checked',
                 'journal.history-appended', 'journal.closed', 'restore.entry-restored',
                 'write.replaced@2']  # the second atomic write: the ledger, as the release pointer is undone

CHILD = r'''
import json, sys
from ansible_collections.failsafe.deploy.plugins.module_utils import _engine
from ansible_collections.failsafe.deploy.plugins.module_utils._layers import _run
_engine.rollback(json.loads(sys.argv[1]), _run)
'''


def _rollback_child(params, crash_at):
    import subprocess
    import sys
    from ansible_collections.failsafe.deploy.plugins.module_utils import _atomic
    collections = os.path.abspath(os.path.join(os.path.dirname(_atomic.__file__), '..', '..', '..', '..', '..'))
    env = dict(os.environ)
    env[_atomic.CRASH_ENV] = crash_at
    env.pop(_atomic.CRASH_SCOPE_ENV, None)
    env['PYTHONPATH'] = collections + os.pathsep + env.get('PYTHONPATH', '')
    return subprocess.run([sys.executable, '-c', CHILD, json.dumps(params)], env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, universal_newlines=True, timeout=60, check=False)


@pytest.mark.parametrize('point', ENGINE_POINTS)
def test_a_rollback_killed_at_each_point_is_finished_by_running_it_again(server, host, point):
    app = host['app_root']
    before = digest(app)
    engine.open_phase(dict(host), no_run)
    with open(os.path.join(app, 'shared', 'app.json'), 'w') as handle:
        handle.write('{"label": "two"}')
    engine.activate_phase(dict(host), no_run)
    params = dict(host, reason='test', checks=[{'name': 'health', 'url': server + '/health', 'retries': 0}])
    proc = _rollback_child(params, point)
    assert proc.returncode == 137, 'the crash point was not reached (rc=%s): %s' % (proc.returncode, proc.stdout)
    journal = DeployState(host['state_dir'], 'app').read_journal()
    if point == 'journal.closed':
        # the close was written just before the crash, not the unlock: a re-run gives the lock back
        assert journal['status'] == 'rolled_back'
        assert engine.rollback(params, no_run)['nothing_to_undo'] is True
    else:
        assert journal['status'] == 'open', 'a rollback cut short must not look finished'
        res = engine.rollback(params, no_run)
        assert res['failsafe_rollback']['verified'] is True
    assert DeployState(host['state_dir'], 'app').read_journal()['status'] == 'rolled_back'
    assert digest(app) == before
    assert ReleaseRoot(app).read_current() == '1.0'
    assert ReleaseRoot(app).load_ledger()['releases']['2.0']['state'] == 'failed'
    assert DeployState(host['state_dir'], 'app').read_lock() is None


def test_the_preflight_role_refuses_release_ids_by_the_same_rule_as_the_open_phase():
    import re
    import yaml
    from ansible_collections.failsafe.deploy.plugins.module_utils._release import RELEASE_ID_RE
    here = os.path.dirname(os.path.abspath(__file__))
    with open(os.path.join(here, '..', '..', '..', '..', 'roles', 'preflight', 'vars', 'main.yml')) as handle:
        pattern = yaml.safe_load(handle)['__failsafe_release_id_pattern']
    assert pattern == RELEASE_ID_RE.pattern
    assert not re.search(pattern, '2.0\n') and re.search(pattern, '2.0-rc.1_b')


ACTIVATE_CHILD = r'''
import json, sys
from ansible_collections.failsafe.deploy.plugins.module_utils import _engine
_engine.activate_phase(json.loads(sys.argv[1]), None)
'''


def test_a_host_that_died_between_the_switch_and_the_restart_has_its_program_restarted_by_the_rollback(host):
    """The activation dies right after current switched (durably) and before the restart: a rebooted host's init
    then starts the program from the new current, so the rollback that switches back must restart it, which it
    does only for a service layer in the journal: the service is recorded before the switch."""
    import subprocess
    import sys
    from ansible_collections.failsafe.deploy.plugins.module_utils import _atomic
    service = {'manager': 'supervisor', 'name': 'app', 'conf': '/srv/supervisor/supervisord.conf',
               'supervisorctl': '/usr/bin/supervisorctl'}
    params = dict(host, service=service)
    engine.open_phase(dict(params), no_run)
    collections = os.path.abspath(os.path.join(os.path.dirname(_atomic.__file__), '..', '..', '..', '..', '..'))
    env = dict(os.environ, PYTHONPATH=collections + os.pathsep + os.environ.get('PYTHONPATH', ''))
    env[_atomic.CRASH_ENV] = 'release.switched'
    env.pop(_atomic.CRASH_SCOPE_ENV, None)
    proc = subprocess.run([sys.executable, '-c', ACTIVATE_CHILD, json.dumps(params)], env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, universal_newlines=True, timeout=60, check=False)
    assert proc.returncode == 137, 'the crash point was not reached (rc=%s): %s' % (proc.returncode, proc.stdout)
    assert ReleaseRoot(host['app_root']).read_current() == '2.0'
    kinds = [layer.get('kind') for layer in DeployState(host['state_dir'], 'app').read_journal().get('layers') or []]
    assert 'service' in kinds, 'the service is not in the journal of an activation that switched: %r' % kinds

    calls = []

    def supervisor(argv):
        calls.append(list(argv[3:]))
        if argv[3:4] == ['restart']:
            return 0, 'app: stopped\napp: started\n', ''
        if argv[3:4] == ['status']:
            return 0, 'app                              RUNNING   pid 42, uptime 0:00:03\n', ''
        return 0, '', ''

    res = engine.rollback(dict(params, reason='the host rebooted'), supervisor)
    assert ['restart', 'app'] in calls, calls
    assert ReleaseRoot(host['app_root']).read_current() == '1.0'
    assert res['failsafe_rollback']['verified'] is True
