# -*- coding: utf-8 -*-
# Copyright: Contributors to failsafe.deploy
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Each layer kind of the transaction engine: capture, apply, undo and verify, and undo after a partial apply.

The service layer runs a real supervisord (from the test environment) with a real program."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import hashlib
import os
import socket
import subprocess
import sys
import time

import pytest

from ansible_collections.failsafe.deploy.plugins.module_utils._layers import LayerError
from ansible_collections.failsafe.deploy.plugins.module_utils.kinds.files import FilesLayer
from ansible_collections.failsafe.deploy.plugins.module_utils.kinds.release import ReleaseLayer
from ansible_collections.failsafe.deploy.plugins.module_utils.kinds.service import ServiceLayer
from ansible_collections.failsafe.deploy.plugins.module_utils._release import (
    ReleaseRoot, ensure_active, ensure_staged, ensure_verified,
)
from ansible_collections.failsafe.deploy.tests.helpers import free_port


def digest(top):
    """Content, mode and link targets of every path under top."""
    h = hashlib.sha256()
    for base, dirs, files in os.walk(top):
        dirs.sort()
        for name in sorted(dirs + files):
            path = os.path.join(base, name)
            st = os.lstat(path)
            h.update(('%s %o\n' % (os.path.relpath(path, top), st.st_mode)).encode())
            if os.path.islink(path):
                h.update(os.readlink(path).encode())
            elif os.path.isfile(path):
                with open(path, 'rb') as handle:
                    h.update(handle.read())
    return h.hexdigest()


@pytest.fixture
def tree(tmp_path):
    top = tmp_path / 'app' / 'shared'
    (top / 'config').mkdir(parents=True)
    (top / 'config' / 'app.json').write_text('{"label": "one"}')
    (top / 'notes-1.txt').write_text('one')
    os.chmod(str(top / 'notes-1.txt'), 0o644)
    return top


def _apply_changes(top, partial=False):
    (top / 'config' / 'app.json').write_text('{"label": "two"}')
    if partial:
        return
    os.chmod(str(top / 'config' / 'app.json'), 0o600)
    (top / 'notes-1.txt').unlink()
    (top / 'notes-2.txt').write_text('two')


# --- files --------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize('partial', [False, True], ids=['full-apply', 'partial-apply'])
def test_files_layer_undo_puts_back_exactly_what_capture_recorded(tmp_path, tree, partial):
    layer = FilesLayer(str(tmp_path / 'store'))
    before = digest(str(tree))
    record = layer.capture({'paths': [str(tree)]})
    assert record['snapshot'] and record['entries'] >= 3
    layer.apply({}, record)
    _apply_changes(tree, partial=partial)
    assert digest(str(tree)) != before
    assert layer.verify(record), 'verify must see the change before the undo'
    undone = layer.undo(record)
    assert undone['changed'] and undone['restored']
    assert digest(str(tree)) == before
    assert layer.verify(record) == []
    # undo again (a re-run after a crash) changes nothing and still proves the restore
    assert layer.undo(record)['changed'] is False
    assert digest(str(tree)) == before


def test_files_layer_verify_names_what_differs(tmp_path, tree):
    layer = FilesLayer(str(tmp_path / 'store'))
    record = layer.capture({'paths': [str(tree)]})
    (tree / 'config' / 'app.json').write_text('tampered')
    problems = layer.verify(record)
    assert len(problems) == 1 and 'app.json' in problems[0]


# --- release pointer ----------------------------------------------------------------------------------------------

def _release_dir(tmp_path, rid):
    src = tmp_path / ('src-' + rid)
    src.mkdir()
    (src / 'VERSION').write_text(rid)
    return str(src)


@pytest.fixture
def root(tmp_path):
    app = tmp_path / 'app'
    app.mkdir(exist_ok=True)
    rr = ReleaseRoot(str(app))
    for rid in ('1.0', '2.0'):
        ensure_staged(rr, rid, _release_dir(tmp_path, rid))
    ensure_active(rr, '1.0')
    ensure_verified(rr, '1.0')
    return str(app)


@pytest.mark.parametrize('partial', [False, True], ids=['switched', 'cut-before-switch'])
def test_release_layer_undo_returns_to_the_last_verified_release(root, partial):
    layer = ReleaseLayer(root)
    record = layer.capture({'release': '2.0'})
    assert record == {'release': '2.0', 'previous': '1.0'}
    if not partial:
        layer.apply({'release': '2.0'}, record)
        assert ReleaseRoot(root).read_current() == '2.0'
    undone = layer.undo(record, reason='test', quarantine=not partial)
    assert undone['target'] == '1.0'
    assert ReleaseRoot(root).read_current() == '1.0'
    assert undone['quarantined'] is (not partial)
    ledger = ReleaseRoot(root).load_ledger()
    assert (ledger['releases']['2.0']['state'] == 'failed') is (not partial)
    assert layer.verify({'target': '1.0'}) == []
    assert layer.verify({'target': '2.0'}) == ['current is 1.0, not the rollback target 2.0']


def test_release_layer_undo_of_a_first_release_leaves_no_current(tmp_path):
    app = tmp_path / 'first'
    app.mkdir()
    rr = ReleaseRoot(str(app))
    ensure_staged(rr, '1.0', _release_dir(tmp_path, '1.0'))
    layer = ReleaseLayer(str(app))
    record = layer.capture({'release': '1.0'})
    assert record['previous'] is None
    layer.apply({'release': '1.0'}, record)
    undone = layer.undo(record, quarantine=True)
    assert undone['target'] is None
    assert rr.read_current() is None
    assert layer.verify({'target': None}) == []


# --- service (real supervisord) -------------------------------------------------------------------------------------

def _answer(port):
    try:
        with socket.create_connection(('127.0.0.1', port), timeout=1) as conn:
            conn.sendall(b'GET / HTTP/1.0\r\n\r\n')
            return conn.recv(200)
    except OSError:
        return None


@pytest.fixture(params=['socket', 'supervisorctl'])
def supervisor(tmp_path, request):
    """A private supervisord configuration. ``socket``: supervisord already runs and the layer must talk to it over
    its socket alone (the supervisorctl it is given fails on every call); ``supervisorctl``: the layer runs the
    real supervisorctl, which starts supervisord."""
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
    if request.param == 'socket':
        subprocess.run([sd, '-c', str(conf)], check=True)
        failing = d / 'supervisorctl-not-to-be-run'
        failing.write_text('#!/bin/sh\necho "supervisorctl $*" >> %s/ctl-calls\nexit 2\n' % d)
        failing.chmod(0o755)
        settings['supervisorctl'] = str(failing)
    yield settings, d, port
    subprocess.run([ctl, '-c', str(conf), 'shutdown'], capture_output=True, check=False)
    assert not (d / 'ctl-calls').exists(), 'the layer ran supervisorctl where supervisord answers on its socket'


def _program(d, port, command=None):
    command = command or '%s -m http.server %d --bind 127.0.0.1' % (sys.executable, port)
    (d / 'conf.d' / 'web.conf').write_text(
        '[program:web]\ncommand=%s\nstartsecs=1\nstartretries=0\nautorestart=false\nredirect_stderr=true\n'
        'stdout_logfile=%s/web.log\n' % (command, d))


def _wait_answer(port, want=True, timeout=10):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if (_answer(port) is not None) == want:
            return True
        time.sleep(0.2)
    return False


def _pid(settings):
    """The process id supervisor runs the program as (0: not running)."""
    ctl = os.path.join(os.path.dirname(sys.executable), 'supervisorctl')
    out = subprocess.run([ctl, '-c', settings['conf'], 'pid', settings['name']],
                         capture_output=True, text=True, check=False).stdout.strip()
    return int(out) if out.isdigit() else 0


def test_service_layer_apply_starts_undo_restarts_and_verify_sees_it_running(supervisor):
    settings, d, port = supervisor
    layer = ServiceLayer(settings)
    _program(d, port)
    record = layer.capture({})
    assert record == {'was_running': False}
    assert layer.apply({}, record)['changed'] is True
    assert _wait_answer(port)
    assert layer.verify(record) == []
    # applying again without a restart leaves the running service alone
    first = _pid(settings)
    assert layer.apply({}, record, restart=False)['changed'] is False
    assert _pid(settings) == first != 0
    # the undo restarts it: a new process serves what the other layers restored, not the one that ran before
    undone = layer.undo(record, serving=True)
    assert undone['changed'] is True
    assert _wait_answer(port)
    assert _pid(settings) not in (0, first)
    assert layer.verify(record, serving=True) == []


def test_service_layer_undo_without_a_release_stops_and_unloads_the_program(supervisor):
    settings, d, port = supervisor
    layer = ServiceLayer(settings)
    _program(d, port)
    layer.apply({}, {})
    assert _wait_answer(port)
    # the restore removed the program file: undo unloads it and nothing serves
    os.unlink(str(d / 'conf.d' / 'web.conf'))
    undone = layer.undo({}, serving=False)
    assert undone['unloaded'] is True
    assert _wait_answer(port, want=False)
    assert layer.verify({}, serving=False) == []


def test_service_layer_names_the_log_when_the_program_does_not_start(supervisor):
    settings, d, port = supervisor
    layer = ServiceLayer(settings)
    _program(d, port, command='%s -c "print(\'boom: missing setting\'); raise SystemExit(3)"' % sys.executable)
    with pytest.raises(LayerError) as err:
        layer.apply({}, {})
    assert 'did not start' in err.value.msg and settings['log'] in err.value.msg
    assert 'boom: missing setting' in err.value.msg
    assert layer.verify({}) == ['web is not running after the restart']


# supervisorctl's update restarts a changed program and the restart after it starts it again: the socket only
@pytest.mark.parametrize('supervisor', ['socket'], indirect=True)
def test_service_layer_starts_a_changed_program_once_with_its_new_settings(supervisor):
    settings, d, port = supervisor
    layer = ServiceLayer(settings)
    starts = d / 'starts'
    command = "sh -c 'echo $APP_RELEASE >> %s; exec %s -m http.server %d --bind 127.0.0.1'" % (starts, sys.executable, port)

    def program(release):
        (d / 'conf.d' / 'web.conf').write_text(
            '[program:web]\ncommand=%s\nenvironment=APP_RELEASE="%s"\nstartsecs=1\nstartretries=0\n'
            'stopasgroup=true\nkillasgroup=true\nredirect_stderr=true\nstdout_logfile=%s/web.log\n'
            % (command, release, d))

    program('1.0.0')
    layer.apply({}, {})
    assert _wait_answer(port)
    first = _pid(settings)
    # the next release changes the program's settings: supervisor loads them, and the program starts once, under them
    program('2.0.0')
    assert layer.apply({}, {})['changed'] is True
    assert _wait_answer(port)
    assert _pid(settings) not in (0, first)
    assert starts.read_text().split() == ['1.0.0', '2.0.0']
    assert layer.verify({}) == []
    # the same settings again and a restart: one more start, the settings unchanged
    assert layer.apply({}, {})['changed'] is True
    assert starts.read_text().split() == ['1.0.0', '2.0.0', '2.0.0']


@pytest.mark.parametrize('section,expected', [
    ('[supervisorctl]\nserverurl=unix:///run/sv.sock ; the socket\n', '/run/sv.sock'),
    ('[supervisorctl]\nserverurl=unix://%(here)s/sv.sock\n', '{here}/sv.sock'),
    ('[supervisorctl]\nserverurl=http://127.0.0.1:9001\n', None),
    ('[supervisorctl]\nserverurl=unix:///run/sv.sock\nusername=ops\npassword=secret\n', None),
    ('[supervisorctl]\nserverurl=unix://%(ENV_RUN)s/sv.sock\n', None),
    ('[supervisord]\nlogfile=/tmp/x\n', None),
], ids=['unix', 'here', 'http', 'user-name', 'unknown-expansion', 'no-section'])
def test_service_layer_talks_over_the_socket_only_where_supervisorctl_would(tmp_path, section, expected):
    """The layer reads the socket from the same [supervisorctl] serverurl supervisorctl reads; anything it cannot
    serve the same way (an HTTP URL, a password, an expansion it does not know, no such section) leaves the calls to
    supervisorctl."""
    from ansible_collections.failsafe.deploy.plugins.module_utils.kinds.service import _socket_path
    conf = tmp_path / 'supervisord.conf'
    conf.write_text('; a comment\n[unix_http_server]\nfile=/run/sv.sock\n' + section)
    want = expected.format(here=str(tmp_path)) if expected else None
    assert _socket_path(str(conf)) == want
    assert _socket_path(str(tmp_path / 'missing.conf')) is None


def test_service_layer_without_supervisord_running_uses_supervisorctl_and_says_what_it_answered(tmp_path):
    """A socket named but nobody answering (supervisord not running, start off): the calls go to supervisorctl,
    whose answer the failure quotes."""
    conf = tmp_path / 'supervisord.conf'
    conf.write_text('[supervisorctl]\nserverurl=unix://%s/none.sock\n' % tmp_path)
    calls = []

    def run(argv):
        calls.append(argv[3:])
        return 1, '', 'unix://%s/none.sock no such file' % tmp_path

    layer = ServiceLayer({'manager': 'supervisor', 'name': 'web', 'conf': str(conf), 'supervisorctl': 'ctl'}, run)
    with pytest.raises(LayerError) as err:
        layer.apply({}, {})
    assert calls[0] == ['update'] and ['restart', 'web'] in calls
    assert 'web did not start under supervisor' in err.value.msg and 'no such file' in err.value.msg
