# -*- coding: utf-8 -*-
# Copyright: Contributors to failsafe.deploy
# SPDX-License-Identifier: GPL-3.0-or-later
"""The app as a systemd unit, on a 2-host namespace fleet whose hosts run systemd as their PID 1 (tests/fleet,
init='systemd'): real deploys with the auto_rollback callback, the service layer's systemd kind and the commit
confirmed watchdog armed as a ``systemd-run`` timer, all checked on the hosts with ``systemctl``.

- a deploy writes the unit file (a configuration file of the release, captured by the snapshot) and starts the unit;
  while the deploy is held in its verify step the revert timer is in ``systemctl list-timers``, and the commit
  removes it;
- a failing release is rolled back: the unit file is restored byte for byte, systemd has reloaded it (the unit's
  environment names the old release again) and the service runs again, serving the old release;
- a first deploy whose unit did not exist before fails: the unit is stopped and, its file removed, unloaded
  (``LoadState=not-found``);
- the controller is SIGKILLed after the switch: the host's timer fires and the host reverts itself to the
  previous release; the timer is gone afterwards;
- the machine outside the hosts is untouched: the entries of its /tmp (but this test's own) keep their inodes, old
  entries of /tmp that a boot-time tmpfiles cleanup would remove survive, the machine's PID 1 and its daemons are the
  same processes, no unit file appears in its /etc/systemd/system, and nothing of the hosts is left in its cgroups.

The fleet is named by FAILSAFE_FLEET_NAME (default fsd) on FAILSAFE_FLEET_SUBNET, like every fleet test.
"""

import hashlib
import os
import re
import signal
import sys
import time

import pytest

from support import ROOT
from test_fault_matrix import HOOK, MARKER, Matrix, _wait_for_marker

if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from tests.fleet.fleet import Fleet, ensure_prereqs  # noqa: E402  pylint: disable=wrong-import-position
from tests.requires import require_root  # noqa: E402  pylint: disable=wrong-import-position

pytestmark = pytest.mark.fleet

STATE = '/var/lib/failsafe-deploy/app'
UNIT = '/etc/systemd/system/app.service'
SHOW = ('LoadState', 'ActiveState', 'SubState', 'ExecMainPID', 'FragmentPath', 'NeedDaemonReload', 'Environment')
# The example app's settings (tests/fleet/app-vars.yml) with the app as a systemd unit: its unit file is one of the
# release's configuration files, captured by the snapshot, so that a rollback restores it.
VARS = '''---
failsafe_name: app
failsafe_app_root: /srv/app
failsafe_state_dir: /var/lib/failsafe-deploy
failsafe_release_archive: "{{ lookup('ansible.builtin.env', 'FAILSAFE_DIST') }}/app-{{ failsafe_release_id }}.tar.gz"
failsafe_service_manager: systemd
failsafe_service_name: app
failsafe_config_files:
  - dest: /srv/app/shared/config/app.json
    content: '{"bind": "0.0.0.0", "port": 8080, "label": "release {{ failsafe_release_id }}"}'
    mode: '0640'
  - dest: /etc/systemd/system/app.service
    mode: '0644'
    content: |
      [Unit]
      Description=example app, release {{ failsafe_release_id }}

      [Service]
      Environment=APP_RELEASE={{ failsafe_release_id }}
      ExecStart=/usr/bin/python3 /srv/app/current/app.py --config /srv/app/shared/config/app.json
      StandardOutput=append:/srv/app.log
      StandardError=append:/srv/app.log

      [Install]
      WantedBy=multi-user.target
failsafe_snapshot_extra_paths:
  - /etc/systemd/system/app.service
failsafe_verify_checks:
  - name: health
    url: http://127.0.0.1:8080/health
    body_regex: '"status": *"ok"'
    retries: 6
    sleep: 0.5
    timeout: 2
'''


class SystemdMatrix(Matrix):
    """The fault matrix's runner with the app as a systemd unit."""

    def __init__(self, fleet, base):
        super().__init__(fleet, base)
        self.vars_path = os.path.join(base, 'systemd-app-vars.yml')
        with open(self.vars_path, 'w', encoding='utf-8') as handle:
            handle.write(VARS)

    def argv(self, playbook, *args):
        return ['ansible-playbook', '-i', self.fleet.inventory_path, playbook, '-e', '@' + self.vars_path] + list(args)

    def release(self, mode):
        self.serial += 1
        version = '2.0.%d' % self.serial
        self.build.build(self.dist, 0, [(version, mode)])
        return version

    def show(self, host):
        """``systemctl show`` of the app's unit, on the host."""
        res = self.fleet.run(host, ['systemctl', 'show', '-p', ','.join(SHOW), 'app.service'], timeout=30)
        assert res.returncode == 0, res.stderr
        return dict(line.split('=', 1) for line in res.stdout.splitlines() if '=' in line)

    def timers(self, host):
        """The failsafe revert timers in the host's ``systemctl list-timers --all``."""
        res = self.fleet.run(host, ['systemctl', 'list-timers', '--all', '--no-pager', '--no-legend'], timeout=30)
        assert res.returncode == 0, res.stderr
        return re.findall(r'failsafe-confirm-\S+\.timer', res.stdout)

    def unit_sha(self, host):
        path = self.path(host, UNIT)
        if not os.path.exists(path):
            return None
        with open(path, 'rb') as handle:
            return hashlib.sha256(handle.read()).hexdigest()


# --- the machine outside the hosts --------------------------------------------------------------------------------

CANARY_AGE = 40 * 86400  # older than any tmpfiles age rule: a cleanup of /tmp would remove them


def _proc_start(pid):
    try:
        with open('/proc/%d/stat' % pid, encoding='ascii', errors='replace') as stat:
            fields = stat.read().rsplit(')', 1)[1].split()
        return int(fields[1]), int(fields[19])  # ppid, start time
    except (OSError, IndexError, ValueError):
        return None


def _ns(pid, kind):
    try:
        return os.readlink('/proc/%d/ns/%s' % (pid, kind))
    except OSError:
        return None


SETTLED = 600  # seconds a daemon of the machine has been running, at least, to count as one of its services
# ... and it started before this test session (less a margin): the suite's other streams, started beside this one,
# start and stop servers of their own all the time, and one started 10 minutes ago may end while this file runs
SESSION_MARGIN = 10


def _session_start_ticks():
    """When this test session's process started, in clock ticks since boot (as /proc/PID/stat counts)."""
    return _proc_start(os.getpid())[1]


def _settled_ticks():
    clk = os.sysconf('SC_CLK_TCK')
    return min(_uptime_ticks() - SETTLED * clk, _session_start_ticks() - SESSION_MARGIN * clk)


def _settled_age():
    """Seconds an entry of /tmp must be left alone for to count as the machine's (see _settled_ticks)."""
    clk = os.sysconf('SC_CLK_TCK')
    return max(SETTLED, (_uptime_ticks() - _session_start_ticks()) / clk + SESSION_MARGIN)


def _cmd(pid):
    try:
        with open('/proc/%d/cmdline' % pid, 'rb') as handle:
            return handle.read().replace(b'\0', b' ').decode('utf-8', 'replace').strip()
    except OSError:
        return ''


def _uptime_ticks():
    with open('/proc/uptime', encoding='ascii') as handle:
        return float(handle.read().split()[0]) * os.sysconf('SC_CLK_TCK')


def machine_daemons():
    """The machine's services as processes: PID 1, and the daemons of the machine's own namespaces (children of PID 1
    that are not kernel threads) running for SETTLED seconds at least and since before this session, as (pid, start
    time, command). ssh control masters, which end by themselves when idle, are left out."""
    out = set()
    own_pid_ns, own_net_ns = _ns(os.getpid(), 'pid'), _ns(os.getpid(), 'net')
    settled = _settled_ticks()
    for entry in os.listdir('/proc'):
        if not entry.isdigit():
            continue
        pid = int(entry)
        stat = _proc_start(pid)
        if stat is None or (pid != 1 and (stat[0] != 1 or stat[1] > settled)):
            continue
        if pid != 1 and (_ns(pid, 'pid') != own_pid_ns or _ns(pid, 'net') != own_net_ns):
            continue
        cmd = _cmd(pid)
        if cmd and '[mux]' not in cmd:
            out.add((pid, stat[1], cmd))
    return out


def tmp_entries(own, older_than=0):
    """{name: inode} of the machine's /tmp, without ``own`` (this test's own folders); with ``older_than``, only the
    entries not modified for that many seconds (the others belong to runs under way beside this one)."""
    out = {}
    now = time.time()
    with os.scandir('/tmp') as entries:
        for entry in entries:
            if entry.name not in own:
                try:
                    if now - entry.stat(follow_symlinks=False).st_mtime >= older_than:
                        out[entry.name] = entry.inode()
                except OSError:
                    pass
    return out


class Machine:
    """What the machine looks like outside the hosts, before they boot."""

    def __init__(self, own):
        self.own = set(own)
        # an old file and an old empty folder in /tmp: what a boot-time cleanup of /tmp (tmpfiles' D and age rules)
        # would remove first
        self.canary_dir = os.path.join('/tmp', 'failsafe-systemd-canary-%d' % os.getpid())
        os.makedirs(self.canary_dir)
        self.canary_file = self.canary_dir + '.file'
        with open(self.canary_file, 'w', encoding='utf-8') as handle:
            handle.write('left by test_systemd_hosts; removed at its end\n')
        old = time.time() - CANARY_AGE
        for path in (self.canary_file, self.canary_dir):
            os.utime(path, (old, old))
        self.tmp = tmp_entries(self.own, older_than=_settled_age())
        self.daemons = machine_daemons()
        self.units = sorted(os.listdir('/etc/systemd/system'))
        self.hostname = open('/etc/hostname', encoding='utf-8').read()  # pylint: disable=consider-using-with
        self.uname = os.uname().nodename

    def remove_canaries(self):
        for path in (self.canary_file, self.canary_dir):
            if os.path.isdir(path):
                os.rmdir(path)
            elif os.path.exists(path):
                os.unlink(path)


@pytest.fixture(scope='module')
def machine(tmp_path_factory):
    base = str(tmp_path_factory.mktemp('systemd-hosts'))
    # this test's own entries of /tmp: pytest's base folder (holding the fleet's), and an ssh control folder
    own = {os.path.relpath(base, '/tmp').split('/')[0]} if base.startswith('/tmp/') else set()
    state = Machine(own)
    state.base = base
    try:
        yield state
    finally:
        state.remove_canaries()


@pytest.fixture(scope='module')
def fsys(machine):
    """A 2-host fleet whose hosts run systemd as PID 1; he-h1 deployed on 1.0.0 (verified), he-h2 fresh."""
    require_root('the namespace fleet needs root')
    ensure_prereqs(init='systemd')
    fleet = Fleet(2, base_dir=os.path.join(machine.base, 'fleet'), init='systemd')
    fleet.up()
    matrix = SystemdMatrix(fleet, machine.base)
    matrix.machine = machine
    if fleet.cp_dir.startswith('/tmp/'):
        machine.own.add(os.path.relpath(fleet.cp_dir, '/tmp').split('/')[0])
    try:
        yield matrix
    finally:
        fleet.down()


def cell(matrix, name):
    path = os.path.join(matrix.base, name)
    os.makedirs(path)
    return path


def journal(matrix, host):
    return matrix.read_json(host, STATE + '/journal.json') or {}


def test_a_deploy_starts_the_unit_and_the_commit_disarms_the_systemd_timer(fsys):
    """Given a host whose PID 1 is systemd and no app, when 1.0.0 deploys (held a moment in its verify step), then
    the revert timer is a systemd timer of the host while the deploy is held, the unit runs from the unit file the
    deploy wrote into the host's /etc/systemd/system and serves 1.0.0, and the commit stops the timer."""
    matrix = fsys
    host = 'he-h1' if 'he-h1' in matrix.fleet.names else matrix.fleet.names[0]
    matrix.host1 = host
    matrix.build.build(matrix.dist, 0, [('1.0.0', 'good')])
    cell_dir = cell(matrix, 'first-deploy')
    proc = matrix.start(cell_dir, 'failsafe.deploy.deploy', '-e', 'release_version=1.0.0', '--limit', host,
                        '-e', 'failsafe_verify_before_tasks=%s' % HOOK, '-e', 'failsafe_fault_host=%s' % host,
                        '-e', 'failsafe_fault_kind=hold', '-e', 'failsafe_fault_step=verify',
                        '-e', 'failsafe_fault_marker=%s' % MARKER, '-e', 'failsafe_fault_hold_seconds=4')
    _wait_for_marker(matrix, host, proc)
    armed = matrix.timers(host)
    assert matrix.finish(proc) == 0, 'the first deploy failed: see %s/runs.log' % cell_dir

    confirm = journal(matrix, host).get('confirm') or {}
    assert armed == ['%s.timer' % confirm.get('unit')], (armed, confirm)
    assert confirm.get('state') == 'confirmed', confirm
    assert matrix.timers(host) == [], 'the commit left the revert timer armed'
    show = matrix.show(host)
    assert (show['LoadState'], show['ActiveState'], show['SubState']) == ('loaded', 'active', 'running'), show
    assert show['FragmentPath'] == UNIT and int(show['ExecMainPID']) > 0, show
    assert 'APP_RELEASE=1.0.0' in show['Environment'], show
    assert matrix.served_version(host) == '1.0.0'
    assert matrix.unit_sha(host) is not None
    assert not os.path.exists(UNIT), 'the deploy wrote its unit file into the machine'
    state = matrix.state(host)
    assert state['current'] == state['last_verified'] == '1.0.0', state


def test_a_failing_release_is_rolled_back_to_the_old_unit_file_reloaded_and_running(fsys):
    """Given the host on 1.0.0, when a release that crashes at start deploys (its unit file names it), then the
    rollback restores the unit file byte for byte, systemd has reloaded it (the unit's environment names 1.0.0 and no
    reload is pending) and the unit runs again, serving 1.0.0."""
    matrix = fsys
    host = matrix.host1
    sha, show = matrix.unit_sha(host), matrix.show(host)
    bad = matrix.release('crash')
    cell_dir = cell(matrix, 'failing-release')
    rc, _elapsed = matrix.play(cell_dir, 'failsafe.deploy.deploy', '-e', 'release_version=%s' % bad,
                               '--limit', host)
    assert rc != 0, 'a release that crashes at start deployed: see %s/runs.log' % cell_dir
    j = journal(matrix, host)
    assert (j.get('release'), j.get('status')) == (bad, 'rolled_back'), j
    after = matrix.show(host)
    assert matrix.unit_sha(host) == sha, 'the rollback did not restore the unit file'
    assert (after['LoadState'], after['ActiveState'], after['SubState']) == ('loaded', 'active', 'running'), after
    assert after['FragmentPath'] == UNIT and after['NeedDaemonReload'] == 'no', after
    assert 'APP_RELEASE=1.0.0' in after['Environment'], 'systemd still runs the failed unit file: %s' % after
    assert int(after['ExecMainPID']) > 0 and after['ExecMainPID'] != show['ExecMainPID'], (show, after)
    assert matrix.served_version(host) == '1.0.0'
    assert matrix.current(host) == '1.0.0'


def test_a_first_deploy_that_fails_stops_and_unloads_its_new_unit(fsys):
    """Given a fresh host with no app unit, when its first deploy (a release that crashes at start) fails, then the
    unit is stopped, its file removed and systemd no longer knows it (LoadState=not-found); nothing serves."""
    matrix = fsys
    host = [h for h in matrix.fleet.names if h != matrix.host1][0]
    assert matrix.show(host)['LoadState'] == 'not-found' and matrix.unit_sha(host) is None
    bad = matrix.release('crash')
    cell_dir = cell(matrix, 'first-deploy-fails')
    rc, _elapsed = matrix.play(cell_dir, 'failsafe.deploy.deploy', '-e', 'release_version=%s' % bad,
                               '--limit', host)
    assert rc != 0, 'a release that crashes at start deployed: see %s/runs.log' % cell_dir
    j = journal(matrix, host)
    assert (j.get('release'), j.get('status')) == (bad, 'rolled_back'), j
    assert matrix.unit_sha(host) is None, 'the rollback left the new unit file'
    show = matrix.show(host)
    assert (show['LoadState'], show['ActiveState']) == ('not-found', 'inactive'), show
    assert show['ExecMainPID'] == '0', show
    assert matrix.served_version(host).startswith('unhealthy'), 'something still serves on the host'
    assert matrix.current(host) is None


def test_the_systemd_timer_reverts_a_host_whose_controller_was_killed(fsys):
    """Given the host on 1.0.0, when a deploy is SIGKILLed after the switch (its revert timer in the host's
    list-timers), then at the deadline the timer's service reverts the host by itself: the old unit file, reloaded,
    running and serving 1.0.0; the timer is gone once its service (the watchdog) has ended."""
    matrix = fsys
    host = matrix.host1
    seconds = 10
    sha = matrix.unit_sha(host)
    new = matrix.release('good')
    cell_dir = cell(matrix, 'sigkill')
    if os.path.exists(matrix.path(host, MARKER)):
        os.unlink(matrix.path(host, MARKER))
    proc = matrix.start(cell_dir, 'failsafe.deploy.deploy', '-e', 'release_version=%s' % new, '--limit', host,
                        '-e', 'failsafe_confirm_timeout=%d' % seconds,
                        '-e', 'failsafe_verify_before_tasks=%s' % HOOK, '-e', 'failsafe_fault_host=%s' % host,
                        '-e', 'failsafe_fault_kind=hold', '-e', 'failsafe_fault_step=verify',
                        '-e', 'failsafe_fault_marker=%s' % MARKER)
    _wait_for_marker(matrix, host, proc)
    assert matrix.current(host) == new and 'APP_RELEASE=%s' % new in matrix.show(host)['Environment']
    armed = matrix.timers(host)
    killed = time.monotonic()
    os.killpg(proc.pid, signal.SIGKILL)
    matrix.finish(proc)
    confirm = journal(matrix, host).get('confirm') or {}
    assert armed == ['%s.timer' % confirm.get('unit')], (armed, confirm)

    deadline = killed + seconds + 30
    while time.monotonic() < deadline:
        confirm = journal(matrix, host).get('confirm') or {}
        if confirm.get('state') in ('reverted', 'revert_failed'):
            break
        time.sleep(0.3)
    j = journal(matrix, host)
    assert j.get('status') == 'rolled_back' and j['confirm']['state'] == 'reverted', j.get('confirm')
    assert 'not confirmed within %d s' % seconds in j['outcome']['reason'], j['outcome']
    show = matrix.show(host)
    assert matrix.unit_sha(host) == sha, 'the revert did not restore the unit file'
    assert (show['ActiveState'], show['SubState'], show['NeedDaemonReload']) == ('active', 'running', 'no'), show
    assert 'APP_RELEASE=1.0.0' in show['Environment'], show
    assert matrix.served_version(host) == '1.0.0' and matrix.current(host) == '1.0.0'
    # A timer that fired is unloaded when the service it started ends: the watchdog says 'reverted' in the journal
    # before it sends its alert and exits, so the timer may be listed a moment longer (seconds on a loaded machine).
    gone = time.monotonic() + 30
    while matrix.timers(host) and time.monotonic() < gone:
        time.sleep(0.5)
    assert matrix.timers(host) == [], 'the revert timer is still listed 30 s after the host reverted'


def _cgroup_pids(path):
    pids = []
    for dirpath, _dirs, files in os.walk(path):
        if 'cgroup.procs' in files:
            with open(os.path.join(dirpath, 'cgroup.procs'), encoding='ascii') as handle:
                pids += [int(p) for p in handle.read().split()]
    return pids


def _enabled_machine_units():
    """The services the machine's own systemd configuration enables (what an unguarded systemd would start)."""
    names = set()
    for folder in ('/etc/systemd/system', '/lib/systemd/system'):
        if not os.path.isdir(folder):
            continue
        for wants in os.listdir(folder):
            if wants.endswith('.target.wants') and os.path.isdir(os.path.join(folder, wants)):
                names.update(n for n in os.listdir(os.path.join(folder, wants)) if n.endswith('.service'))
    return names


def test_the_machine_outside_the_hosts_is_untouched(fsys):
    """Given the systemd hosts after every scenario, while they run their processes stay in their own pid namespaces
    and cgroups and none of the machine's enabled services runs in them; when they are torn down, then nothing of
    them is left in the machine's cgroups or process table, the machine's /tmp keeps its settled entries (same
    inodes; the old canaries a tmpfiles cleanup would remove first included), its PID 1 and daemons are the same
    processes, and its /etc/systemd/system, /etc/hostname and host name are as they were."""
    matrix = fsys
    fleet = matrix.fleet
    machine = matrix.machine
    enabled = _enabled_machine_units()
    assert enabled, 'the machine enables no service: nothing to check against'
    host_ns, cgroups = {}, []
    for host in fleet.names:
        pid1 = fleet[host].pid
        assert _cmd(pid1).startswith('/lib/systemd/systemd --unit='), 'PID 1 of %s is not systemd' % host
        host_ns[host] = _ns(pid1, 'pid')
        assert host_ns[host] != _ns(os.getpid(), 'pid')
        cgroups += fleet[host].cgroups
        for path in fleet[host].cgroups:
            pids = _cgroup_pids(path)
            assert pids, 'nothing of %s in its cgroup %s' % (host, path)
            # (the host's launcher, `unshare`, waits for its PID 1 in the same cgroup)
            strays = [(p, _cmd(p)) for p in pids
                      if p != fleet[host].launcher_pid and _ns(p, 'pid') not in (host_ns[host], None)]
            assert not strays, '%s: processes of its cgroup outside its pid namespace: %s' % (host, strays)
        res = fleet.run(host, ['systemctl', 'list-units', '--all', '--type=service', '--no-legend', '--plain',
                               '--no-pager'], timeout=30)
        assert res.returncode == 0, res.stderr
        units = {line.split()[0] for line in res.stdout.splitlines() if line.strip()}
        assert 'failsafe-fleet-sshd.service' in units, units
        assert not units & enabled, '%s loaded services of the machine: %s' % (host, sorted(units & enabled))

    fleet.down()

    assert not [path for path in cgroups if os.path.exists(path)], 'host cgroups left behind'
    deadline = time.monotonic() + 10  # processes killed with their pid namespace may take a moment to exit
    while True:
        left = [pid for pid in (int(p) for p in os.listdir('/proc') if p.isdigit())
                if _ns(pid, 'pid') in set(host_ns.values())]
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert not left, 'processes of the hosts outlived them: %s' % [(p, _cmd(p), _proc_start(p)) for p in left]
    after = tmp_entries(machine.own)
    changed = sorted(name for name, inode in machine.tmp.items() if after.get(name) != inode)
    assert not changed, 'entries of the machine\'s /tmp removed or replaced: %s' % changed
    for canary in (machine.canary_file, machine.canary_dir):
        assert os.path.basename(canary) in machine.tmp and os.path.exists(canary), canary
    gone = sorted(machine.daemons - machine_daemons())
    assert not gone, 'services of the machine ended or were replaced: %s' % gone
    assert sorted(os.listdir('/etc/systemd/system')) == machine.units
    with open('/etc/hostname', encoding='utf-8') as handle:
        assert handle.read() == machine.hostname
    assert os.uname().nodename == machine.uname
