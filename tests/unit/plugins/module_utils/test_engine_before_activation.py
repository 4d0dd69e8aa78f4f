# -*- coding: utf-8 -*-
# Copyright: Contributors to failsafe.deploy
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The engine's rollback of a deploy that failed before its activation, and the service it brings back.

A first deploy has no release to go back to: the rollback undoes what was applied (the snapshot, the release
directory it staged) and checks no release. A rollback brings the host to its last verified release running: it
starts the service when it is not running, with the settings the transaction recorded in the journal, or else those
the ledger recorded for the restored release when it was verified, and touches no service nothing recorded.

Phases run through the engine's own functions on a real application root; the service is a real supervisord with a
real program (an HTTP server) serving the release's directory."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import json
import os
import socket
import subprocess
import sys
import time

import pytest

from ansible_collections.failsafe.deploy.plugins.module_utils import _engine as engine
from ansible_collections.failsafe.deploy.plugins.module_utils._journal import DeployState
from ansible_collections.failsafe.deploy.plugins.module_utils._layers import _run
from ansible_collections.failsafe.deploy.plugins.module_utils._release import ReleaseRoot, ensure_staged
from ansible_collections.failsafe.deploy.tests.helpers import free_port


def _answer(port, path='/VERSION'):
    """The body the program serves at ``path``, or None when nothing answers."""
    try:
        with socket.create_connection(('127.0.0.1', port), timeout=1) as conn:
            conn.sendall(('GET %s HTTP/1.0\r\n\r\n' % path).encode())
            data = b''
            while True:
                chunk = conn.recv(4096)
                if not chunk:
                    break
                data += chunk
        return data.split(b'\r\n\r\n', 1)[-1].decode()
    except OSError:
        return None


def _wait_answer(port, want=True, timeout=10):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if (_answer(port) is not None) == want:
            return True
        time.sleep(0.2)
    return False


def _src(tmp_path, rid):
    src = tmp_path / ('src-' + rid)
    src.mkdir()
    (src / 'VERSION').write_text(rid)
    return str(src)


class Commands(object):
    """The engine's ``run``: runs each command for real and keeps the list of what ran."""

    def __init__(self):
        self.argv = []

    def __call__(self, argv):
        self.argv.append(list(argv))
        return _run(argv)


@pytest.fixture
def site(tmp_path):
    app = tmp_path / 'app'
    (app / 'shared').mkdir(parents=True)
    (app / 'shared' / 'app.json').write_text('{"label": "before"}')
    return {'state_dir': str(tmp_path / 'state'), 'name': 'app', 'app_root': str(app),
            'snapshot_paths': [str(app / 'current'), str(app / 'shared')], 'min_free_mb': 0, 'check_running': False,
            'service': {'manager': 'none'}}


def _ds(p):
    return DeployState(p['state_dir'], p['name'])


# --- a first deploy ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize('how', ['staged-then-failed', 'staging-refused', 'no-snapshot'])
def test_a_first_deploy_that_fails_before_activation_is_rolled_back_to_nothing_deployed(tmp_path, site, how):
    p = dict(site, release='1.0', run_id='run-1')
    if how == 'no-snapshot':
        p['snapshot_paths'] = []
    # a check of a port nothing listens on: a rollback that checked a release would fail on it
    dead = {'name': 'health', 'port': free_port(), 'host': '127.0.0.1', 'retries': 0, 'timeout': 1}
    commands = Commands()
    opened = engine.open_phase(dict(p), commands)
    assert opened['previous_release'] is None
    rr = ReleaseRoot(p['app_root'])
    if how == 'staging-refused':
        bad = tmp_path / 'bad.tar.gz'
        bad.write_bytes(b'not a tar archive\n' * 10)
        with pytest.raises(Exception):
            engine.stage_phase(dict(p, src=str(bad)))
    else:
        engine.stage_phase(dict(p, src=_src(tmp_path, '1.0')))
        assert rr.has_release_dir('1.0')
    with open(os.path.join(p['app_root'], 'shared', 'app.json'), 'w') as handle:
        handle.write('{"label": "changed by a hook"}')
    res = engine.rollback(dict(p, checks=[dead], reason='test'), commands)
    report = res['failsafe_rollback']
    assert report['verified'] is True and report['nothing_deployed'] is True
    assert 'checks' not in report, 'no release to check'
    assert 'nothing deployed' in res['msg']
    # nothing deployed is left: no current, no release directory or ledger entry, the journal closed, lock free
    assert rr.current_target() is None
    assert not rr.has_release_dir('1.0')
    assert '1.0' not in rr.load_ledger()['releases']
    journal = _ds(p).read_journal()
    assert journal['status'] == 'rolled_back'
    assert _ds(p).read_lock() is None
    with open(os.path.join(p['app_root'], 'shared', 'app.json')) as handle:
        assert handle.read() == ('{"label": "changed by a hook"}' if how == 'no-snapshot' else '{"label": "before"}')
    assert commands.argv == [], 'no service was ever touched'
    # the next deploy works
    p2 = dict(site, release='1.0', run_id='run-2')
    assert engine.open_phase(dict(p2), commands)['needed'] is True
    good = tmp_path / 'src-1.0'
    engine.stage_phase(dict(p2, src=str(good) if good.exists() else _src(tmp_path, '1.0')))
    engine.activate_phase(dict(p2), commands)
    engine.commit_phase(dict(p2))
    assert rr.read_current() == '1.0' and rr.load_ledger()['last_verified'] == '1.0'
    assert _ds(p).read_journal()['status'] == 'committed'


def test_a_release_staged_before_the_transaction_is_left_where_it_was(tmp_path, site):
    """Only what the transaction staged is removed: a release directory that was already there stays."""
    p = dict(site, release='1.0', run_id='run-1')
    rr = ReleaseRoot(p['app_root'])
    engine.open_phase(dict(p, release='0.9'), None)
    engine.stage_phase(dict(p, release='0.9', src=_src(tmp_path, '0.9')))
    engine.rollback(dict(p, reason='test'), None)
    assert not rr.has_release_dir('0.9')
    # staged before the transaction (the release module's state=staged), then deployed and failed before activation
    ensure_staged(rr, '1.0', _src(tmp_path, '1.0'))
    engine.open_phase(dict(p), None)
    engine.stage_phase(dict(p, src=str(tmp_path / 'src-1.0')))
    assert 'staged_release' not in _ds(p).read_journal()
    res = engine.rollback(dict(p, reason='test'), None)
    assert 'removed_release' not in res['failsafe_rollback']
    assert rr.has_release_dir('1.0') and rr.load_ledger()['releases']['1.0']['state'] == 'staged'


# --- the service of the restored release ---------------------------------------------------------------------------

@pytest.fixture
def supervisor(tmp_path, site):
    bindir = os.path.dirname(sys.executable)
    ctl, sd = os.path.join(bindir, 'supervisorctl'), os.path.join(bindir, 'supervisord')
    if not (os.path.exists(ctl) and os.path.exists(sd)):
        pytest.fail('supervisor is part of the test environment (requirements-dev.txt) but is missing')
    d = tmp_path / 'sv'
    (d / 'conf.d').mkdir(parents=True)
    conf = d / 'supervisord.conf'
    conf.write_text('[unix_http_server]\nfile=%(d)s/s.sock\n[supervisord]\npidfile=%(d)s/pid\nlogfile=%(d)s/log\n'
                    'childlogdir=%(d)s\n[rpcinterface:supervisor]\nsupervisor.rpcinterface_factory = '
                    'supervisor.rpcinterface:make_main_rpcinterface\n[supervisorctl]\nserverurl=unix://%(d)s/s.sock\n'
                    '[include]\nfiles = %(d)s/conf.d/*.conf\n' % {'d': str(d)})
    port = free_port()
    settings = {'manager': 'supervisor', 'name': 'web', 'supervisorctl': ctl, 'supervisord': sd,
                'conf': str(conf), 'start': True, 'log': str(d / 'web.log')}
    program = {'dest': str(d / 'conf.d' / 'web.conf'), 'content': (
        '[program:web]\ncommand=%s -m http.server %d --bind 127.0.0.1\ndirectory=%s/current\nstartsecs=1\n'
        'startretries=0\nautorestart=false\nredirect_stderr=true\nstdout_logfile=%s/web.log\n'
        % (sys.executable, port, site['app_root'], d))}
    yield dict(site, service=settings, files=[program]), port
    subprocess.run([ctl, '-c', str(conf), 'shutdown'], capture_output=True, check=False)


def _deploy(tmp_path, p, rid, run_id, commands):
    q = dict(p, release=rid, run_id=run_id)
    engine.open_phase(dict(q), commands)
    engine.stage_phase(dict(q, src=_src(tmp_path, rid)))
    engine.activate_phase(dict(q), commands)
    engine.verify_phase(dict(q))
    engine.commit_phase(dict(q))
    return q


def _stop(p):
    s = p['service']
    out = subprocess.run([s['supervisorctl'], '-c', s['conf'], 'stop', s['name']], capture_output=True, text=True,
                         check=False).stdout
    assert 'stopped' in out, out


def test_a_rollback_before_activation_starts_the_stopped_service_of_the_last_verified_release(tmp_path, supervisor):
    p, port = supervisor
    commands = Commands()
    _deploy(tmp_path, p, '1.0', 'run-1', commands)
    assert _wait_answer(port) and _answer(port) == '1.0'
    # the ledger keeps the settings the verified release runs with
    assert ReleaseRoot(p['app_root']).load_ledger()['releases']['1.0']['service'] == p['service']
    checks = [{'name': 'health', 'url': 'http://127.0.0.1:%d/VERSION' % port, 'body_regex': '^1\\.0$',
               'retries': 10, 'sleep': 0.3, 'timeout': 2}]
    # a deploy of 2.0 opens and stages, then the host goes down: nothing runs the app when it is back
    q = dict(p, release='2.0', run_id='run-2')
    engine.open_phase(dict(q), commands)
    engine.stage_phase(dict(q, src=_src(tmp_path, '2.0')))
    _stop(p)
    assert _wait_answer(port, want=False)
    journal = _ds(p).read_journal()
    assert journal['status'] == 'open' and 'service' not in [e['kind'] for e in journal['layers']]
    # the rollback (recover's) is given no service settings of its own: the ledger's record is what it uses
    res = engine.rollback(dict(q, service={}, checks=checks, reason='recovered'), commands)
    report = res['failsafe_rollback']
    assert report['service_started'] == 'web'
    assert report['checks'][0]['ok'] is True
    assert _answer(port) == '1.0'
    assert _ds(p).read_journal()['status'] == 'rolled_back'
    assert ReleaseRoot(p['app_root']).read_current() == '1.0'
    assert not ReleaseRoot(p['app_root']).has_release_dir('2.0')
    # running already: a rollback leaves the process as it is (no restart of a service nobody changed)
    pid = subprocess.run([p['service']['supervisorctl'], '-c', p['service']['conf'], 'pid', 'web'],
                         capture_output=True, text=True, check=False).stdout.strip()
    engine.open_phase(dict(q, run_id='run-3'), commands)
    res = engine.rollback(dict(q, run_id='run-3', service={}, checks=checks, reason='test'), commands)
    assert 'service_started' not in res['failsafe_rollback']
    assert subprocess.run([p['service']['supervisorctl'], '-c', p['service']['conf'], 'pid', 'web'],
                          capture_output=True, text=True, check=False).stdout.strip() == pid


def test_a_rollback_touches_no_service_that_nothing_recorded(tmp_path, supervisor):
    """A release whose ledger entry holds no service settings (verified by an older version, or deployed without a
    service): the rollback of a transaction that never changed the service starts nothing, whatever it is given."""
    p, port = supervisor
    commands = Commands()
    _deploy(tmp_path, p, '1.0', 'run-1', commands)
    rr = ReleaseRoot(p['app_root'])
    ledger = rr.load_ledger()
    del ledger['releases']['1.0']['service']
    rr.save_ledger(ledger)
    q = dict(p, release='2.0', run_id='run-2')
    engine.open_phase(dict(q), commands)
    _stop(p)
    before = len(commands.argv)
    res = engine.rollback(dict(q, reason='test'), commands)
    assert 'service_started' not in res['failsafe_rollback']
    assert commands.argv[before:] == []
    assert _answer(port) is None
    assert _ds(p).read_journal()['status'] == 'rolled_back'


def test_a_rollback_after_activation_restarts_the_service_with_the_settings_in_the_journal(tmp_path, supervisor):
    p, port = supervisor
    commands = Commands()
    _deploy(tmp_path, p, '1.0', 'run-1', commands)
    q = dict(p, release='2.0', run_id='run-2')
    engine.open_phase(dict(q), commands)
    engine.stage_phase(dict(q, src=_src(tmp_path, '2.0')))
    engine.activate_phase(dict(q), commands)
    assert _wait_answer(port) and _answer(port) == '2.0'
    layers = _ds(p).read_journal()['layers']
    assert [e.get('options') for e in layers if e['kind'] == 'service'] == [p['service']]
    _stop(p)
    # the rollback's own service settings (none here) do not matter: the journal's are used
    res = engine.rollback(dict(q, service={}, reason='test'), commands)
    assert {'kind': 'service', 'undone': True, 'action': 'restarted', 'undid': 'service restarted'} \
        in res['failsafe_rollback']['layers']
    assert _wait_answer(port) and _answer(port) == '1.0'
    assert ReleaseRoot(p['app_root']).load_ledger()['releases']['2.0']['state'] == 'failed'


CHILD = r'''
import json, sys
from ansible_collections.failsafe.deploy.plugins.module_utils import _engine
from ansible_collections.failsafe.deploy.plugins.module_utils._layers import _run
_engine.rollback(json.loads(sys.argv[1]), _run)
'''


def test_a_rollback_killed_once_the_staged_release_is_removed_is_finished_by_running_it_again(tmp_path, site):
    from ansible_collections.failsafe.deploy.plugins.module_utils import _atomic
    p = dict(site, release='1.0', run_id='run-1')
    engine.open_phase(dict(p), None)
    engine.stage_phase(dict(p, src=_src(tmp_path, '1.0')))
    env = dict(os.environ)
    env[_atomic.CRASH_ENV] = 'engine.staged-removed'
    env.pop(_atomic.CRASH_SCOPE_ENV, None)
    collections = os.path.abspath(os.path.join(os.path.dirname(_atomic.__file__), '..', '..', '..', '..', '..'))
    env['PYTHONPATH'] = collections + os.pathsep + env.get('PYTHONPATH', '')
    params = dict(p, reason='test')
    proc = subprocess.run([sys.executable, '-c', CHILD, json.dumps(params)], env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True, timeout=60,
                          check=False)
    assert proc.returncode == 137, 'the crash point was not reached (rc=%s): %s' % (proc.returncode, proc.stdout)
    assert _ds(p).read_journal()['status'] == 'open', 'a rollback cut short must not look finished'
    res = engine.rollback(params, None)
    assert res['failsafe_rollback']['verified'] is True and res['failsafe_rollback']['nothing_deployed'] is True
    assert _ds(p).read_journal()['status'] == 'rolled_back' and _ds(p).read_lock() is None
    assert not ReleaseRoot(p['app_root']).has_release_dir('1.0')


STAGE_CHILD = r'''
import json, sys
from ansible_collections.failsafe.deploy.plugins.module_utils import _engine
_engine.stage_phase(json.loads(sys.argv[1]))
'''


def test_a_staging_cut_short_by_a_host_crash_leaves_no_half_staged_copy_after_the_rollback(tmp_path, site):
    """The host crashed while it unpacked the release (crash point release.staged-tmp): its half-unpacked copy in
    releases/ is removed by the rollback, which says so; a temp dir of another release is not this transaction's."""
    from ansible_collections.failsafe.deploy.plugins.module_utils import _atomic
    p = dict(site, release='1.0', run_id='run-1')
    rr = ReleaseRoot(p['app_root'])
    engine.open_phase(dict(p), None)
    env = dict(os.environ)
    env[_atomic.CRASH_ENV] = 'release.staged-tmp'
    env.pop(_atomic.CRASH_SCOPE_ENV, None)
    collections = os.path.abspath(os.path.join(os.path.dirname(_atomic.__file__), '..', '..', '..', '..', '..'))
    env['PYTHONPATH'] = collections + os.pathsep + env.get('PYTHONPATH', '')
    proc = subprocess.run([sys.executable, '-c', STAGE_CHILD, json.dumps(dict(p, src=_src(tmp_path, '1.0')))],
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True,
                          timeout=60, check=False)
    assert proc.returncode == 137, 'the crash point was not reached (rc=%s): %s' % (proc.returncode, proc.stdout)
    half = rr.half_staged('1.0')
    assert len(half) == 1 and not rr.has_release_dir('1.0')
    other = os.path.join(rr.releases_dir, '.1.0.1.tmp-abc')  # a longer id with the same beginning
    os.mkdir(other)
    res = engine.rollback(dict(p, reason='host crashed'), None)
    report = res['failsafe_rollback']
    assert report['verified'] is True and report['nothing_deployed'] is True
    assert rr.half_staged('1.0') == [] and not os.path.exists(os.path.join(rr.releases_dir, half[0]))
    assert report['removed_partial'] == '1.0'
    assert 'half-staged copy of release 1.0 removed' in res['msg'], res['msg']
    assert os.path.isdir(other), 'a temp dir of another release is not this transaction\'s'
    assert _ds(p).read_journal()['status'] == 'rolled_back'
