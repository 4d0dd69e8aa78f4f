"""Blue-green under steady load, on HAProxy and on nginx: 0 failed requests.

Given one app host with two slots (blue and green: supervisor programs on their own ports, each an inventory host
with its own journal) behind a real load balancer (Debian's HAProxy 2.6 or nginx 1.22, started here with their own
configuration, pid file, socket and ephemeral ports), and a bounded client sending GET /version through the load
balancer without keep-alive (one connection per request), counting every non-2xx answer and connection error:

- when release 2.0.0 is deployed blue-green, then traffic moves from 1.0.0 to 2.0.0 and nothing fails;
- when release 3.0.0 (its /health answers 503) is deployed, then its verification on the idle slot fails, the
  callback rolls that slot back, traffic never reaches 3.0.0 and nothing fails;
- when the operator switches back, then traffic returns to the warm 1.0.0 slot (a traffic change only: no program
  restarts) and nothing fails.

Real ansible-playbook runs (playbooks/blue_green.yml, playbooks/switch_back.yml) with the auto_rollback callback,
on this machine and on a namespace fleet (the app host and the load balancer's host are two SSH hosts).
"""
import json
import os
import subprocess
import sys
import time

import pytest

import lb

pytestmark = pytest.mark.slow


@pytest.fixture(params=['haproxy', 'nginx', pytest.param('haproxy-on-fleet', marks=pytest.mark.fleet),
                        pytest.param('nginx-on-fleet', marks=pytest.mark.fleet)])
def site(request, tmp_path):
    lb.require()
    if request.param.endswith('-on-fleet'):
        # the app host and the load balancer are two SSH hosts of a namespace fleet; the client runs here
        s = lb.FleetBlueGreenSite(request.getfixturevalue('fleet')(2), tmp_path / 'site',
                                  request.param.split('-')[0])
    else:
        s = lb.BlueGreenSite(tmp_path / 'site', request.param)
    yield s
    s.stop()


def test_blue_green_failed_verification_and_switch_back_serve_zero_failed_requests(site):
    first = site.blue_green('1.0.0')
    assert first.returncode == 0, first.stdout[-4000:]
    assert site.live() == 'blue'
    assert lb.get(site.port, host=site.host) == (200, '1.0.0')

    load = lb.Load(site.port, host=site.host).start()
    try:
        # a blue-green deploy of 2.0.0: to green, verified there, then traffic moves
        deploy = site.blue_green('2.0.0')
        assert deploy.returncode == 0, deploy.stdout[-4000:]
        assert site.live() == 'green'
        marker = time.time()
        time.sleep(0.5)
        assert set(load.served_since(marker)) == {'2.0.0'}
        assert site.slot_version('blue') == (200, '1.0.0')       # the old slot is still warm
        blue_pid = site.program_pid('blue')

        # a failed verification on the new slot: 3.0.0 goes to blue (idle), fails its health check, rolled back
        failed = site.blue_green('3.0.0')
        assert failed.returncode != 0
        assert 'Check the health of the new release' in failed.stdout
        assert site.live() == 'green'
        during_failed = load.served_since(marker)
        assert during_failed and set(during_failed) == {'2.0.0'}
        journal = site.journal('app-blue')
        assert journal['status'] == 'rolled_back' and journal['release'] == '3.0.0'
        assert site.slot_version('blue') == (200, '1.0.0')       # the slot was restored and restarted
        assert site.slot_version('green') == (200, '2.0.0')
        blue_pid = site.program_pid('blue')
        green_pid = site.program_pid('green')

        # the switch-back: traffic to the warm 1.0.0 slot, nothing restarted
        back = site.switch_back()
        assert back.returncode == 0, back.stdout[-4000:]
        switched = time.time()
        assert site.live() == 'blue'
        assert (site.program_pid('blue'), site.program_pid('green')) == (blue_pid, green_pid)
        load.wait_only('1.0.0', since=switched, timeout=5)
        time.sleep(1)
        after_back = load.served_since(switched)
        if site.driver == 'haproxy':
            # the drained green keeps its state across a reload (server-state-file)
            site.lb.reload()
            reloaded = time.time()
            time.sleep(1)
            assert set(load.served_since(reloaded)) == {'1.0.0'}
    finally:
        load.stop()
    assert set(after_back) == {'1.0.0'}
    assert load.total > 200, 'the load was not steady: only %d requests' % load.total
    assert set(load.versions) == {'1.0.0', '2.0.0'}              # 3.0.0 never served a request
    assert load.failures == [], '%d of %d requests failed: %s' % (len(load.failures), load.total, load.failures[:10])
    # the load balancer's own transactions: two switches, both committed, recorded in the LB's journal
    lb_journal = site.journal('traffic')
    assert lb_journal['status'] == 'committed'
    assert lb_journal['layers'][0]['kind'] == 'traffic'


@pytest.fixture
def haproxy_site(tmp_path):
    lb.require()
    s = lb.BlueGreenSite(tmp_path / 'site', 'haproxy')
    yield s
    s.stop()


def test_a_failure_after_the_switch_puts_traffic_back_before_code_and_a_cold_slot_refuses_a_switch_back(haproxy_site):
    """Given blue live on 1.0.0, when the check through the load balancer fails after traffic moved to green, then
    the callback puts traffic back on blue first (the load balancer's journal closes before green's) and rolls green
    back, with 0 failed requests; when a later deploy keeps the old slot warm for 1 s only, then switch_back.yml
    refuses to send traffic to the stopped slot and nothing changes."""
    site = haproxy_site
    assert site.blue_green('1.0.0').returncode == 0
    load = lb.Load(site.port, host=site.host).start()
    try:
        checks = json.dumps({'failsafe_traffic_checks': [{'url': 'http://127.0.0.1:%d/version' % site.port,
                                                          'body_regex': '^no-such-release$', 'retries': 1}]})
        failed = site.blue_green('2.0.0', '-e', checks)
        assert failed.returncode != 0
        assert 'Check the service through the load balancer' in failed.stdout
        back = time.time()
        time.sleep(0.5)
        assert set(load.served_since(back)) == {'1.0.0'}
        lb_journal, green = site.journal('traffic'), site.journal('app-green')
        assert lb_journal['status'] == 'rolled_back' and green['status'] == 'rolled_back'
        assert lb_journal['closed'] < green['closed'], 'traffic was not put back before the code'
        assert site.live() == 'blue'
        state = site.lb.server_state()
        assert not state['blue'][0] & 0x08 and state['green'][0] & 0x08

        # the old slot kept warm 1 s only: stopped afterwards, so a switch-back to it is refused (2.0.0 is
        # quarantined on green now: it failed there; a fixed 2.1.0 goes out)
        subprocess.run([sys.executable, os.path.join(lb.ROOT, 'examples', 'app', 'build.py'), '--out',
                        os.path.join(site.dir, 'dist'), '--release', '2.1.0=good'], check=True, stdout=subprocess.DEVNULL)
        ok = site.blue_green('2.1.0', '-e', 'failsafe_bluegreen_keep_warm=1')
        assert ok.returncode == 0, ok.stdout[-4000:]
        assert site.live() == 'green'
        assert site.program_pid('blue') is None
        with pytest.raises(OSError):
            lb.get(site.ports['blue'], timeout=2)
        refused = site.switch_back()
        assert refused.returncode != 0
        assert 'Check the old slot answers on its own port' in refused.stdout
        assert site.live() == 'green'
        after = time.time()
        time.sleep(0.5)
        assert set(load.served_since(after)) == {'2.1.0'}
    finally:
        load.stop()
    assert load.failures == [], '%d of %d requests failed: %s' % (len(load.failures), load.total, load.failures[:10])
