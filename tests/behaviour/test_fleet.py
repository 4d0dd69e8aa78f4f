# -*- coding: utf-8 -*-
# Copyright: Contributors to failsafe.deploy
# SPDX-License-Identifier: GPL-3.0-or-later
"""Self-test of the namespace test fleet (tests/fleet): real ansible runs against real sshd hosts."""

import os
import re
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from tests.fleet.fleet import BYTECODE_DIR, _links, _netns_list, _pid_alive  # noqa: E402  pylint: disable=wrong-import-position
from tests.fleet.pytest_fleet import fleet  # noqa: E402,F401  pylint: disable=wrong-import-position,unused-import
from tests.requires import require_root  # noqa: E402  pylint: disable=wrong-import-position

pytestmark = pytest.mark.fleet

STATUS_RE = re.compile(r'^(\S+) \| (SUCCESS|CHANGED|FAILED!|UNREACHABLE!)', re.MULTILINE)


def ansible(fleet_, tmp_path, *args, timeout=120):
    """Run the real `ansible` ad-hoc command with the project's environment; returns (statuses, output, elapsed)."""
    env = dict(os.environ)
    env.update(fleet_.env())
    env.update({'ANSIBLE_HOME': str(tmp_path / 'ansible-home'), 'ANSIBLE_NOCOLOR': '1',
                'ANSIBLE_DEPRECATION_WARNINGS': 'False'})
    argv = ['bash', '-c', 'source "$0/scripts/env.sh" && exec "$@"', ROOT,
            'ansible', '-i', fleet_.inventory_path] + list(args)
    started = time.monotonic()
    result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout, check=False,
                            stdin=subprocess.DEVNULL)
    elapsed = time.monotonic() - started
    output = result.stdout + result.stderr
    return dict(STATUS_RE.findall(output)), output, elapsed


def ping(fleet_, tmp_path, pattern='all'):
    return ansible(fleet_, tmp_path, pattern, '-m', 'ansible.builtin.ping')


def test_each_host_is_its_own_machine(fleet, tmp_path):
    """Given 3 hosts, ansible reaches each one over its own connection and lands in that host's own /srv."""
    hosts = fleet(3)

    statuses, output, _elapsed = ansible(hosts, tmp_path, 'all', '-m', 'ansible.builtin.command', '-a', 'hostname')
    assert statuses == {name: 'CHANGED' for name in hosts.names}, output
    for name in hosts.names:
        assert re.search(r'^%s \| CHANGED \| rc=0 >>\n%s$' % (name, name), output, re.MULTILINE), output

    statuses, output, _elapsed = ansible(hosts, tmp_path, 'all', '-m', 'ansible.builtin.copy',
                                         '-a', 'content={{ inventory_hostname }} dest=/srv/who mode=0644')
    assert statuses == {name: 'CHANGED' for name in hosts.names}, output
    for host in hosts:
        with open(hosts.host_path(host, '/srv/who'), encoding='utf-8') as handle:
            assert handle.read() == host.name
    assert not os.path.exists('/srv/who'), 'a host wrote into the machine\'s own /srv'
    # ansible's remote temp stays on each host (under its /srv), not in the shared /root
    assert os.path.isdir(hosts.host_path(hosts[1], '/srv/.ansible/tmp'))


def test_srv_run_tmp_and_state_dir_are_per_host(fleet):
    hosts = fleet(2)
    one, two = hosts.hosts
    for path in ('/srv/only-one', '/tmp/only-one', '/run/only-one', '/var/lib/failsafe-deploy/only-one'):
        result = hosts.run(one, ['sh', '-c', 'echo one > %s' % path])
        assert result.returncode == 0, result.stderr
        assert os.path.isfile(hosts.host_path(one, path))
        assert not os.path.exists(hosts.host_path(two, path))
        assert hosts.run(two, ['test', '-e', path]).returncode == 1
        assert hosts.ssh(two, 'test -e %s' % path).returncode == 1
        assert hosts.ssh(one, 'cat %s' % path).stdout == 'one\n'
    # own process table with sshd as PID 1, own hostname, own address
    assert hosts.run(one, ['cat', '/proc/1/comm']).stdout.strip() == 'sshd'
    assert hosts.run(two, ['hostname']).stdout.strip() == two.name
    assert two.address in hosts.run(two, ['ip', '-4', '-o', 'addr', 'show', 'eth0']).stdout
    assert hosts.host_path(one, '/etc/hostname') == '/etc/hostname'


def test_module_runs_load_ansible_core_module_utils_from_the_hosts_bytecode_cache(fleet, tmp_path):
    """Each host compiles ansible-core's module_utils once (tests/fleet: usercustomize.py in its own /root) instead of
    in every module run; a fleet made with bytecode_cache=False, as the benchmarks make theirs, has none of it."""
    hosts = fleet(1)
    host = hosts.hosts[0]
    cache = hosts.host_path(host, BYTECODE_DIR)
    seen = []
    for dummy in range(2):
        statuses, output, dummy = ansible(hosts, tmp_path, 'all', '-m', 'ansible.builtin.stat', '-a', 'path=/etc/hostname')
        assert statuses == {host.name: 'SUCCESS'}, output
        seen.append({name: os.stat(os.path.join(cache, name)).st_ino for name in os.listdir(cache)})
    # basic.py and the files it imports, compiled by the first run; the second loaded them and wrote nothing
    assert len(seen[0]) >= 30 and seen[1] == seen[0]
    # the machine's own Python and home are untouched
    assert not os.path.exists(os.path.join(os.path.expanduser('~'), '.cache', 'failsafe-fleet'))
    stock = fleet(1, bytecode_cache=False)
    statuses, output, dummy = ansible(stock, tmp_path, 'all', '-m', 'ansible.builtin.stat', '-a', 'path=/etc/hostname')
    assert statuses == {stock.hosts[0].name: 'SUCCESS'}, output
    assert not os.path.exists(stock.host_path(stock.hosts[0], '/root/.cache/failsafe-fleet'))
    assert stock.run(stock.hosts[0], ['/usr/bin/python3', '-c', 'import usercustomize'],
                     capture_output=True).returncode != 0


def test_crashed_host_is_unreachable_fast_and_restart_keeps_srv(fleet, tmp_path):
    hosts = fleet(3)
    victim = hosts[2]
    statuses, output, _elapsed = ansible(hosts, tmp_path, 'all', '-m', 'ansible.builtin.copy',
                                         '-a', 'content=kept dest=/srv/state mode=0644')
    assert set(statuses.values()) == {'CHANGED'}, output
    hosts.run(victim, ['sh', '-c', 'echo volatile > /run/marker'])
    # the same ping with every host up, just before: ansible's own start-up, as slow as the machine is busy now
    statuses, output, base = ping(hosts, tmp_path)
    assert set(statuses.values()) == {'SUCCESS'}, output

    hosts.crash(victim)
    assert not hosts.is_running(victim)
    assert _netns_pids_of(victim.netns) == []
    statuses, output, elapsed = ping(hosts, tmp_path)
    assert statuses == {hosts[1].name: 'SUCCESS', victim.name: 'UNREACHABLE!', hosts[3].name: 'SUCCESS'}, output
    # unreachable within ssh's ConnectTimeout (3 s) and its retry, not after a hang: at most 10 s more than the
    # run with every host up
    assert elapsed < base + 10, 'crashed host took %.1f s to turn unreachable (%.1f s with all up)' % (elapsed, base)

    hosts.restart(victim)
    statuses, output, _elapsed = ping(hosts, tmp_path, victim.name)
    assert statuses == {victim.name: 'SUCCESS'}, output
    assert hosts.ssh(victim, 'cat /srv/state').stdout == 'kept'
    assert hosts.ssh(victim, 'hostname').stdout.strip() == victim.name
    assert not os.path.exists(hosts.host_path(victim, '/run/marker')), '/run survived a reboot'


def test_cut_network_makes_host_unreachable_and_restore_brings_it_back(fleet, tmp_path):
    hosts = fleet(2)
    victim = hosts[1]
    # opens persistent control masters to both hosts; its time is ansible's own start-up and the connections, as
    # slow as the machine is busy now
    statuses, output, base = ping(hosts, tmp_path)
    assert set(statuses.values()) == {'SUCCESS'}, output

    hosts.cut(victim)
    statuses, output, elapsed = ping(hosts, tmp_path)
    assert statuses == {victim.name: 'UNREACHABLE!', hosts[2].name: 'SUCCESS'}, output
    # unreachable within ssh's ConnectTimeout and its retry, not after a hang: at most 10 s more than the run with
    # every host up
    assert elapsed < base + 10, 'cut host took %.1f s to turn unreachable (%.1f s with all up)' % (elapsed, base)
    assert hosts.is_running(victim), 'a network cut must not kill the host'

    hosts.restore_network(victim)
    statuses, output, _elapsed = ping(hosts, tmp_path)
    assert set(statuses.values()) == {'SUCCESS'}, output


def test_down_leaves_nothing_behind(fleet, tmp_path):
    hosts = fleet(3)
    statuses, output, _elapsed = ping(hosts, tmp_path)
    assert set(statuses.values()) == {'SUCCESS'}, output
    pids = [h.pid for h in hosts] + [h.launcher_pid for h in hosts]
    netns = [h.netns for h in hosts]
    links = [h.veth for h in hosts] + [hosts.bridge]
    cp_dir, host_dirs = hosts.cp_dir, [hosts.host_dir(h) for h in hosts]
    assert os.listdir(cp_dir), 'ansible kept no control socket in the fleet\'s control_path_dir'

    hosts.down()
    hosts.down()  # idempotent
    assert not [p for p in pids if _pid_alive(p)]
    assert not set(netns) & set(_netns_list())
    assert not set(links) & set(_links())
    assert not os.path.exists(cp_dir)
    assert not [d for d in host_dirs if os.path.exists(d)]
    assert not [p for p in os.listdir('/proc') if p.isdigit() and cp_dir in _cmdline_of(int(p))]


def test_down_all_removes_a_fleet_left_by_a_killed_run(tmp_path):
    """A fleet started by the CLI outlives its process; `down --all` finds it by name prefix and removes it."""
    require_root('the namespace fleet needs root')
    base = tmp_path / 'cli-fleet'
    cli = [sys.executable, '-m', 'tests.fleet']
    up = subprocess.run(cli + ['up', '-n', '2', '--name', 'fsdcli', '--dir', str(base)], cwd=ROOT,
                        capture_output=True, text=True, timeout=60, check=False)
    assert up.returncode == 0, up.stderr
    assert up.stdout.strip() == str(base / 'inventory.ini')
    status = subprocess.run(cli + ['status', '--dir', str(base)], cwd=ROOT, capture_output=True, text=True,
                            timeout=60, check=False)
    assert status.stdout.count('running=True') == 2, status.stdout
    assert 'fsdcli-h1' in _netns_list()

    down = subprocess.run(cli + ['down', '--all', '--prefix', 'fsdcli'], cwd=ROOT, capture_output=True, text=True,
                          timeout=60, check=False)
    assert down.returncode == 0, down.stderr
    assert not [n for n in _netns_list() if n.startswith('fsdcli-')]
    assert not [n for n in _links() if n.startswith('fsdcli-')]
    assert not base.exists()
    assert not [p for p in os.listdir('/proc') if p.isdigit() and '/run/failsafe-fleet/fsdcli/' in
                _cmdline_of(int(p))]


def test_up_reclaims_a_fleet_whose_owner_was_killed(tmp_path):
    """A test process SIGKILLed mid-run leaves its hosts running; the next up() of that name tears them down first."""
    require_root('the namespace fleet needs root')
    code = ('import sys, time\n'
            'from tests.fleet import Fleet\n'
            'Fleet(2, name="fsdkil", base_dir=sys.argv[1]).up()\n'
            'print("up", flush=True)\n'
            'time.sleep(120)\n')
    owner = subprocess.Popen([sys.executable, '-c', code, str(tmp_path / 'killed')], cwd=ROOT,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert owner.stdout.readline().strip() == 'up'
    finally:
        owner.kill()
        owner.wait()
    assert 'fsdkil-h1' in _netns_list(), 'the killed owner took its hosts with it: nothing to reclaim'
    orphans = [p for p in os.listdir('/proc') if p.isdigit() and '/run/failsafe-fleet/fsdkil/' in _cmdline_of(int(p))]
    assert len(orphans) == 4, orphans  # per host: its sshd and the unshare launcher waiting for it

    from tests.fleet.fleet import Fleet  # pylint: disable=import-outside-toplevel
    with Fleet(2, name='fsdkil', base_dir=str(tmp_path / 'again')) as again:
        assert again.reachable(1) and again.reachable(2)
        assert not [p for p in orphans if _pid_alive(int(p))]
        assert not (tmp_path / 'killed').exists()
    assert not [n for n in _netns_list() if n.startswith('fsdkil-')]


def _netns_pids_of(netns):
    result = subprocess.run(['ip', 'netns', 'pids', netns], capture_output=True, text=True, check=False)
    return result.stdout.split()


def _cmdline_of(pid):
    try:
        with open('/proc/%d/cmdline' % pid, 'rb') as handle:
            return handle.read().replace(b'\0', b' ').decode('utf-8', 'replace')
    except OSError:
        return ''
