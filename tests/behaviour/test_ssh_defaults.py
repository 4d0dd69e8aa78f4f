"""The SSH settings the collection documents (examples/ansible.cfg) keep a blackholed host from hanging a play.

Runs on the namespace fleet with an inventory that carries no keepalive or timeout of its own, so only the
documented ansible.cfg is in force. A host whose network is cut in the middle of a long task, and one cut before
the connection is made, both turn UNREACHABLE within a bounded time while the other host finishes.
"""
import os
import re
import subprocess
import tempfile
import time

import pytest

from support import ROOT, VENV_BIN

pytestmark = [pytest.mark.slow, pytest.mark.fleet]

EXAMPLE_CFG = os.path.join(ROOT, 'examples', 'ansible.cfg')
# ServerAliveInterval 5 x ServerAliveCountMax 3, plus slack for a loaded CI machine.
MID_TASK_LIMIT = 45
CONNECT_LIMIT = 35

PLAYBOOK = """---
- name: A long task on every host
  hosts: all
  gather_facts: false
  tasks:
    - name: Open the connection
      ansible.builtin.ping:
    - name: Work; the victim's network is cut meanwhile
      ansible.builtin.shell: "touch /tmp/started && sleep {{ 2 if inventory_hostname == healthy else 300 }}"
      changed_when: false
"""


def inventory(fleet, path):
    """The fleet's hosts with login settings only: no ServerAlive, no ConnectTimeout, no ssh timeout."""
    lines = ['[hosts]'] + ['%s ansible_host=%s' % (h.name, h.address) for h in fleet.hosts]
    lines += ['[hosts:vars]', 'ansible_user=root', 'ansible_ssh_private_key_file=%s' % fleet.key_path,
              'ansible_python_interpreter=/usr/bin/python3', 'ansible_remote_tmp=/srv/.ansible/tmp',
              "ansible_ssh_common_args='-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null "
              "-o IdentitiesOnly=yes -o BatchMode=yes'"]
    path.write_text('\n'.join(lines) + '\n')
    return str(path)


def env_for(cp_dir, home):
    env = dict(os.environ)
    for key in list(env):
        if key.startswith('ANSIBLE_SSH') or key in ('ANSIBLE_TIMEOUT', 'ANSIBLE_STDOUT_CALLBACK',
                                                    'ANSIBLE_CALLBACKS_ENABLED'):
            env.pop(key)
    env.update({'ANSIBLE_CONFIG': EXAMPLE_CFG, 'ANSIBLE_SSH_CONTROL_PATH_DIR': cp_dir, 'ANSIBLE_HOME': home,
                'ANSIBLE_HOST_KEY_CHECKING': 'False', 'ANSIBLE_NOCOLOR': '1',
                'FAILSAFE_REPORT_DIR': os.path.join(home, 'incidents'),
                'PATH': VENV_BIN + os.pathsep + env.get('PATH', '')})
    return env


def recap(output):
    return {m.group(1): (int(m.group(2)), int(m.group(3)))
            for m in re.finditer(r'^(\S+)\s+:\s+ok=\d+\s+changed=\d+\s+unreachable=(\d+)\s+failed=(\d+)', output,
                                 re.M)}


@pytest.fixture
def scratch():
    base = tempfile.mkdtemp(prefix='fsk-ssh-')  # short: ssh control socket paths are limited to 108 bytes
    yield base
    subprocess.run(['rm', '-rf', base], check=False)


def test_host_cut_mid_task_turns_unreachable_within_the_keepalive_budget(fleet, tmp_path, scratch):
    hosts = fleet(2, name='fsk')
    healthy, victim = hosts.names
    book = tmp_path / 'long.yml'
    book.write_text(PLAYBOOK)
    cmd = [os.path.join(VENV_BIN, 'ansible-playbook'), '-i', inventory(hosts, tmp_path / 'inv.ini'), str(book),
           '-e', 'healthy=%s' % healthy]
    proc = subprocess.Popen(cmd, env=env_for(os.path.join(scratch, 'cp'), scratch), cwd=str(tmp_path),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        started = hosts.host_path(victim, '/tmp/started')
        deadline = time.monotonic() + 120
        while not os.path.exists(started) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert os.path.exists(started), 'the long task never started on %s' % victim
        hosts.cut(victim)
        cut_at = time.monotonic()
        out, dummy = proc.communicate(timeout=MID_TASK_LIMIT + 60)
        took = time.monotonic() - cut_at
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    print('cut mid-task: UNREACHABLE after %.1f s' % took)
    assert recap(out) == {healthy: (0, 0), victim: (1, 0)}, out[-4000:]
    assert took < MID_TASK_LIMIT, 'the play waited %.0f s on a blackholed host' % took


def test_host_cut_before_connecting_turns_unreachable_within_the_connect_timeout(fleet, tmp_path, scratch):
    hosts = fleet(2, name='fsk')
    healthy, victim = hosts.names
    hosts.cut(victim)
    cmd = [os.path.join(VENV_BIN, 'ansible'), 'all', '-i', inventory(hosts, tmp_path / 'inv.ini'), '-m', 'ping']
    started = time.monotonic()
    proc = subprocess.run(cmd, env=env_for(os.path.join(scratch, 'cp'), scratch), cwd=str(tmp_path),
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=CONNECT_LIMIT + 60, check=False)
    took = time.monotonic() - started
    print('cut before connecting: UNREACHABLE after %.1f s' % took)
    assert re.search(r'^%s \| UNREACHABLE!' % re.escape(victim), proc.stdout, re.M), proc.stdout
    assert re.search(r'^%s \| SUCCESS' % re.escape(healthy), proc.stdout, re.M), proc.stdout
    assert took < CONNECT_LIMIT, 'ping took %.0f s against a blackholed host' % took
