# -*- coding: utf-8 -*-
# Copyright: Contributors to failsafe.deploy
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A fleet of real SSH hosts built from Linux namespaces, for behaviour tests and molecule.

Each host is a network namespace with a veth into a bridge in the root namespace and its own address in a private
/24. Inside it, ``unshare --mount --pid --uts --fork --mount-proc --propagation private`` gives the host its own
process table, hostname and mounts: per-host folders are bound at /srv, /run, /var/lib/failsafe-deploy, /tmp and /root,
then ``/usr/sbin/sshd -D -e`` runs as PID 1 of the host. Everything else (/etc, /usr, /opt) is shared with the
machine. Needs root.

    with Fleet(3) as fleet:
        subprocess.run(['ansible', '-i', fleet.inventory_path, 'all', '-m', 'ansible.builtin.ping'], env=...)
        fleet.crash('fsd-h2')

Traffic stays between the root namespace and these hosts: the bridge has no uplink, nothing is forwarded and the
hosts have no default route.

``Fleet(n, init='systemd')`` makes hosts whose PID 1 is the machine's own systemd (``/lib/systemd/systemd``), with
sshd as one of its units, so that units, ``systemctl`` and ``systemd-run`` timers really run. It is guarded so that it
changes nothing outside the host:

- namespaces: ``unshare --cgroup --pid --fork --mount --uts --ipc --mount-proc --propagation private`` inside the
  host's network namespace; the host's cgroups are made below the launching process's own cgroup (so they count
  towards its CPU accounting) in each hierarchy systemd uses (``name=systemd`` and the unified one on a hybrid
  machine, or cgroup v2 alone), and mounted afresh inside the host, so that its systemd sees them as its root;
- folders: besides the usual per-host folders (/srv, /run, /tmp, /root, the state directory), /etc/systemd/system
  and /var/lib/systemd are per-host folders (``units`` and ``systemd`` under the host's folder: a unit the deploy
  writes lands there, never in the machine's /etc), and /var/tmp and /var/log are tmpfs;
- units: ``SYSTEMD_UNIT_PATH`` is only the host's /etc/systemd/system, /run/systemd/transient and /run/systemd/system
  and the fleet's own units (/run/failsafe-fleet/<fleet>/units): the machine's unit files in /lib and /etc are never
  seen, so none of the machine's enabled services starts and no boot-time tmpfiles cleanup runs. The boot target is
  ``failsafe-fleet-<fleet>.target``, which wants ``failsafe-fleet-sshd.service``; the fleet provides empty stand-ins
  for the targets every unit's default dependencies name (sysinit, basic, multi-user, timers, ...). There is no
  journald: a unit's output goes where the unit says (``StandardOutput=append:...``) or nowhere.

A crash (SIGKILL of the host's systemd) or down() kills the whole pid namespace, then removes the host's cgroups.
Boot takes well under a second; ``systemctl`` and ``systemd-run`` on the host talk to its systemd over its private
socket (no D-Bus daemon).

Module runs: every module run compiles ansible-core's module_utils (basic.py and the ~50 files it imports) from its
AnsiballZ payload again, which costs a host about 0.06 CPU-s per run beyond the cost of running them. Each host's
own /root therefore holds a ``usercustomize.py`` (in the user site of HOST_PYTHON: root's python3, never a
virtualenv's or another version's) that loads those files through the collection's bytecode cache
(plugins/module_utils/_bytecode.py, copied beside it, with a cache directory of its own:
``/root/.cache/failsafe-fleet/bytecode``), keyed by a hash of each file's source: the same code runs, compiled once
per host. ``Fleet(bytecode_cache=False)`` or ``FAILSAFE_FLEET_BYTECODE=off`` makes hosts without it, as stock as a
host can be (the benchmarks measure those). The tests' local hosts (local connection, the virtualenv's python) get
the same stand-in from tests/conftest.py, as a sitecustomize.py on PYTHONPATH (write_module_utils_cache; the cache in
``.build/module-utils-cache``), and ``FAILSAFE_FLEET_BYTECODE=off`` turns that off too.
"""

import atexit
import ipaddress
import json
import os
import re
import shlex
import shutil
import sys
import signal
import socket
import subprocess
import tempfile
import time
import zlib

DEFAULT_NAME = os.environ.get('FAILSAFE_FLEET_NAME', 'fsd')
SUBNET_ENV = 'FAILSAFE_FLEET_SUBNET'
DEFAULT_SUBNET = '10.213.0.0/24'
REGISTRY_DIR = os.environ.get('FAILSAFE_FLEET_REGISTRY', '/run/failsafe-fleet-registry')
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PREREQS_SCRIPT = os.path.join(ROOT, 'scripts', 'fleet-prereqs.sh')
SYSTEMD_PREREQS_SCRIPT = os.path.join(ROOT, 'scripts', 'systemd-prereqs.sh')

# In-host mount point -> folder name under <base_dir>/hosts/<host>/. Everything else is shared with the machine.
HOST_MOUNTS = (
    ('/srv', 'srv'),
    ('/var/lib/failsafe-deploy', 'state'),
    ('/run', 'run'),
    ('/tmp', 'tmp'),
    ('/root', 'root'),  # its own home: the machine's root .bashrc (pyenv init) costs 0.4 s per ssh command
)
# Wiped by restart(), like the tmpfs of a rebooted machine.
VOLATILE = ('run', 'tmp')
# The per-host folders and tmpfs mounts of init='systemd' hosts, beside HOST_MOUNTS.
SYSTEMD_MOUNTS = (
    ('/etc/systemd/system', 'units'),  # the host's own unit files: what a deploy writes there stays in the host
    ('/var/lib/systemd', 'systemd'),
)
SYSTEMD_TMPFS = ('/var/tmp', '/var/log')
SYSTEMD = '/lib/systemd/systemd'
INITS = ('sshd', 'systemd')
SYSTEMD_TOOLS = (SYSTEMD, '/usr/bin/systemctl', '/usr/bin/systemd-run')
# Targets and special units that every unit's default dependencies name; empty stand-ins in the fleet's own unit
# folder, so that the machine's (which pull in its sysinit services) are never read.
SYSTEMD_STUB_TARGETS = ('sysinit', 'basic', 'shutdown', 'sockets', 'paths', 'slices', 'timers', 'multi-user',
                        'default', 'local-fs', 'local-fs-pre', 'remote-fs', 'network', 'network-online',
                        'network-pre', 'time-set', 'time-sync', 'nss-lookup', 'nss-user-lookup', 'umount',
                        'swap', 'emergency', 'rescue', 'final', 'graphical')
CGROUP_PREFIX = 'failsafe-fleet-'  # cgroup of a host: <the launcher's cgroup>/failsafe-fleet-<host name>
STAGING = '/mnt'  # where the host's folder is bound first, so base_dir may live under /tmp, /run or /srv
HOST_PYTHON = '/usr/bin/python3'
# The module_utils bytecode cache of each host (see the module docstring): the collection's finder, copied under
# this name into the user site of HOST_PYTHON in the host's /root, and the usercustomize.py that puts it in place.
BYTECODE_SOURCE = os.path.join(ROOT, 'plugins', 'module_utils', '_bytecode.py')
BYTECODE_MODULE = 'failsafe_fleet_bytecode'
BYTECODE_DIR = '/root/.cache/failsafe-fleet/bytecode'
USERCUSTOMIZE = '''"""Written by tests/fleet/fleet.py: ansible-core's module_utils, which every module run compiles from its AnsiballZ
payload again, load from this host's bytecode cache (%(module)s.py: the collection's module_utils/_bytecode.py),
as the same code compiled once. Nothing else is looked up here; a module other than ansible.module_utils.* is
never touched."""
import sys


class _FirstModuleUtils(object):
    """Stands in until the first ansible.module_utils.* import, then installs the caching finder in its place."""

    @staticmethod
    def find_spec(fullname, path=None, target=None):
        if not fullname.startswith('ansible.module_utils.'):
            return None
        try:
            sys.meta_path.remove(_FIRST)
        except ValueError:
            pass
        try:
            import %(module)s as cache
        except ImportError:
            return None
        finder = cache.CachedFinder('ansible.module_utils.', %(directory)r)
        cache.install(finder)
        return finder.find_spec(fullname, path, target)


_FIRST = _FirstModuleUtils()
sys.meta_path.insert(0, _FIRST)
'''
SSHD = '/usr/sbin/sshd'
REQUIRED_TOOLS = (SSHD, '/usr/bin/ssh', '/usr/bin/ssh-keygen', '/usr/sbin/ip', '/usr/bin/unshare',
                  '/usr/bin/nsenter', HOST_PYTHON)
# Reached from inside the hosts only: remote_tmp and async_dir under the host's own /srv.
REMOTE_TMP = '/srv/.ansible/tmp'
ASYNC_DIR = '/srv/.ansible/async'
SSH_OPTIONS = (
    ('StrictHostKeyChecking', 'no'),
    ('UserKnownHostsFile', '/dev/null'),
    ('ConnectTimeout', '3'),
    ('ServerAliveInterval', '1'),
    ('ServerAliveCountMax', '3'),
    ('IdentitiesOnly', 'yes'),
    ('BatchMode', 'yes'),
    ('LogLevel', 'ERROR'),
)
HOST_ENV = {
    'PATH': '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
    'HOME': '/root',
    'LANG': 'C.UTF-8',
    'TERM': 'dumb',
}
NAME_RE = re.compile(r'^[a-z][a-z0-9]{0,7}$')
FIRST_HOST_OCTET = 10  # host i (1-based) gets <subnet>.(10 + i); .1 is the bridge in the root namespace
MAX_UNIX_SOCKET = 100  # sun_path is 108 bytes; ssh adds a 17-character suffix while it binds


def _shared_under_host_mounts(extra=()):
    """Machine folders the hosts must still see although they live below a host-private mount point: the Python
    behind the controller's venv (pyenv keeps it in /root), the venv itself and the checkout's .venv link to it (a
    checkout in /tmp keeps them there) and the `extra` folders a fleet was asked to share (another Python for the hosts, say).
    Returns (path, host folder name, path relative to that mount)."""
    paths = [sys.base_prefix, sys.prefix, os.environ.get('FAILSAFE_VENV') or os.path.join(ROOT, '.venv')] + list(extra)
    if os.environ.get('VIRTUAL_ENV'):
        paths.append(os.environ['VIRTUAL_ENV'])
    # Each path as named and as resolved: a checkout's .venv may be a link (to the cached virtualenv of
    # scripts/venv.sh) whose target is shared while the link itself lives below a host-private mount (/tmp); bound
    # at the name, the host finds the virtualenv where the controller's settings say it is.
    wanted = set()
    for path in paths:
        wanted.update((os.path.abspath(path), os.path.realpath(path)))
    out = []
    for path in sorted(wanted):
        if not os.path.isdir(path):
            continue
        for mount, folder in HOST_MOUNTS:
            if path.startswith(mount + '/'):
                out.append((path, folder, path[len(mount) + 1:]))
                break
    return out


class FleetError(RuntimeError):
    """The fleet could not be built, reached or torn down."""


def default_subnet(name):
    """The /24 a fleet of this name uses unless told otherwise.

    The default fleet takes ``FAILSAFE_FLEET_SUBNET`` or 10.213.0.0/24; any other name gets a /24 of 10.213.0.0/16
    derived from the name, so differently named fleets can exist side by side.
    """
    if name == DEFAULT_NAME:
        return os.environ.get(SUBNET_ENV, DEFAULT_SUBNET)
    return '10.213.%d.0/24' % (zlib.crc32(name.encode()) % 254 + 1)


def resource_names(name):
    """Regexes that match the network resources of fleets whose name starts with ``name``."""
    prefix = re.escape(name) + r'[a-z0-9]*'
    return {
        'netns': re.compile(r'^%s-h\d+$' % prefix),
        'link': re.compile(r'^%s-(v\d+|br)$' % prefix),
    }


def missing_prereqs(init='sshd'):
    tools = REQUIRED_TOOLS + (SYSTEMD_TOOLS if init == 'systemd' else ())
    return [path for path in tools if not os.access(path, os.X_OK)]


def ensure_prereqs(init='sshd'):
    """Install sshd, iproute2 and friends with scripts/fleet-prereqs.sh when any is missing (quick when present), and
    systemd with scripts/systemd-prereqs.sh for init='systemd' hosts."""
    if missing_prereqs():
        subprocess.run(['bash', PREREQS_SCRIPT], check=True, stdin=subprocess.DEVNULL)
    if missing_prereqs(init):
        subprocess.run(['bash', SYSTEMD_PREREQS_SCRIPT], check=True, stdin=subprocess.DEVNULL)
    missing = missing_prereqs(init)
    if missing:
        raise FleetError('fleet prerequisites missing after install: %s' % ', '.join(missing))


def _run(argv, check=True, **kwargs):
    kwargs.setdefault('stdin', subprocess.DEVNULL)
    kwargs.setdefault('capture_output', True)
    kwargs.setdefault('text', True)
    result = subprocess.run(argv, check=False, **kwargs)
    if check and result.returncode != 0:
        raise FleetError('%s failed (rc=%d): %s' % (shlex.join(argv), result.returncode, (result.stderr or '').strip()))
    return result


_USER_SITES = {}


def write_module_utils_cache(site, hook, directory):
    """Puts ansible-core's module_utils bytecode cache (USERCUSTOMIZE, with the collection's finder beside it as
    BYTECODE_MODULE) in the folder ``site`` as the file ``hook`` (usercustomize.py in a user site, sitecustomize.py in
    a folder on PYTHONPATH), with the cache in ``directory``. A file already as it should be is left alone; the others
    are written with _write, so an interpreter starting meanwhile reads the old file or the new one, never a part."""
    os.makedirs(site, exist_ok=True)
    with open(BYTECODE_SOURCE, encoding='utf-8') as handle:
        finder = handle.read()
    for name, text in ((BYTECODE_MODULE + '.py', finder),
                       (hook, USERCUSTOMIZE % {'module': BYTECODE_MODULE, 'directory': directory})):
        path = os.path.join(site, name)
        try:
            with open(path, encoding='utf-8') as handle:
                if handle.read() == text:
                    continue
        except OSError:
            pass
        _write(path, text)


def _user_site(python):
    """The user site folder of ``python`` relative to its user's home, e.g. .local/lib/python3.11/site-packages."""
    if python not in _USER_SITES:
        out = subprocess.run([python, '-c', 'import sys; print("%d.%d" % sys.version_info[:2])'],
                             capture_output=True, text=True, check=True).stdout.strip()
        _USER_SITES[python] = os.path.join('.local', 'lib', 'python' + out, 'site-packages')
    return _USER_SITES[python]


def _ip(*args, check=True):
    return _run(['ip'] + list(args), check=check)


def _pid_alive(pid):
    if not pid:
        return False
    try:
        with open('/proc/%d/stat' % pid, encoding='ascii', errors='replace') as stat:
            state = stat.read().rsplit(')', 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ('Z', 'X')


def _kill(pid, sig=signal.SIGKILL):
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _wait_gone(pids, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(_pid_alive(p) for p in pids):
            return True
        time.sleep(0.01)
    return not any(_pid_alive(p) for p in pids)


def _children(pid):
    try:
        with open('/proc/%d/task/%d/children' % (pid, pid), encoding='ascii') as handle:
            return [int(p) for p in handle.read().split()]
    except OSError:
        return []


def _cmdline(pid):
    try:
        with open('/proc/%d/cmdline' % pid, 'rb') as handle:
            return handle.read().replace(b'\0', b' ').decode('utf-8', 'replace')
    except OSError:
        return ''


def _all_pids():
    return [int(p) for p in os.listdir('/proc') if p.isdigit()]


def _netns_list():
    out = _ip('netns', 'list', check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def _netns_pids(netns):
    out = _ip('netns', 'pids', netns, check=False).stdout
    return [int(p) for p in out.split() if p.isdigit()]


def _links():
    out = _ip('-o', 'link', 'show', check=False).stdout
    names = []
    for line in out.splitlines():
        parts = line.split(':', 2)
        if len(parts) > 1:
            names.append(parts[1].strip().split('@')[0])
    return names


def _ssh_options_argv():
    argv = []
    for key, value in SSH_OPTIONS:
        argv += ['-o', '%s=%s' % (key, value)]
    return argv


def _write(path, text, mode=0o644):
    """Writes ``path`` through a temporary file of its own, renamed into place: a reader, or another process
    writing the same file, sees the old text or the new one, never a part."""
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix='.' + os.path.basename(path))
    with os.fdopen(fd, 'w', encoding='utf-8') as handle:
        handle.write(text)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


class Host:
    """One namespace host: its name (also its hostname and inventory name), address and network resources."""

    def __init__(self, fleet_name, index, address):
        self.index = index
        self.name = '%s-h%d' % (fleet_name, index)
        self.address = str(address)
        self.netns = self.name
        self.veth = '%s-v%d' % (fleet_name, index)
        self.pid = None          # PID 1 of the host, as seen from the root namespace
        self.launcher_pid = None  # the `unshare` process in the root pid namespace that waits for it
        self.cgroups = []         # init='systemd': the host's cgroup folders, removed once it is gone

    def to_dict(self):
        return {'name': self.name, 'index': self.index, 'address': self.address, 'netns': self.netns,
                'veth': self.veth, 'pid': self.pid, 'launcher_pid': self.launcher_pid, 'cgroups': self.cgroups}

    def __repr__(self):
        return 'Host(%s, %s, pid=%s)' % (self.name, self.address, self.pid)


class Fleet:
    """N SSH hosts in network namespaces. See the module docstring and tests/fleet/README.md."""

    def __init__(self, n=3, name=None, subnet=None, base_dir=None, user='root', keep_dir=False,
                 cleanup_at_exit=True, shared_paths=(), init='sshd', bytecode_cache=None):
        name = name or DEFAULT_NAME
        if bytecode_cache is None:
            bytecode_cache = os.environ.get('FAILSAFE_FLEET_BYTECODE', 'on').lower() not in ('off', '0', 'false', 'no')
        self.bytecode_cache = bool(bytecode_cache)
        if init not in INITS:
            raise ValueError('init must be one of %s, not %r' % (', '.join(INITS), init))
        self.init = init
        if not NAME_RE.match(name):
            raise ValueError('fleet name %r must match %s (it prefixes interface names)' % (name, NAME_RE.pattern))
        self.name = name
        self.subnet = ipaddress.ip_network(subnet or default_subnet(name))
        if self.subnet.version != 4 or self.subnet.prefixlen != 24 or not self.subnet.is_private:
            raise ValueError('fleet subnet %s must be a private IPv4 /24' % self.subnet)
        if not 1 <= n <= 254 - FIRST_HOST_OCTET:
            raise ValueError('a fleet has 1 to %d hosts, not %d' % (254 - FIRST_HOST_OCTET, n))
        self.n = n
        self.user = user
        # seconds: ansible_ssh_timeout of the inventory, by default ssh's ConnectTimeout (set_ssh_timeout)
        self.ssh_timeout = int(dict(SSH_OPTIONS)['ConnectTimeout'])
        self.keep_dir = keep_dir
        self.cleanup_at_exit = cleanup_at_exit
        # Machine folders below a host-private mount (/root, /tmp, ...) bound into every host as they are.
        self.shared_paths = tuple(shared_paths)
        missing = [path for path in self.shared_paths if not os.path.isdir(path)]
        if missing:
            raise ValueError('shared paths must be existing folders: %s' % ', '.join(missing))
        self.bridge = '%s-br' % name
        self.gateway = str(self.subnet.network_address + 1)
        self.hosts = [Host(name, i, self.subnet.network_address + FIRST_HOST_OCTET + i) for i in range(1, n + 1)]
        self._created_base_dir = base_dir is None or not os.path.exists(base_dir)
        self.base_dir = os.path.abspath(base_dir) if base_dir else None
        self.cp_dir = None
        self._procs = {}
        self._owner_pid = os.getpid()
        self._atexit = False
        self.started = False

    # ----------------------------------------------------------------------------------------------------- paths
    @property
    def key_path(self):
        return os.path.join(self.base_dir, 'id_ed25519')

    @property
    def inventory_path(self):
        return os.path.join(self.base_dir, 'inventory.ini')

    @property
    def ansible_cfg_path(self):
        return os.path.join(self.base_dir, 'ansible.cfg')

    @property
    def ssh_config_path(self):
        return os.path.join(self.base_dir, 'ssh_config')

    @property
    def state_path(self):
        return os.path.join(self.base_dir, 'state.json')

    @property
    def host_mounts(self):
        """(in-host mount point, folder under the host's folder) of every per-host folder of this fleet's hosts."""
        return HOST_MOUNTS + (SYSTEMD_MOUNTS if self.init == 'systemd' else ())

    def host(self, host):
        """The Host for a name, an index (1-based) or a Host."""
        if isinstance(host, Host):
            return host
        for candidate in self.hosts:
            if host in (candidate.name, candidate.index, candidate.address):
                return candidate
        raise KeyError('no host %r in fleet %s' % (host, self.name))

    def __getitem__(self, host):
        return self.host(host)

    def __iter__(self):
        return iter(self.hosts)

    def __len__(self):
        return len(self.hosts)

    @property
    def names(self):
        return [h.name for h in self.hosts]

    def host_dir(self, host):
        return os.path.join(self.base_dir, 'hosts', self.host(host).name)

    def host_path(self, host, path):
        """The root-namespace path that backs ``path`` on the host (for /srv, /run, /tmp, the state dir).

        Paths outside those mounts are shared with the machine and come back unchanged.
        """
        if not os.path.isabs(path):
            raise ValueError('host_path needs an absolute path, not %r' % path)
        path = os.path.normpath(path)
        for mount, folder in self.host_mounts:
            if path == mount or path.startswith(mount + '/'):
                backing = os.path.join(self.host_dir(host), folder)
                return backing if path == mount else os.path.join(backing, os.path.relpath(path, mount))
        return path

    def _sshd_dir_in_host(self):
        return '/run/failsafe-fleet/%s' % self.name

    # ------------------------------------------------------------------------------------------------ lifecycle
    def __enter__(self):
        if not self.started:
            self.up()
        return self

    def __exit__(self, *exc):
        self.down()
        return False

    def up(self, timeout=15.0):
        """Build the bridge, the hosts and their sshd; return once every host answers SSH. Returns self."""
        if os.geteuid() != 0:
            raise FleetError('the namespace fleet needs root')
        missing = missing_prereqs(self.init)
        if missing:
            raise FleetError('missing %s: run scripts/fleet-prereqs.sh (and scripts/systemd-prereqs.sh for '
                             "init='systemd')" % ', '.join(missing))
        self._reclaim_stale()
        self._check_free()
        if self.base_dir is None:
            self.base_dir = tempfile.mkdtemp(prefix='fleet-%s-' % self.name)
        os.makedirs(self.base_dir, exist_ok=True)
        self.started = True
        self._register()
        if self.cleanup_at_exit and not self._atexit:
            atexit.register(self._down_at_exit)
            self._atexit = True
        try:
            self._make_files()
            self._make_network()
            for host in self.hosts:
                self._start(host)
            self._save_state()
            self.wait_ssh(timeout=timeout)
        except BaseException:
            self.down()
            raise
        return self

    def down(self):
        """Tear everything down: processes, netns, veths, bridge, ssh control masters, registry entry, folders.

        Safe to call any number of times, and on a fleet that was only partly built.
        """
        pids = []
        for host in self.hosts:
            pids += self._kill_host(host, wait=False)
        for proc in self._procs.values():
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        self._procs.clear()
        _wait_gone(pids)
        if self.init == 'systemd':
            for host in self.hosts:
                self._remove_cgroups(host)
        existing_links = set(_links())
        existing_ns = set(_netns_list())
        for host in self.hosts:
            if host.veth in existing_links:
                _ip('link', 'del', host.veth, check=False)
            if host.netns in existing_ns:
                _ip('netns', 'del', host.netns, check=False)
            host.pid = host.launcher_pid = None
        if self.bridge in existing_links:
            _ip('link', 'del', self.bridge, check=False)
        if self.cp_dir:
            _kill_control_masters(self.cp_dir)
            if self.base_dir and not self.cp_dir.startswith(self.base_dir + '/'):
                shutil.rmtree(self.cp_dir, ignore_errors=True)
        _unregister(self.name, self.base_dir)
        if self.base_dir and os.path.isdir(self.base_dir):
            if self.keep_dir:
                self._save_state()
            elif self._created_base_dir:
                shutil.rmtree(self.base_dir, ignore_errors=True)
            else:
                for entry in ('hosts', 'cp', 'id_ed25519', 'id_ed25519.pub', 'inventory.ini', 'ansible.cfg',
                              'ssh_config', 'env.sh', 'state.json'):
                    target = os.path.join(self.base_dir, entry)
                    if os.path.isdir(target):
                        shutil.rmtree(target, ignore_errors=True)
                    elif os.path.lexists(target):
                        os.unlink(target)
        self.started = False

    def _down_at_exit(self):
        if os.getpid() == self._owner_pid and self.started and self.cleanup_at_exit:
            self.down()

    # ---------------------------------------------------------------------------------------------- controls
    def crash(self, host):
        """Kill every process of the host at once (its sshd is PID 1 of the host's pid namespace)."""
        host = self.host(host)
        pids = self._kill_host(host, wait=True)
        if any(_pid_alive(p) for p in pids):
            raise FleetError('processes of %s survived SIGKILL: %s' % (host.name, pids))
        self._save_state()

    def cut(self, host):
        """Cut the host's network: its veth goes down, packets to and from it vanish (no RST, no ICMP)."""
        _ip('link', 'set', self.host(host).veth, 'down')

    def restore_network(self, host):
        _ip('link', 'set', self.host(host).veth, 'up')

    def restart(self, host, wait=True, wipe_volatile=True):
        """Boot the host again after a crash (or crash and boot it if it is running).

        /srv and /var/lib/failsafe-deploy keep their content; /run and /tmp start empty, as after a reboot,
        unless ``wipe_volatile`` is false.
        """
        host = self.host(host)
        if self.is_running(host):
            self.crash(host)
        if wipe_volatile:
            for folder in VOLATILE:
                path = os.path.join(self.host_dir(host), folder)
                shutil.rmtree(path, ignore_errors=True)
                os.makedirs(path)
            os.chmod(os.path.join(self.host_dir(host), 'tmp'), 0o1777)
        self._start(host)
        self._save_state()
        if wait:
            self.wait_ssh(host)

    def is_running(self, host):
        host = self.host(host)
        return bool(host.pid) and _pid_alive(host.pid) and _is_fleet_init(host.pid, self.name)

    def nsenter_argv(self, host):
        host = self.host(host)
        if not host.pid or not _pid_alive(host.pid):
            raise FleetError('host %s is not running' % host.name)
        return ['nsenter', '--target', str(host.pid), '--mount', '--uts', '--net', '--pid', '--']

    def run(self, host, argv, check=False, env=None, **kwargs):
        """Run argv inside the host's namespaces (mount, uts, net, pid); returns the CompletedProcess.

        Output is captured as text unless told otherwise; the environment is a clean root one, not the caller's.
        """
        if isinstance(argv, str):
            argv = ['/bin/sh', '-c', argv]
        kwargs.setdefault('capture_output', True)
        kwargs.setdefault('text', True)
        kwargs.setdefault('stdin', subprocess.DEVNULL)
        kwargs.setdefault('cwd', '/')
        full_env = dict(HOST_ENV)
        full_env.update(env or {})
        return subprocess.run(self.nsenter_argv(host) + list(argv), check=check, env=full_env, **kwargs)

    def ssh_argv(self, host):
        """argv prefix for a real ssh login to the host (append the remote command)."""
        host = self.host(host)
        return ['ssh', '-F', '/dev/null', '-i', self.key_path, '-p', '22'] + _ssh_options_argv() + \
            ['%s@%s' % (self.user, host.address)]

    def ssh(self, host, command, **kwargs):
        kwargs.setdefault('capture_output', True)
        kwargs.setdefault('text', True)
        kwargs.setdefault('stdin', subprocess.DEVNULL)
        kwargs.setdefault('timeout', 30)
        return subprocess.run(self.ssh_argv(host) + [command], check=False, **kwargs)

    def reachable(self, host, timeout=5):
        """True when a real ssh login to the host runs a command."""
        try:
            return self.ssh(host, 'true', timeout=timeout).returncode == 0
        except subprocess.TimeoutExpired:
            return False

    def wait_ssh(self, host=None, timeout=15.0):
        """Wait until the host (or every host) greets with an SSH banner; raise FleetError on timeout."""
        pending = [self.host(host)] if host is not None else list(self.hosts)
        deadline = time.monotonic() + timeout
        while pending:
            pending = [h for h in pending if not _ssh_banner(h.address, 22)]
            if not pending:
                return
            if time.monotonic() > deadline:
                raise FleetError('no SSH banner from %s within %.0f s (see %s)' % (
                    ', '.join(h.name for h in pending), timeout,
                    ', '.join(os.path.join(self.host_dir(h), 'sshd.log') for h in pending)))
            for h in pending:
                if h.launcher_pid and not _pid_alive(h.launcher_pid) and not self.is_running(h):
                    log = os.path.join(self.host_dir(h), 'sshd.log')
                    raise FleetError('host %s died while starting: %s' % (h.name, _tail(log)))
            time.sleep(0.02)

    # -------------------------------------------------------------------------------------------- ansible glue
    def env(self):
        """Environment variables that point ansible at this fleet's control sockets (merge into os.environ)."""
        return {
            'ANSIBLE_SSH_CONTROL_PATH_DIR': self.cp_dir,
            'ANSIBLE_HOST_KEY_CHECKING': 'False',
        }

    def molecule_instances(self):
        """The instance config molecule's `default` driver expects from create.yml (a real list of dicts)."""
        return [{'instance': h.name, 'address': h.address, 'user': self.user, 'port': 22,
                 'identity_file': self.key_path} for h in self.hosts]

    def set_ssh_timeout(self, seconds):
        """Rewrite the inventory with another ansible_ssh_timeout (a group var, which no environment setting
        overrides): Mitogen counts its whole bootstrap on a host against it."""
        self.ssh_timeout = seconds
        _write(self.inventory_path, self.inventory_text())

    def inventory_text(self):
        common = ' '.join('-o %s=%s' % kv for kv in SSH_OPTIONS)
        lines = ['# Namespace test fleet %r (tests/fleet); generated, removed by `python -m tests.fleet down`.'
                 % self.name, '[%s]' % self.name]
        lines += ['%s ansible_host=%s' % (h.name, h.address) for h in self.hosts]
        lines += [
            '', '[%s:vars]' % self.name,
            'ansible_user=%s' % self.user,
            'ansible_port=22',
            'ansible_ssh_private_key_file=%s' % self.key_path,
            'ansible_python_interpreter=%s' % HOST_PYTHON,
            "ansible_ssh_common_args='%s'" % common,
            # ansible puts its own -o ConnectTimeout (this) before the common args
            'ansible_ssh_timeout=%d' % self.ssh_timeout,
            'ansible_control_path_dir=%s' % self.cp_dir,
            'ansible_remote_tmp=%s' % REMOTE_TMP,
            'ansible_async_dir=%s' % ASYNC_DIR,
            '',
        ]
        return '\n'.join(lines)

    # -------------------------------------------------------------------------------------------- internals
    def _check_free(self):
        clash_ns = [h.netns for h in self.hosts if h.netns in set(_netns_list())]
        links = set(_links())
        clash_links = [n for n in [self.bridge] + [h.veth for h in self.hosts] if n in links]
        if clash_ns or clash_links:
            raise FleetError('fleet %r already exists here (%s); tear it down with `python -m tests.fleet down --all '
                             '--exact --prefix %s` or choose another name'
                             % (self.name, ', '.join(clash_ns + clash_links), self.name))
        out = _ip('-4', '-o', 'addr', 'show', check=False).stdout
        for line in out.splitlines():
            match = re.search(r'inet (\S+)', line)
            if match and ipaddress.ip_interface(match.group(1)).network.overlaps(self.subnet):
                raise FleetError('subnet %s overlaps %s on %s: pick another with %s or subnet=' % (
                    self.subnet, match.group(1), line.split()[1], SUBNET_ENV))

    def _reclaim_stale(self):
        """Tear down a same-named fleet whose owning process died without cleaning up (not CLI fleets)."""
        entry = _read_registry(self.name)
        if entry and not entry.get('persistent') and not _owner_alive(entry):
            down_all(prefix=self.name, exact=True)

    def _register(self):
        os.makedirs(REGISTRY_DIR, exist_ok=True)
        _write(os.path.join(REGISTRY_DIR, self.name + '.json'), json.dumps({
            'name': self.name, 'base_dir': self.base_dir, 'created_base_dir': self._created_base_dir,
            'owner_pid': self._owner_pid, 'owner_start': _start_time(self._owner_pid),
            'persistent': not self.cleanup_at_exit, 'subnet': str(self.subnet),
        }))

    def _make_files(self):
        base = self.base_dir
        cp_dir = os.path.join(base, 'cp')
        if len(cp_dir) + 41 > MAX_UNIX_SOCKET:
            cp_dir = tempfile.mkdtemp(prefix='fsdcp-')
        os.makedirs(cp_dir, mode=0o700, exist_ok=True)
        self.cp_dir = cp_dir
        if not os.path.exists(self.key_path):
            _run(['ssh-keygen', '-q', '-t', 'ed25519', '-N', '', '-C', 'fleet-%s' % self.name, '-f', self.key_path])
        with open(self.key_path + '.pub', encoding='ascii') as handle:
            pubkey = handle.read()
        os.makedirs(STAGING, exist_ok=True)
        os.makedirs('/var/lib/failsafe-deploy', exist_ok=True)
        for host in self.hosts:
            hdir = self.host_dir(host)
            for _mount, folder in self.host_mounts:
                os.makedirs(os.path.join(hdir, folder), exist_ok=True)
            os.chmod(os.path.join(hdir, 'tmp'), 0o1777)
            os.chmod(os.path.join(hdir, 'root'), 0o700)
            for skel in ('.bashrc', '.profile'):
                if os.path.isfile('/etc/skel/' + skel) and not os.path.exists(os.path.join(hdir, 'root', skel)):
                    shutil.copy2('/etc/skel/' + skel, os.path.join(hdir, 'root', skel))
            self._write_bytecode_cache(os.path.join(hdir, 'root'))
            sshd = os.path.join(hdir, 'sshd')
            os.makedirs(sshd, exist_ok=True)
            if not os.path.exists(os.path.join(sshd, 'ssh_host_ed25519_key')):
                _run(['ssh-keygen', '-q', '-t', 'ed25519', '-N', '', '-C', host.name,
                      '-f', os.path.join(sshd, 'ssh_host_ed25519_key')])
            _write(os.path.join(sshd, 'authorized_keys'), pubkey, 0o600)
            _write(os.path.join(sshd, 'sshd_config'), self._sshd_config(host), 0o600)
        _write(self.inventory_path, self.inventory_text())
        _write(self.ansible_cfg_path, '\n'.join([
            '# ansible.cfg for the namespace test fleet %r: use as ANSIBLE_CONFIG or copy the settings.' % self.name,
            '[defaults]',
            'inventory = %s' % self.inventory_path,
            'host_key_checking = False',
            'forks = %d' % max(5, min(self.n, 50)),
            '',
            '[ssh_connection]',
            '# Never a ControlPath in ssh_args: ansible passes it through literally and every host shares one socket.',
            'control_path_dir = %s' % self.cp_dir,
            'pipelining = True',
            '',
        ]))
        ssh_lines = []
        for host in self.hosts:
            ssh_lines += ['Host %s' % host.name, '  HostName %s' % host.address]
        ssh_lines += ['Host %s-h* %s' % (self.name, str(self.subnet.network_address).rsplit('.', 1)[0] + '.*'),
                      '  User %s' % self.user, '  Port 22', '  IdentityFile %s' % self.key_path]
        ssh_lines += ['  %s %s' % kv for kv in SSH_OPTIONS]
        _write(self.ssh_config_path, '\n'.join(ssh_lines) + '\n')
        _write(os.path.join(base, 'env.sh'), ''.join(
            'export %s=%s\n' % (k, shlex.quote(v)) for k, v in self.env().items()))

    def _write_bytecode_cache(self, home):
        """The module_utils bytecode cache of a host whose /root is ``home`` (see the module docstring), or none."""
        site = os.path.join(home, _user_site(HOST_PYTHON))
        if not self.bytecode_cache:
            for name in ('usercustomize.py', BYTECODE_MODULE + '.py'):
                if os.path.exists(os.path.join(site, name)):
                    os.unlink(os.path.join(site, name))
            return
        write_module_utils_cache(site, 'usercustomize.py', BYTECODE_DIR)

    def _sshd_config(self, host):
        d = self._sshd_dir_in_host()
        return '\n'.join([
            '# sshd of namespace host %s (fleet %s)' % (host.name, self.name),
            'ListenAddress %s' % host.address,
            'Port 22',
            'HostKey %s/ssh_host_ed25519_key' % d,
            'PidFile none',
            'UsePAM no',
            'StrictModes no',
            'PermitRootLogin yes',
            'PubkeyAuthentication yes',
            'AuthorizedKeysFile %s/authorized_keys' % d,
            'PasswordAuthentication no',
            'KbdInteractiveAuthentication no',
            'UseDNS no',
            'PrintMotd no',
            'PrintLastLog no',
            'AcceptEnv LANG LC_*',
            'MaxStartups 200',
            'MaxSessions 100',
            'Subsystem sftp internal-sftp',
            '',
        ])

    def _make_network(self):
        _ip('link', 'add', 'name', self.bridge, 'type', 'bridge', 'stp_state', '0', 'forward_delay', '0')
        _ip('addr', 'add', '%s/%d' % (self.gateway, self.subnet.prefixlen), 'dev', self.bridge)
        _ip('link', 'set', self.bridge, 'up')
        for host in self.hosts:
            _ip('netns', 'add', host.netns)
            _ip('link', 'add', host.veth, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', host.netns)
            _ip('link', 'set', host.veth, 'master', self.bridge, 'up')
            _ip('-n', host.netns, 'addr', 'add', '%s/%d' % (host.address, self.subnet.prefixlen), 'dev', 'eth0')
            _ip('-n', host.netns, 'link', 'set', 'lo', 'up')
            _ip('-n', host.netns, 'link', 'set', 'eth0', 'up')

    def _start(self, host):
        """Launch the host: mount namespace with its own folders, hostname, then sshd as PID 1."""
        hdir = self.host_dir(host)
        sshd_in_host = self._sshd_dir_in_host()
        run_sshd = os.path.join(hdir, 'run', sshd_in_host[len('/run/'):])
        os.makedirs(run_sshd, exist_ok=True)
        for entry in ('ssh_host_ed25519_key', 'ssh_host_ed25519_key.pub', 'authorized_keys', 'sshd_config'):
            shutil.copy2(os.path.join(hdir, 'sshd', entry), os.path.join(run_sshd, entry))
        os.makedirs(os.path.join(hdir, 'run', 'sshd'), mode=0o755, exist_ok=True)
        q = shlex.quote
        # --rbind: a file system mounted below the host's folder (the power-cut filesystem of tests/powercut over
        # srv/app and state) comes along into the host.
        script = ['set -e', 'mount --rbind %s %s' % (q(hdir), STAGING)]
        # Machine folders under /root that the hosts need (the Python behind the controller's venv, when it lives
        # in root's home, as pyenv's does) are bound into the host's own /root before that is mounted.
        for shared, folder, rel in _shared_under_host_mounts(self.shared_paths):
            os.makedirs(os.path.join(hdir, folder, rel), exist_ok=True)
            script.append('mount --bind %s %s/%s/%s' % (q(shared), STAGING, folder, q(rel)))
        script += ['mount --rbind %s/%s %s' % (STAGING, folder, mount) for mount, folder in self.host_mounts]
        if self.init == 'systemd':
            # systemd sets the hostname from /etc/hostname at boot: the host's own name, bound over it
            _write(os.path.join(hdir, 'hostname'), host.name + '\n')
            script.append('mount --bind %s/hostname /etc/hostname' % STAGING)
        script += ['umount -l %s' % STAGING, 'hostname %s' % q(host.name)]
        unshare = ['unshare', '--mount', '--pid', '--uts', '--fork', '--mount-proc', '--propagation', 'private']
        if self.init == 'systemd':
            unit_dir = self._write_systemd_units(host)
            script += ['mount -t tmpfs -o mode=%s tmpfs %s' % ('1777' if path.endswith('tmp') else '0755', path)
                       for path in SYSTEMD_TMPFS]
            script += _cgroup_mount_script()
            unit_path = ':'.join(('/etc/systemd/system', '/run/systemd/transient', '/run/systemd/system', unit_dir))
            script += ['export container=failsafe-fleet SYSTEMD_UNIT_PATH=%s' % q(unit_path),
                       'exec %s --unit=%s' % (SYSTEMD, self._target())]
            unshare[1:1] = ['--cgroup', '--ipc']
        else:
            script.append('exec %s -D -e -f %s/sshd_config' % (SSHD, sshd_in_host))
        argv = ['ip', 'netns', 'exec', host.netns] + unshare + ['--', '/bin/sh', '-c', '\n'.join(script)]
        if self.init == 'systemd':
            # The launcher joins the host's own cgroups first; `unshare --cgroup` then makes them the host's root.
            # (only shell builtins: the first child of the launcher must be the host's PID 1)
            cgroups = host.cgroups = self._cgroups(host)
            for path in cgroups:
                os.makedirs(path, exist_ok=True)
            argv = ['/bin/sh', '-c', 'for d in "$@"; do [ "$d" = -- ] && break; echo $$ > "$d/cgroup.procs" || exit 1;'
                    ' shift; done; shift; exec "$@"', 'cgroup-join'] + cgroups + ['--'] + argv
        with open(os.path.join(hdir, 'sshd.log'), 'ab') as log:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,  # pylint: disable=consider-using-with
                                    env=dict(HOST_ENV), cwd='/', start_new_session=True, close_fds=True)
        self._procs[host.name] = proc
        host.launcher_pid = proc.pid
        host.pid = None
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            children = _children(proc.pid)
            if children:
                host.pid = children[0]
                return
            if proc.poll() is not None:
                raise FleetError('host %s failed to start (rc=%s): %s' % (
                    host.name, proc.returncode, _tail(os.path.join(hdir, 'sshd.log'))))
            time.sleep(0.002)
        raise FleetError('host %s: no PID 1 appeared under unshare pid %d' % (host.name, proc.pid))

    def _target(self):
        return 'failsafe-fleet-%s.target' % self.name

    def _cgroups(self, host):
        return [os.path.join(parent, CGROUP_PREFIX + self.host(host).name) for parent in _own_cgroup_dirs()]

    def _write_systemd_units(self, host):
        """The fleet's own units for an init='systemd' host, in its /run (written anew at each boot): the boot target,
        sshd as a unit, and the empty stand-ins of SYSTEMD_STUB_TARGETS. Returns the folder as the host sees it."""
        in_host = '%s/units' % self._sshd_dir_in_host()
        folder = os.path.join(self.host_dir(host), 'run', in_host[len('/run/'):])
        os.makedirs(folder, exist_ok=True)
        for target in SYSTEMD_STUB_TARGETS:
            _write(os.path.join(folder, target + '.target'),
                   '[Unit]\nDescription=%s (a stand-in of the namespace fleet)\nDefaultDependencies=no\n' % target)
        _write(os.path.join(folder, self._target()), '\n'.join([
            '[Unit]', 'Description=Namespace fleet host %s' % host.name, 'DefaultDependencies=no',
            'Wants=failsafe-fleet-sshd.service multi-user.target', '']))
        _write(os.path.join(folder, 'failsafe-fleet-sshd.service'), '\n'.join([
            '[Unit]', 'Description=sshd of namespace fleet host %s' % host.name, 'DefaultDependencies=no', '',
            '[Service]', 'ExecStart=%s -D -e -f %s/sshd_config' % (SSHD, self._sshd_dir_in_host()),
            'StandardOutput=append:%s/sshd.log' % self._sshd_dir_in_host(),
            'StandardError=append:%s/sshd.log' % self._sshd_dir_in_host(),
            'KillMode=process', 'Restart=always', 'RestartSec=0.2', '']))
        return in_host

    def _remove_cgroups(self, host):
        host = self.host(host)
        for path in host.cgroups or self._cgroups(host):
            _rmdir_tree(path)

    def _kill_host(self, host, wait):
        """SIGKILL the host's PID 1 (the kernel then kills its whole pid namespace) and anything in its netns."""
        pids = []
        if host.pid and _pid_alive(host.pid):
            pids.append(host.pid)
            _kill(host.pid)
        if host.netns in _netns_list():
            for pid in _netns_pids(host.netns):
                if pid != os.getpid():
                    pids.append(pid)
                    _kill(pid)
        if wait:
            proc = self._procs.pop(host.name, None)
            if proc is not None:
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    pass
            _wait_gone(pids + ([host.launcher_pid] if host.launcher_pid else []))
            host.pid = host.launcher_pid = None
            if self.init == 'systemd':
                self._remove_cgroups(host)
        return pids

    def _save_state(self):
        if not self.base_dir or not os.path.isdir(self.base_dir):
            return
        _write(self.state_path, json.dumps({
            'name': self.name, 'n': self.n, 'subnet': str(self.subnet), 'user': self.user,
            'base_dir': self.base_dir, 'created_base_dir': self._created_base_dir, 'cp_dir': self.cp_dir,
            'bridge': self.bridge, 'gateway': self.gateway, 'inventory': self.inventory_path,
            'persistent': not self.cleanup_at_exit, 'hosts': [h.to_dict() for h in self.hosts], 'init': self.init,
        }, indent=2) + '\n')

    @classmethod
    def load(cls, base_dir):
        """The fleet described by ``<base_dir>/state.json`` (made by up()), e.g. one started by the CLI."""
        with open(os.path.join(base_dir, 'state.json'), encoding='utf-8') as handle:
            state = json.load(handle)
        fleet = cls(state['n'], name=state['name'], subnet=state['subnet'], base_dir=state['base_dir'],
                    user=state.get('user', 'root'), cleanup_at_exit=False, init=state.get('init', 'sshd'))
        fleet._created_base_dir = state.get('created_base_dir', False)
        fleet.cp_dir = state.get('cp_dir')
        fleet.started = True
        for host, saved in zip(fleet.hosts, state['hosts']):
            host.pid = saved.get('pid')
            host.launcher_pid = saved.get('launcher_pid')
            host.cgroups = saved.get('cgroups') or []
            if host.pid and not _is_fleet_init(host.pid, fleet.name):
                host.pid = None  # recycled pid: never signal a stranger
        return fleet

    def status(self):
        """One dict per host: name, address, pid, running, network (up/down), ssh (banner seen)."""
        links = _ip('-o', 'link', 'show', check=False).stdout
        rows = []
        for host in self.hosts:
            line = next((ln for ln in links.splitlines() if ' %s@' % host.veth in ln or ' %s:' % host.veth in ln), '')
            rows.append({'name': host.name, 'address': host.address, 'pid': host.pid,
                         'running': self.is_running(host),
                         'network': 'up' if ',UP' in line or '<UP' in line else ('down' if line else 'missing'),
                         'ssh': _ssh_banner(host.address, 22, timeout=0.5)})
        return rows


# --------------------------------------------------------------------------------------------------- helpers
SSHD_CMD_RE = re.compile(r'%s -D -e -f /run/failsafe-fleet/([a-z0-9]+)/sshd_config' % re.escape(SSHD))


SYSTEMD_CMD_RE = re.compile(r'^%s --unit=failsafe-fleet-([a-z0-9]+)\.target' % re.escape(SYSTEMD))


def _is_fleet_sshd(pid, name):
    """True when pid is the sshd of a host of fleet ``name`` (sshd rewrites its cmdline: search, don't match)."""
    match = SSHD_CMD_RE.search(_cmdline(pid))
    return bool(match) and match.group(1) == name


def _is_fleet_init(pid, name):
    """True when pid is PID 1 of a host of fleet ``name``: its sshd, or its systemd (init='systemd')."""
    match = SYSTEMD_CMD_RE.search(_cmdline(pid))
    return _is_fleet_sshd(pid, name) or (bool(match) and match.group(1) == name)


def _cgroup_mounts():
    """{mount point: (fstype, options)} of the machine's cgroup file systems, as this process sees them."""
    out = {}
    with open('/proc/self/mounts', encoding='utf-8') as handle:
        for line in handle:
            parts = line.split()
            if len(parts) > 3 and parts[2] in ('cgroup', 'cgroup2'):
                out[parts[1]] = (parts[2], parts[3].split(','))
    return out


def _cgroup_layout():
    """The hierarchies a systemd host needs, as (mount point, fstype, hierarchy key in /proc/<pid>/cgroup): the
    unified one alone (cgroup v2), or name=systemd and the unified one (hybrid), or name=systemd alone (legacy)."""
    mounts = _cgroup_mounts()
    if mounts.get('/sys/fs/cgroup', ('',))[0] == 'cgroup2':
        return [('/sys/fs/cgroup', 'cgroup2', '')]
    layout = []
    for point, (fstype, options) in sorted(mounts.items()):
        if fstype == 'cgroup' and 'name=systemd' in options:
            layout.append((point, 'cgroup', 'name=systemd'))
    if not layout:
        raise FleetError('init=systemd hosts need a name=systemd or a cgroup v2 hierarchy; found %s' % sorted(mounts))
    if mounts.get('/sys/fs/cgroup/unified', ('',))[0] == 'cgroup2':
        layout.append(('/sys/fs/cgroup/unified', 'cgroup2', ''))
    return layout


def _own_cgroup_dirs(pid='self'):
    """This process's cgroup folder in each hierarchy of _cgroup_layout (a host's cgroups are made below them)."""
    paths = {}
    with open('/proc/%s/cgroup' % pid, encoding='utf-8') as handle:
        for line in handle:
            _num, key, path = line.rstrip('\n').split(':', 2)
            paths[key] = path
    return [os.path.join(point, paths.get(key, '/').lstrip('/')).rstrip('/') for point, _fstype, key in _cgroup_layout()]


def _cgroup_mount_script():
    """Shell lines, run inside the host's cgroup and mount namespaces, that mount its cgroup hierarchies afresh:
    mounted there, each shows the host's own cgroup as its root, as systemd expects of a container."""
    lines = []
    layout = _cgroup_layout()
    if layout[0][0] == '/sys/fs/cgroup':
        return ['mount -t cgroup2 cgroup2 /sys/fs/cgroup']
    lines.append('mount -t tmpfs -o mode=0755 tmpfs /sys/fs/cgroup')
    for point, fstype, _key in layout:
        lines.append('mkdir -p %s' % point)
        if fstype == 'cgroup2':
            lines.append('mount -t cgroup2 cgroup2 %s' % point)
        else:
            lines.append('mount -t cgroup -o none,name=systemd cgroup %s' % point)
    return lines


def _rmdir_tree(path):
    """Remove a cgroup folder and the groups below it, deepest first (a cgroup folder is removed with rmdir only)."""
    if not os.path.isdir(path):
        return
    for dirpath, _dirs, _files in sorted(os.walk(path), key=lambda entry: -entry[0].count('/')):
        try:
            os.rmdir(dirpath)
        except OSError:
            pass


def _ssh_banner(address, port, timeout=0.3):
    try:
        with socket.create_connection((address, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            return sock.recv(64).startswith(b'SSH-')
    except OSError:
        return False


def _tail(path, lines=10):
    try:
        with open(path, encoding='utf-8', errors='replace') as handle:
            return ' | '.join(handle.read().splitlines()[-lines:])
    except OSError:
        return '(no log)'


def _start_time(pid):
    try:
        with open('/proc/%d/stat' % pid, encoding='ascii', errors='replace') as stat:
            return int(stat.read().rsplit(')', 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def _owner_alive(entry):
    pid = entry.get('owner_pid')
    return bool(pid) and _pid_alive(pid) and _start_time(pid) == entry.get('owner_start')


def _read_registry(name):
    try:
        with open(os.path.join(REGISTRY_DIR, name + '.json'), encoding='utf-8') as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None


def _unregister(name, base_dir):
    entry = _read_registry(name)
    if entry is not None and entry.get('base_dir') in (base_dir, None):
        try:
            os.unlink(os.path.join(REGISTRY_DIR, name + '.json'))
        except FileNotFoundError:
            pass


def _kill_control_masters(cp_dir):
    """Stop ssh ControlPersist masters whose sockets live in cp_dir (their cmdline names the socket)."""
    marker = cp_dir.rstrip('/') + '/'
    pids = [p for p in _all_pids() if p != os.getpid() and marker in _cmdline(p) and _cmdline(p).startswith('ssh')]
    for pid in pids:
        _kill(pid, signal.SIGTERM)
    _wait_gone(pids, timeout=2)


def down_all(prefix=None, exact=False):
    """Remove every fleet whose name starts with ``prefix`` (or is exactly it): leftovers of killed runs too.

    Works from the registry and from the names of netns and links, so it also cleans fleets whose folders are gone.
    Returns a list of what it removed.
    """
    prefix = prefix or DEFAULT_NAME
    removed = []
    if exact:
        ns_re = re.compile(r'^%s-h\d+$' % re.escape(prefix))
        link_re = re.compile(r'^%s-(v\d+|br)$' % re.escape(prefix))
    else:
        names = resource_names(prefix)
        ns_re, link_re = names['netns'], names['link']
    registry = []
    if os.path.isdir(REGISTRY_DIR):
        for entry in sorted(os.listdir(REGISTRY_DIR)):
            fleet_name = entry[:-len('.json')] if entry.endswith('.json') else None
            if fleet_name and (fleet_name == prefix or (not exact and fleet_name.startswith(prefix))):
                registry.append(_read_registry(fleet_name) or {'name': fleet_name})
    # processes: everything in a matching netns (PID 1 of each host takes its pid namespace with it)
    pids = []
    for netns in _netns_list():
        if ns_re.match(netns):
            for pid in _netns_pids(netns):
                if pid != os.getpid():
                    _kill(pid)
                    pids.append(pid)
    # sshd (or systemd) of hosts whose netns is already gone
    for pid in _all_pids():
        cmd = _cmdline(pid)
        match = SSHD_CMD_RE.search(cmd) or SYSTEMD_CMD_RE.search(cmd)
        if match and (match.group(1) == prefix or (not exact and match.group(1).startswith(prefix))):
            _kill(pid)
            pids.append(pid)
    _wait_gone(pids)
    if pids:
        removed.append('%d processes' % len(pids))
    # cgroups of init='systemd' hosts, below this process's own cgroups (where a fleet made from here put them)
    try:
        parents = _own_cgroup_dirs()
    except (OSError, FleetError):
        parents = []
    for parent in parents:
        for entry in sorted(os.listdir(parent)) if os.path.isdir(parent) else []:
            host_name = entry[len(CGROUP_PREFIX):]
            if entry.startswith(CGROUP_PREFIX) and ns_re.match(host_name):
                _rmdir_tree(os.path.join(parent, entry))
                removed.append('cgroup ' + os.path.join(parent, entry))
    for entry in registry:
        state_path = os.path.join(entry.get('base_dir') or '/nonexistent', 'state.json')
        cp_dir = None
        try:
            with open(state_path, encoding='utf-8') as handle:
                cp_dir = json.load(handle).get('cp_dir')
        except (OSError, ValueError):
            pass
        if cp_dir:
            _kill_control_masters(cp_dir)
            if not cp_dir.startswith((entry.get('base_dir') or '/nonexistent') + '/'):
                shutil.rmtree(cp_dir, ignore_errors=True)
    for link in _links():
        if link_re.match(link) and not link.endswith('-br'):
            _ip('link', 'del', link, check=False)
            removed.append('link ' + link)
    for netns in _netns_list():
        if ns_re.match(netns):
            _ip('netns', 'del', netns, check=False)
            removed.append('netns ' + netns)
    for link in _links():
        if link_re.match(link):
            _ip('link', 'del', link, check=False)
            removed.append('link ' + link)
    for entry in registry:
        base_dir = entry.get('base_dir')
        if base_dir and entry.get('created_base_dir') and os.path.isfile(os.path.join(base_dir, 'state.json')):
            shutil.rmtree(base_dir, ignore_errors=True)
            removed.append('dir ' + base_dir)
        try:
            os.unlink(os.path.join(REGISTRY_DIR, entry['name'] + '.json'))
        except FileNotFoundError:
            pass
    return removed
