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

Real ansible-playbook runs (playbooks/blue_green.yml, playbooks/switch_back.yml) with the auto_rollback callback.
"""
import json
import os
import subprocess
import time

import pytest

import lb

pytestmark = pytest.mark.slow


def _pid(site, slot):
    """The process id supervisor reports for a slot's program (a restart changes it)."""
    out = subprocess.run([os.path.join(lb.VENV_BIN, 'supervisorctl'), '-c', site.supervisor_conf, 'pid',
                          'app-%s' % slot], capture_output=True, text=True, check=False).stdout.strip()
    return int(out) if out.isdigit() else None


def _journal(site, name):
    with open(os.path.join(site.dir, 'state', name, 'journal.json')) as handle:
        return json.load(handle)


@pytest.fixture(params=['haproxy', 'nginx'])
def site(request, tmp_path):
    why = lb.ensure_prereqs()
    if why:
        pytest.skip(why)
    s = lb.BlueGreenSite(tmp_path / 'site', request.param)
    yield s
    s.stop()


def test_blue_green_failed_verification_and_switch_back_serve_zero_failed_requests(site):
    first = site.blue_green('1.0.0')
    assert first.returncode == 0, first.stdout[-4000:]
    assert site.live() == 'blue'
    assert lb.get(site.port) == (200, '1.0.0')

    load = lb.Load(site.port).start()
    try:
        # a blue-green deploy of 2.0.0: to green, verified there, then traffic moves
        deploy = site.blue_green('2.0.0')
        assert deploy.returncode == 0, deploy.stdout[-4000:]
        assert site.live() == 'green'
        marker = time.time()
        time.sleep(0.5)
        assert set(load.served_since(marker)) == {'2.0.0'}
        assert site.slot_version('blue') == (200, '1.0.0')       # the old slot is still warm
        blue_pid = _pid(site, 'blue')

        # a failed verification on the new slot: 3.0.0 goes to blue (idle), fails its health check, rolled back
        failed = site.blue_green('3.0.0')
        assert failed.returncode != 0
        assert 'Check the health of the new release' in failed.stdout
        assert site.live() == 'green'
        during_failed = load.served_since(marker)
        assert during_failed and set(during_failed) == {'2.0.0'}
        journal = _journal(site, 'app-blue')
        assert journal['status'] == 'rolled_back' and journal['release'] == '3.0.0'
        assert site.slot_version('blue') == (200, '1.0.0')       # the slot was restored and restarted
        assert site.slot_version('green') == (200, '2.0.0')
        blue_pid = _pid(site, 'blue')
        green_pid = _pid(site, 'green')

        # the switch-back: traffic to the warm 1.0.0 slot, nothing restarted
        back = site.switch_back()
        assert back.returncode == 0, back.stdout[-4000:]
        switched = time.time()
        assert site.live() == 'blue'
        assert (_pid(site, 'blue'), _pid(site, 'green')) == (blue_pid, green_pid)
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
    lb_journal = _journal(site, 'traffic')
    assert lb_journal['status'] == 'committed'
    assert lb_journal['layers'][0]['kind'] == 'traffic'
