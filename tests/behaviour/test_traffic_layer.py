"""The traffic layer against a real HAProxy 2.6 (runtime API on its admin socket) and a real nginx 1.22 (include file,
nginx -t, graceful reload), started by the test with their own configuration, pid file, socket and ephemeral ports,
in front of real instances of the example app. Asserts on what the load balancers answer and report, not on what the
layer says.

Given a transaction of layers only, when the traffic layer moves traffic, then /version through the load balancer
answers the other release, and the rollback's undo puts traffic back and proves it; bad input changes nothing; a
drained or restored HAProxy server keeps its state across an HAProxy reload.

The servers' weights before a change (set at run time, as an operator tunes them) differ from those of their
configuration and from those the changes set, so an undo that puts back the states but not the weights fails.
"""
import json
import os
import shutil
import subprocess
import sys
import time

import pytest

from ansible_collections.failsafe.deploy.plugins.module_utils import _engine as engine
from ansible_collections.failsafe.deploy.plugins.module_utils._errors import FailsafeError
from ansible_collections.failsafe.deploy.plugins.module_utils._journal import DeployState
from ansible_collections.failsafe.deploy.plugins.module_utils._layers import _run

import lb

APP = os.path.join(lb.ROOT, 'examples', 'app', 'src', 'app.py')


@pytest.fixture(scope='module')
def prereqs():
    lb.require()


def start_app(base, version, mode='good'):
    """The example app as release ``version`` on a free port; returns (port, process)."""
    d = os.path.join(str(base), 'app-%s' % version)
    os.makedirs(d, exist_ok=True)
    shutil.copy(APP, d)
    with open(os.path.join(d, 'release.json'), 'w') as handle:
        json.dump({'version': version, 'mode': mode}, handle)
    port = lb.free_port()
    proc = subprocess.Popen([sys.executable, os.path.join(d, 'app.py'), '--port', str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    lb.wait_port(port)
    return port, proc


@pytest.fixture
def apps(tmp_path, prereqs):
    started = {}
    for name, version in (('blue', '1.0.0'), ('green', '2.0.0')):
        started[name] = start_app(tmp_path, version)
    yield dict((name, port) for name, (port, proc) in started.items())
    for port, proc in started.values():
        proc.terminate()
        proc.wait(timeout=10)


# The runtime weights before any change: neither the configured 100 nor what a change sets.
WEIGHTS = {'blue': 37, 'green': 63}
# HAProxy's own view before any change, {server: (srv_admin_state, srv_uweight)}: green drained (forced drain 0x08)
BEFORE = {'blue': (0, WEIGHTS['blue']), 'green': (0x08, WEIGHTS['green'])}


@pytest.fixture
def haproxy(tmp_path, apps):
    h = lb.HAProxy(tmp_path / 'haproxy', [('blue', apps['blue'], 100), ('green', apps['green'], 100)])
    # green starts drained: all traffic to blue
    h.start()
    for name, weight in sorted(WEIGHTS.items()):
        assert h.command('set server app/%s weight %d' % (name, weight)).strip() == ''
    h.command('set server app/green state drain')
    assert h.server_state() == BEFORE
    yield h
    h.stop()


@pytest.fixture
def nginx(tmp_path, apps):
    n = lb.Nginx(tmp_path / 'nginx', 'upstream app {\n    server 127.0.0.1:%d;\n}\n' % apps['blue'])
    n.start()
    yield n
    n.stop()


@pytest.fixture
def txn(tmp_path):
    p = {'state_dir': str(tmp_path / 'state'), 'name': 'lb', 'run_id': 'run-1', 'owner': 'ops@ctl',
         'controller': 'ctl', 'pid': 1, 'ttl': 600, 'recover': True}
    engine.open_phase(p, _run)
    return p


def versions(port, n=20):
    return set(lb.get(port)[1] for dummy in range(n))


def hap_layer(h, **servers):
    spec = {'kind': 'traffic', 'driver': 'haproxy', 'socket': h.socket, 'backend': 'app', 'state_file': h.state_file,
            'config': h.config, 'servers': []}
    for name, (state, weight) in sorted(servers.items()):
        spec['servers'].append({'name': name, 'state': state, 'weight': weight})
    return spec


def ngx_layer(n, apps, **servers):
    spec = {'kind': 'traffic', 'driver': 'nginx', 'path': n.include, 'upstream': 'app', 'conf': n.conf,
            'prefix': n.dir, 'pid_file': n.pid_file, 'servers': []}
    for name, (state, weight) in sorted(servers.items()):
        spec['servers'].append({'name': name, 'address': '127.0.0.1:%d' % apps[name], 'state': state,
                                'weight': weight})
    return spec


def test_haproxy_switch_then_rollback_puts_traffic_back_and_proves_it(haproxy, txn):
    assert versions(haproxy.port) == {'1.0.0'}
    res = engine.apply_phase(dict(txn, layer=hap_layer(haproxy, blue=('drain', 0), green=('ready', 100))), _run)
    assert res['changed'] and res['failsafe_layer_stages'] == ['traffic']
    assert versions(haproxy.port) == {'2.0.0'}
    # forced drain and the new weights, as HAProxy itself reports them
    assert haproxy.server_state() == {'blue': (0x08, 0), 'green': (0, 100)}
    # the undo record is what HAProxy reported before the change
    journal = DeployState(txn['state_dir'], 'lb').read_journal()
    assert journal['layers'][0]['record']['servers'] == {'blue': {'weight': 37, 'state': 'ready'},
                                                         'green': {'weight': 63, 'state': 'drain'}}
    again = engine.apply_phase(dict(txn, layer=hap_layer(haproxy, blue=('drain', 0), green=('ready', 100))), _run)
    assert not again['changed']
    out = engine.rollback(dict(txn, stages=['traffic']), _run)
    assert out['failsafe_rollback']['layers'][0]['kind'] == 'traffic'
    assert versions(haproxy.port) == {'1.0.0'}
    # states and weights back as they were, read from HAProxy's admin socket
    assert haproxy.server_state() == BEFORE
    assert DeployState(txn['state_dir'], 'lb').read_journal()['status'] == 'rolled_back'


def test_haproxy_weights_split_traffic(haproxy, txn):
    engine.apply_phase(dict(txn, layer=hap_layer(haproxy, blue=('ready', 3), green=('ready', 1))), _run)
    assert haproxy.server_state() == {'blue': (0, 3), 'green': (0, 1)}
    assert versions(haproxy.port, 40) == {'1.0.0', '2.0.0'}


def test_a_drained_haproxy_server_stays_drained_across_a_reload_and_a_restored_one_stays_ready(haproxy, txn):
    engine.apply_phase(dict(txn, layer=hap_layer(haproxy, blue=('drain', 100), green=('ready', 100))), _run)
    before = haproxy.pid()
    haproxy.reload()
    assert haproxy.pid() != before
    state = haproxy.server_state()
    assert state['blue'][0] & 0x08 and not state['green'][0] & 0x08
    assert versions(haproxy.port) == {'2.0.0'}
    # the restore too is saved: after another reload blue is back and green drained again, with their weights
    engine.rollback(txn, _run)
    haproxy.reload()
    assert haproxy.server_state() == BEFORE
    assert versions(haproxy.port) == {'1.0.0'}


def test_without_the_state_file_a_reload_loses_the_runtime_state(haproxy, txn):
    """The control for the test above: the configuration alone brings a drained server back after a reload."""
    spec = hap_layer(haproxy, blue=('drain', 100), green=('ready', 100))
    spec.pop('state_file')
    os.unlink(haproxy.state_file) if os.path.exists(haproxy.state_file) else None
    engine.apply_phase(dict(txn, layer=spec), _run)
    haproxy.reload()
    assert not haproxy.server_state()['blue'][0] & 0x08


@pytest.mark.parametrize('case, servers, match', [
    ('unknown server', {'blue': ('drain', 100), 'purple': ('ready', 100)}, "has no server purple"),
    ('nothing ready', {'blue': ('drain', 100), 'green': ('maint', 100)}, 'no server would take traffic'),
    ('weight out of range', {'blue': ('ready', 300)}, 'weight is 0 to 256'),
    ('all weights zero', {'blue': ('ready', 0), 'green': ('drain', 0)}, 'add up to 0'),
])
def test_haproxy_bad_input_is_refused_and_nothing_changes(haproxy, txn, case, servers, match):
    before = haproxy.server_state()
    with pytest.raises(FailsafeError, match=match):
        engine.apply_phase(dict(txn, layer=hap_layer(haproxy, **servers)), _run)
    assert haproxy.server_state() == before
    assert not DeployState(txn['state_dir'], 'lb').read_journal().get('layers')


def test_haproxy_weights_must_add_up_to_the_total_asked(haproxy, txn):
    spec = dict(hap_layer(haproxy, blue=('ready', 30), green=('ready', 60)), total=100)
    before = haproxy.server_state()
    with pytest.raises(FailsafeError, match='add up to 90.*not the total 100'):
        engine.apply_phase(dict(txn, layer=spec), _run)
    assert haproxy.server_state() == before


def test_haproxy_a_socket_that_refuses_and_a_config_that_fails_haproxy_c_change_nothing(haproxy, txn, tmp_path):
    before = haproxy.server_state()
    spec = dict(hap_layer(haproxy, blue=('drain', 100), green=('ready', 100)), socket=str(tmp_path / 'nothing.sock'))
    with pytest.raises(FailsafeError, match='refused the connection'):
        engine.apply_phase(dict(txn, layer=spec), _run)
    haproxy.write_config(broken=True)
    with pytest.raises(FailsafeError, match='fails "haproxy -c"'):
        engine.apply_phase(dict(txn, layer=hap_layer(haproxy, blue=('drain', 100), green=('ready', 100))), _run)
    assert haproxy.server_state() == before
    assert versions(haproxy.port) == {'1.0.0'}
    assert not DeployState(txn['state_dir'], 'lb').read_journal().get('layers')


def test_nginx_switch_then_rollback_puts_the_previous_file_back_and_reloads(nginx, apps, txn):
    original = open(nginx.include).read()
    assert versions(nginx.port) == {'1.0.0'}
    master = nginx.master()
    res = engine.apply_phase(dict(txn, layer=ngx_layer(nginx, apps, blue=('drain', None), green=('ready', 5))), _run)
    assert res['changed']
    assert versions(nginx.port) == {'2.0.0'}
    assert nginx.master() == master                          # a graceful reload, not a restart
    text = open(nginx.include).read()
    assert 'server 127.0.0.1:%d backup;' % apps['blue'] in text
    assert 'server 127.0.0.1:%d weight=5;' % apps['green'] in text
    engine.rollback(txn, _run)
    assert open(nginx.include).read() == original
    assert versions(nginx.port) == {'1.0.0'}


def served(port, n):
    """{version: how many of ``n`` requests it answered}, through the load balancer."""
    counts = {}
    for dummy in range(n):
        version = lb.get(port)[1]
        counts[version] = counts.get(version, 0) + 1
    return counts


def test_nginx_rollback_puts_the_weights_back_as_nginx_serves_them(tmp_path, apps, txn):
    """Given an upstream whose weights (3:1) differ from those a change sets, when the change is rolled back, then
    nginx splits the traffic 3:1 again: what its workers do, not only what the file says."""
    original = ('upstream app {\n    server 127.0.0.1:%d weight=3;\n    server 127.0.0.1:%d weight=1;\n}\n'
                % (apps['blue'], apps['green']))
    n = lb.Nginx(tmp_path / 'nginx-weights', original)
    n.start()
    try:
        # one worker, smooth weighted round robin: 40 requests are exactly 30 and 10
        assert served(n.port, 40) == {'1.0.0': 30, '2.0.0': 10}
        engine.apply_phase(dict(txn, layer=ngx_layer(n, apps, blue=('ready', 1), green=('ready', 5))), _run)
        assert served(n.port, 60) == {'1.0.0': 10, '2.0.0': 50}
        engine.rollback(txn, _run)
        assert open(n.include).read() == original
        assert served(n.port, 40) == {'1.0.0': 30, '2.0.0': 10}
    finally:
        n.stop()


@pytest.mark.parametrize('case, servers, match', [
    ('bad address fails nginx -t', {'blue': ('drain', None), 'green': ('ready', 1)}, 'fails "nginx -t"'),
    ('nothing ready', {'blue': ('drain', None), 'green': ('maint', None)}, 'no server would take traffic'),
    ('weight 0 while ready', {'blue': ('ready', 0), 'green': ('ready', 1)}, 'weighs at least 1'),
])
def test_nginx_bad_input_is_refused_and_the_running_config_is_untouched(nginx, apps, txn, case, servers, match):
    original = open(nginx.include).read()
    written = os.stat(nginx.include).st_mtime_ns
    spec = ngx_layer(nginx, apps, **servers)
    if case.startswith('bad address'):
        spec['servers'][1]['address'] = '127.0.0.1:99999'
    with pytest.raises(FailsafeError, match=match):
        engine.apply_phase(dict(txn, layer=spec), _run)
    assert open(nginx.include).read() == original
    assert os.stat(nginx.include).st_mtime_ns == written       # checked on a copy: the live file was never touched
    assert versions(nginx.port) == {'1.0.0'}
    assert not DeployState(txn['state_dir'], 'lb').read_journal().get('layers')


def test_nginx_check_mode_shows_the_diff_and_changes_nothing(nginx, apps, txn):
    original = open(nginx.include).read()
    written = os.stat(nginx.include).st_mtime_ns
    plan = engine.apply_phase(dict(txn, layer=ngx_layer(nginx, apps, blue=('drain', None), green=('ready', 1))),
                              _run, check_mode=True)
    assert plan['changed'] and 'backup' in plan['diff']['after']
    assert open(nginx.include).read() == original
    assert os.stat(nginx.include).st_mtime_ns == written
    assert not [n for n in os.listdir(os.path.dirname(nginx.include)) if 'failsafe-check' in n]
    assert versions(nginx.port) == {'1.0.0'}


def _point_green_at_nothing(haproxy):
    """green's address moves to a port where nothing listens: HAProxy's health check sees it down."""
    haproxy.command('set server app/green addr 127.0.0.1 port %d' % lb.free_port())
    deadline = time.time() + 10
    while time.time() < deadline:
        rows = [ln.split() for ln in haproxy.command('show servers state app').splitlines()]
        if [r for r in rows if len(r) > 5 and r[3] == 'green' and r[5] == '0']:     # srv_op_state 0: stopped
            return
        time.sleep(0.1)
    raise AssertionError('green never went down')


def test_haproxy_does_not_drain_the_others_while_the_new_server_is_down(haproxy, txn):
    _point_green_at_nothing(haproxy)
    spec = dict(hap_layer(haproxy, blue=('drain', 100), green=('ready', 100)), up_timeout=1)
    with pytest.raises(FailsafeError, match='green is not up after 1.0 s'):
        engine.apply_phase(dict(txn, layer=spec), _run)
    assert not haproxy.server_state()['blue'][0] & 0x08          # blue still takes the traffic
    assert versions(haproxy.port) == {'1.0.0'}
    # the rollback puts back what was captured (green drained, both weights) and proves it
    engine.rollback(txn, _run)
    assert haproxy.server_state()['green'] == BEFORE['green']
    assert haproxy.server_state()['blue'] == BEFORE['blue']


def test_haproxy_undo_puts_back_a_ready_server_that_is_down_and_says_so(haproxy, txn):
    haproxy.command('set server app/green state ready')
    _point_green_at_nothing(haproxy)
    spec = dict(hap_layer(haproxy, blue=('ready', 100), green=('drain', 100)), up_timeout=1)
    engine.apply_phase(dict(txn, layer=spec), _run)
    assert haproxy.server_state()['green'][0] & 0x08
    out = engine.rollback(txn, _run)
    assert out['failsafe_rollback']['layers'][0]['not_up'] == ['green']
    # ready again with its weight, as captured
    assert haproxy.server_state() == {'blue': BEFORE['blue'], 'green': (0, WEIGHTS['green'])}
    assert versions(haproxy.port) == {'1.0.0'}                   # blue serves meanwhile
