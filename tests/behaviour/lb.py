# Real load balancers for the traffic layer's tests and bench: Debian's HAProxy and nginx started by each test
# with their own configuration, pid file, admin socket and ephemeral ports (never the system services), and a
# bounded HTTP client that counts every answer through the load balancer.
import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if ROOT not in sys.path:  # the bench and the blue-green demo import this module outside pytest
    sys.path.append(ROOT)
from tests.helpers import free_port  # noqa: E402,F401  pylint: disable=wrong-import-position


def ensure_prereqs():
    """scripts/lb-prereqs.sh installs haproxy and nginx from Debian when missing (root only)."""
    if shutil.which('haproxy') and shutil.which('nginx'):
        return None
    if os.geteuid() != 0:
        return 'haproxy and nginx are missing and installing them needs root (scripts/lb-prereqs.sh)'
    proc = subprocess.run(['bash', os.path.join(ROOT, 'scripts', 'lb-prereqs.sh')], capture_output=True, text=True,
                          check=False)
    if proc.returncode != 0:
        return 'scripts/lb-prereqs.sh failed: %s' % (proc.stderr or proc.stdout)[-2000:]
    return None


def require():
    """For a test's fixture: haproxy and nginx installed (scripts/lb-prereqs.sh), or the test skips; under CI
    (``CI=true``) or as root a test that cannot run fails instead, with the reason (tests/requires.py)."""
    from tests.requires import cannot_run
    why = ensure_prereqs()
    if why:
        cannot_run('load balancer test cannot run: %s' % why)


def wait_port(port, timeout=10.0, host='127.0.0.1'):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError('nothing listens on %s:%d after %s s' % (host, port, timeout))


class HAProxy(object):
    """HAProxy 2.6 with an admin socket, a server-state-file loaded at start, and one backend of named servers.

    ``base`` is where its files are on this machine; ``inner`` the same folder as HAProxy sees it (another path on a
    fleet host, whose /srv is a folder here), ``run`` runs a command where HAProxy runs."""

    def __init__(self, base, servers, backend='app', bind_host='127.0.0.1', server_host='127.0.0.1', inner=None,
                 run=None):
        self.dir = str(base)
        os.makedirs(self.dir, exist_ok=True)
        self.inner = inner or self.dir
        self.backend = backend
        self.servers = list(servers)          # [(name, port, weight)] or [(name, port, weight, host)]
        self.bind_host = bind_host
        self.server_host = server_host
        self.port = free_port()
        self._run = run or (lambda argv: subprocess.run(argv, capture_output=True, text=True, check=False))
        # paths on this machine, and as HAProxy sees them
        self.socket, self.state_file, self.pid_file, self.config = (
            os.path.join(self.dir, n) for n in ('admin.sock', 'server-state', 'haproxy.pid', 'haproxy.cfg'))
        self.inner_socket, self.inner_state_file, self.inner_pid_file, self.inner_config = (
            os.path.join(self.inner, n) for n in ('admin.sock', 'server-state', 'haproxy.pid', 'haproxy.cfg'))
        self.write_config()

    def write_config(self, broken=False):
        lines = [
            'global',
            '    stats socket %s mode 600 level admin' % self.inner_socket,
            '    server-state-file %s' % self.inner_state_file,
            '    pidfile %s' % self.inner_pid_file,
            '    maxconn 2000',
            'defaults',
            '    mode http',
            '    load-server-state-from-file global',
            '    timeout connect 2s',
            '    timeout client 10s',
            '    timeout server 10s',
            '    retries 3',
            '    option redispatch',
            'frontend web',
            '    bind %s:%d' % (self.bind_host, self.port),
            '    default_backend %s' % self.backend,
            'backend %s' % self.backend,
            '    balance roundrobin',
        ]
        for entry in self.servers:
            name, port, weight = entry[:3]
            lines.append('    server %s %s:%d weight %d check inter 500ms fall 2 rise 1'
                         % (name, entry[3] if len(entry) > 3 else self.server_host, port, weight))
        if broken:
            lines.append('    this-is-not-a-keyword on')
        with open(self.config, 'w') as handle:
            handle.write('\n'.join(lines) + '\n')

    def _haproxy(self, *extra):
        proc = self._run(['haproxy', '-D', '-f', self.inner_config, '-p', self.inner_pid_file] + list(extra))
        assert proc.returncode == 0, proc.stderr

    def start(self):
        self._haproxy()
        wait_port(self.port, host=self.bind_host)
        return self

    def pid(self):
        with open(self.pid_file) as handle:
            return int(handle.read().split()[0])

    def reload(self):
        """The way an operator reloads a daemon-mode HAProxy: a new process takes over (-sf) from the old one."""
        old = self.pid()
        self._haproxy('-sf', str(old))
        deadline = time.time() + 10
        while self._run(['kill', '-0', str(old)]).returncode == 0 and time.time() < deadline:
            time.sleep(0.05)
        assert self.pid() != old
        wait_port(self.port, host=self.bind_host)

    def command(self, line):
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(self.socket)
            s.sendall(line.encode() + b'\n')
            chunks = []
            while True:
                data = s.recv(65536)
                if not data:
                    break
                chunks.append(data)
        return b''.join(chunks).decode()

    def server_state(self):
        """{server: (admin_state, user weight)} read from the admin socket."""
        out = {}
        header = None
        for line in self.command('show servers state %s' % self.backend).splitlines():
            if line.startswith('#'):
                header = line.lstrip('# ').split()
            elif header and line.strip() and line.split()[0].isdigit():
                row = dict(zip(header, line.split()))
                out[row['srv_name']] = (int(row['srv_admin_state']), int(row['srv_uweight']))
        return out

    def stop(self):
        try:
            self._run(['kill', str(self.pid())])
        except (OSError, ValueError):
            pass


class Nginx(object):
    """nginx 1.22 as root with its own prefix (-p) and configuration (-c), proxying to an upstream kept in an
    include file that the traffic layer writes. ``base``, ``inner`` and ``run`` as for HAProxy: the same folder on
    this machine and where nginx runs, and how to run a command there."""

    def __init__(self, base, upstream_file_content, upstream='app', bind_host='127.0.0.1', inner=None, run=None):
        self.dir = str(base)
        for sub in ('logs', 'conf', 'tmp'):
            os.makedirs(os.path.join(self.dir, sub), exist_ok=True)
        self.inner = inner or self.dir
        self.upstream = upstream
        self.bind_host = bind_host
        self.port = free_port()
        self._run = run or (lambda argv: subprocess.run(argv, capture_output=True, text=True, check=False))
        self.pid_file, self.conf, self.include = (
            os.path.join(self.dir, n) for n in ('logs/nginx.pid', 'conf/nginx.conf', 'conf/upstream-%s.conf' % upstream))
        self.inner_pid_file, self.inner_conf, self.inner_include = (
            os.path.join(self.inner, n) for n in ('logs/nginx.pid', 'conf/nginx.conf', 'conf/upstream-%s.conf' % upstream))
        with open(self.include, 'w') as handle:
            handle.write(upstream_file_content)
        tmp = os.path.join(self.inner, 'tmp')
        with open(self.conf, 'w') as handle:
            handle.write('\n'.join([
                'worker_processes 1;',
                'worker_shutdown_timeout 10s;',
                'pid %s;' % self.inner_pid_file,
                'error_log %s/logs/error.log warn;' % self.inner,
                'events { worker_connections 1024; }',
                'http {',
                '    access_log off;',
                '    client_body_temp_path %s/body;' % tmp,
                '    proxy_temp_path %s/proxy;' % tmp,
                '    fastcgi_temp_path %s/fastcgi;' % tmp,
                '    uwsgi_temp_path %s/uwsgi;' % tmp,
                '    scgi_temp_path %s/scgi;' % tmp,
                '    include %s;' % self.inner_include,
                '    server {',
                '        listen %s:%d;' % (self.bind_host, self.port),
                '        location / {',
                '            proxy_pass http://%s;' % upstream,
                '            proxy_next_upstream error timeout http_502 http_503;',
                '            proxy_connect_timeout 2s;',
                '        }',
                '    }',
                '}',
            ]) + '\n')

    def argv(self, *args):
        return ['nginx', '-p', self.inner, '-c', self.inner_conf] + list(args)

    def start(self):
        proc = self._run(self.argv())
        assert proc.returncode == 0, proc.stderr
        wait_port(self.port, host=self.bind_host)
        return self

    def master(self):
        with open(self.pid_file) as handle:
            return int(handle.read().split()[0])

    def stop(self):
        try:
            self._run(['kill', '-QUIT', str(self.master())])
        except (OSError, ValueError):
            pass


def get(port, path='/version', timeout=5.0, host='127.0.0.1'):
    """(status, body) of one request through the load balancer, on a connection of its own (no keep-alive)."""
    request = urllib.request.Request('http://%s:%d%s' % (host, port, path), headers={'Connection': 'close'})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            return resp.status, resp.read().decode().strip()
    except urllib.error.HTTPError as e:
        try:
            return e.code, e.read().decode(errors='replace').strip()
        except (OSError, http.client.HTTPException) as partial:
            return e.code, 'body cut short: %s' % partial


class Load(object):
    """A bounded client: ``workers`` threads that each send GET /version through the load balancer, one request per
    connection (keep-alive off), ``interval`` seconds apart, until stopped or ``max_requests`` is reached. Every answer is counted: non-2xx
    statuses and connection errors are failures, 2xx answers are counted per body (the version that served it)."""

    def __init__(self, port, workers=2, max_requests=200000, path='/version', interval=0.01, host='127.0.0.1'):
        self.port = port
        self.host = host
        self.interval = interval
        self.path = path
        self.workers = workers
        self.max_requests = max_requests
        self.lock = threading.Lock()
        self.versions = {}
        self.failures = []
        self.timeline = []          # (time, version or None) of every answer, in order of arrival
        self.total = 0
        self._stop = threading.Event()
        self._threads = []

    def _one(self):
        try:
            status, body = get(self.port, self.path, host=self.host)
        except (OSError, urllib.error.URLError, http.client.HTTPException) as e:
            status, body = None, '%s: %s' % (type(e).__name__, e)
        now = time.time()
        with self.lock:
            self.total += 1
            if status is not None and 200 <= status < 300:
                self.versions[body] = self.versions.get(body, 0) + 1
                self.timeline.append((now, body))
            else:
                self.failures.append((now, status, body[:200]))
                self.timeline.append((now, None))
            return self.total < self.max_requests

    def _loop(self):
        while not self._stop.is_set():
            if not self._one():
                break
            if self.interval:
                time.sleep(self.interval)

    def start(self):
        for dummy in range(self.workers):
            t = threading.Thread(target=self._loop, daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def stop(self):
        self._stop.set()
        for t in self._threads:
            t.join(timeout=30)
        return self

    def served_since(self, since):
        with self.lock:
            return [v for t, v in self.timeline if t >= since]

    def wait_only(self, version, since, timeout=30.0, streak=20):
        """Seconds from ``since`` until the first of ``streak`` consecutive answers all from ``version``."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            with self.lock:
                answers = [(t, v) for t, v in self.timeline if t >= since]
            run = 0
            for i, (t, v) in enumerate(answers):
                run = run + 1 if v == version else 0
                if run == streak:
                    return answers[i - streak + 1][0] - since
            time.sleep(0.01)
        raise AssertionError('traffic did not all go to %s within %s s' % (version, timeout))


VENV_BIN = os.path.join(os.environ.get('FAILSAFE_VENV', os.path.join(ROOT, '.venv')), 'bin')
DEMO = os.path.join(ROOT, 'examples', 'demo')


class BlueGreenSite(object):
    """One app host with two slots (blue and green: each an inventory host with its own journal name, release root,
    port and supervisor program under one private supervisord) behind a load balancer (``haproxy`` or ``nginx``)
    started here, all on this machine (``ansible_connection: local``), with the demo's ansible.cfg (the
    auto_rollback callback enabled). Playbooks run as real ansible-playbook processes."""

    def __init__(self, base, driver, collections=None, ansible_cfg=None):
        self.dir = str(base)
        self.driver = driver
        os.makedirs(self.dir, exist_ok=True)
        subprocess.run(['bash', os.path.join(DEMO, 'prepare.sh'), self.dir], check=True, stdout=subprocess.DEVNULL)
        self.ports = {'blue': free_port(), 'green': free_port()}
        self.supervisor_conf = os.path.join(self.dir, 'supervisor', 'supervisord.conf')
        if driver == 'haproxy':
            # both slots start drained (nothing deployed yet): HAProxy answers 503 until a deploy
            self.lb = HAProxy(os.path.join(self.dir, 'haproxy'),
                              [('blue', self.ports['blue'], 100), ('green', self.ports['green'], 100)])
            self.lb.start()
            for slot in ('blue', 'green'):
                self.lb.command('set server app/%s state drain' % slot)
            lb_vars = {'failsafe_traffic_driver': 'haproxy', 'failsafe_traffic_haproxy_socket': self.lb.socket,
                       'failsafe_traffic_haproxy_backend': 'app', 'failsafe_traffic_haproxy_state_file': self.lb.state_file,
                       'failsafe_traffic_haproxy_config': self.lb.config}
        else:
            self.lb = Nginx(os.path.join(self.dir, 'nginx'), 'upstream app {\n    server 127.0.0.1:%d;\n    server '
                            '127.0.0.1:%d backup;\n}\n' % (self.ports['blue'], self.ports['green']))
            self.lb.start()
            lb_vars = {'failsafe_traffic_driver': 'nginx', 'failsafe_traffic_nginx_include': self.lb.include,
                       'failsafe_traffic_nginx_upstream': 'app', 'failsafe_traffic_nginx_conf': self.lb.conf,
                       'failsafe_traffic_nginx_prefix': self.lb.dir, 'failsafe_traffic_nginx_pid_file': self.lb.pid_file}
        self.port = self.lb.port
        self.host = '127.0.0.1'
        slots = {}
        for slot, port in self.ports.items():
            root = os.path.join(self.dir, 'srv', slot)
            slots['app-%s' % slot] = {
                'failsafe_bluegreen_slot': slot,
                'failsafe_name': 'app-%s' % slot,
                'failsafe_app_root': root,
                'failsafe_traffic_server': slot,
                'failsafe_traffic_address': '127.0.0.1:%d' % port,
                'failsafe_bluegreen_check_url': 'http://127.0.0.1:%d/health' % port,
                'failsafe_service_command': '%s %s/current/app.py --port %d' % (sys.executable, root, port),
                'failsafe_snapshot_extra_paths': [os.path.join(self.dir, 'supervisor', 'conf.d', 'app-%s.conf' % slot)],
                'failsafe_verify_checks': [{'name': 'health', 'url': 'http://127.0.0.1:%d/health' % port,
                                            'body_regex': '"status": *"ok"', 'retries': 6, 'sleep': 0.5,
                                            'timeout': 2}],
            }
        common = {
            'ansible_connection': 'local',
            'ansible_python_interpreter': sys.executable,
            'failsafe_state_dir': os.path.join(self.dir, 'state'),
            'failsafe_release_archive': os.path.join(self.dir, 'dist', 'app-{{ failsafe_release_id }}.tar.gz'),
            'failsafe_bluegreen_live_file': os.path.join(self.dir, 'state', 'live-slot'),
            'failsafe_supervisor_conf': self.supervisor_conf,
            'failsafe_supervisor_program_dir': os.path.join(self.dir, 'supervisor', 'conf.d'),
            'failsafe_supervisor_log_dir': os.path.join(self.dir, 'logs'),
        }
        self._write_inventory(common, slots, {'lb': dict(lb_vars, failsafe_name='traffic',
                                                         failsafe_traffic_name='traffic')})
        self._env(collections, ansible_cfg)

    def _write_inventory(self, common, slots, lb_hosts):
        common = dict(common, failsafe_supervisor_manage_main_conf=True, failsafe_supervisor_start=True,
                      failsafe_supervisor_startsecs=1,
                      failsafe_supervisorctl=os.path.join(VENV_BIN, 'supervisorctl'),
                      failsafe_supervisord=os.path.join(VENV_BIN, 'supervisord'))
        self.inventory = os.path.join(self.dir, 'inventory.json')
        with open(self.inventory, 'w') as handle:
            json.dump({'all': {'vars': common, 'children': {'slots': {'hosts': slots}, 'lb': {'hosts': lb_hosts}}}},
                      handle, indent=1)

    def _env(self, collections, ansible_cfg):
        self.env = dict(os.environ)
        self.env.update({
            'PATH': VENV_BIN + os.pathsep + os.environ['PATH'],
            'ANSIBLE_CONFIG': ansible_cfg or os.path.join(DEMO, 'ansible.cfg'),
            'ANSIBLE_COLLECTIONS_PATH': collections or os.path.join(ROOT, '.build', 'collections'),
            'ANSIBLE_COLLECTIONS_SCAN_SYS_PATH': 'false',
            'ANSIBLE_HOME': os.path.join(self.dir, 'ansible-home'),
            'ANSIBLE_NOCOLOR': '1',
            'ANSIBLE_FORCE_COLOR': '0',
            'FAILSAFE_REPORT_DIR': os.path.join(self.dir, 'incidents'),
            'FAILSAFE_SPOOL_PATH': os.path.join(self.dir, 'incidents', 'alerts.jsonl'),
        })
        for key in ('ANSIBLE_STDOUT_CALLBACK', 'ANSIBLE_CALLBACKS_ENABLED', 'FAILSAFE_WEBHOOK_URL', 'FAILSAFE_RUN_ID',
                    'FAILSAFE_CONTROLLER_PID', 'FAILSAFE_ROLLBACK_CHILD'):
            self.env.pop(key, None)

    def playbook(self, name, *args):
        cmd = ['ansible-playbook', '-i', self.inventory, 'failsafe.deploy.%s' % name] + list(args)
        proc = subprocess.run(cmd, env=self.env, cwd=self.dir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, timeout=600, check=False)
        with open(os.path.join(self.dir, 'runs.log'), 'a') as log:
            log.write('$ %s\n%s\nrc=%s\n' % (' '.join(cmd), proc.stdout, proc.returncode))
        return proc

    def blue_green(self, version, *args):
        return self.playbook('blue_green', '-e', 'release_version=%s' % version, *args)

    def switch_back(self, *args):
        return self.playbook('switch_back', *args)

    def live(self):
        with open(os.path.join(self.dir, 'state', 'live-slot')) as handle:
            return handle.read().strip()

    def slot_version(self, slot):
        return get(self.ports[slot], '/version', timeout=2)

    def journal(self, name):
        with open(os.path.join(self.dir, 'state', name, 'journal.json')) as handle:
            return json.load(handle)

    def supervisorctl(self, *args):
        return subprocess.run([os.path.join(VENV_BIN, 'supervisorctl'), '-c', self.supervisor_conf] + list(args),
                              capture_output=True, text=True, check=False)

    def program_pid(self, slot):
        """The process id supervisor reports for a slot's program (a restart changes it), None when stopped."""
        out = self.supervisorctl('pid', 'app-%s' % slot).stdout.strip()
        return int(out) if out.isdigit() and int(out) > 0 else None     # supervisor says 0 for a stopped program

    def stop(self):
        self.lb.stop()
        self.supervisorctl('shutdown')


class FleetBlueGreenSite(BlueGreenSite):
    """The same on a namespace fleet of two SSH hosts: the app host (two slots under its own supervisord, listening
    on its address) and the load balancer host, where HAProxy or nginx runs in the host's own namespaces with its
    files (configuration, pid file, socket, state file) under the host's /srv. The load balancer answers on the
    host's address."""

    def __init__(self, fleet, base, driver='haproxy', collections=None, ansible_cfg=None):
        from tests.fleet import fleet as fleet_module
        self.fleet = fleet
        self.dir = str(base)
        self.driver = driver
        os.makedirs(self.dir, exist_ok=True)
        subprocess.run(['bash', os.path.join(DEMO, 'prepare.sh'), self.dir], check=True, stdout=subprocess.DEVNULL)
        self.app_host, self.lb_host = fleet.hosts[0], fleet.hosts[1]
        self.ports = {'blue': free_port(), 'green': free_port()}
        self.supervisor_conf = fleet.host_path(self.app_host.name, '/srv/supervisor/supervisord.conf')

        def run(argv):
            return fleet.run(self.lb_host.name, argv)

        if driver == 'haproxy':
            self.lb = HAProxy(fleet.host_path(self.lb_host.name, '/srv/haproxy'),
                              [('blue', self.ports['blue'], 100), ('green', self.ports['green'], 100)],
                              bind_host=self.lb_host.address, server_host=self.app_host.address,
                              inner='/srv/haproxy', run=run)
            self.lb.start()
            for slot in ('blue', 'green'):
                self.lb.command('set server app/%s state drain' % slot)
            lb_vars = {'failsafe_traffic_driver': 'haproxy', 'failsafe_traffic_haproxy_socket': self.lb.inner_socket,
                       'failsafe_traffic_haproxy_backend': 'app',
                       'failsafe_traffic_haproxy_state_file': self.lb.inner_state_file,
                       'failsafe_traffic_haproxy_config': self.lb.inner_config}
        else:
            self.lb = Nginx(fleet.host_path(self.lb_host.name, '/srv/nginx'),
                            'upstream app {\n    server %s:%d;\n    server %s:%d backup;\n}\n'
                            % (self.app_host.address, self.ports['blue'], self.app_host.address, self.ports['green']),
                            bind_host=self.lb_host.address, inner='/srv/nginx', run=run)
            self.lb.start()
            lb_vars = {'failsafe_traffic_driver': 'nginx', 'failsafe_traffic_nginx_include': self.lb.inner_include,
                       'failsafe_traffic_nginx_upstream': 'app', 'failsafe_traffic_nginx_conf': self.lb.inner_conf,
                       'failsafe_traffic_nginx_prefix': self.lb.inner,
                       'failsafe_traffic_nginx_pid_file': self.lb.inner_pid_file}
        self.port = self.lb.port
        self.host = self.lb_host.address
        connection = {
            'ansible_host': self.app_host.address, 'ansible_user': fleet.user, 'ansible_port': 22,
            'ansible_ssh_private_key_file': fleet.key_path, 'ansible_python_interpreter': fleet_module.HOST_PYTHON,
            'ansible_ssh_common_args': ' '.join('-o %s=%s' % kv for kv in fleet_module.SSH_OPTIONS),
            'ansible_ssh_timeout': 3, 'ansible_control_path_dir': fleet.cp_dir,
            'ansible_remote_tmp': fleet_module.REMOTE_TMP,
        }
        slots = {}
        for slot, port in self.ports.items():
            root = '/srv/app/%s' % slot
            slots['app-%s' % slot] = dict(connection, **{
                'failsafe_bluegreen_slot': slot,
                'failsafe_name': 'app-%s' % slot,
                'failsafe_app_root': root,
                'failsafe_traffic_server': slot,
                'failsafe_traffic_address': '%s:%d' % (self.app_host.address, port),
                'failsafe_bluegreen_check_url': 'http://127.0.0.1:%d/health' % port,
                'failsafe_service_command': '%s %s/current/app.py --bind 0.0.0.0 --port %d'
                                            % (fleet_module.HOST_PYTHON, root, port),
                'failsafe_snapshot_extra_paths': ['/srv/supervisor/conf.d/app-%s.conf' % slot],
                'failsafe_verify_checks': [{'name': 'health', 'url': 'http://127.0.0.1:%d/health' % port,
                                            'body_regex': '"status": *"ok"', 'retries': 6, 'sleep': 0.5,
                                            'timeout': 2}],
            })
        common = {
            'failsafe_state_dir': '/var/lib/failsafe-deploy',
            'failsafe_release_archive': os.path.join(self.dir, 'dist', 'app-{{ failsafe_release_id }}.tar.gz'),
            'failsafe_bluegreen_live_file': '/var/lib/failsafe-deploy/live-slot',
            'failsafe_supervisor_conf': '/srv/supervisor/supervisord.conf',
            'failsafe_supervisor_program_dir': '/srv/supervisor/conf.d',
            'failsafe_supervisor_log_dir': '/srv/log',
        }
        lb_vars = dict(connection, ansible_host=self.lb_host.address, failsafe_name='traffic',
                       failsafe_traffic_name='traffic', **lb_vars)
        self._write_inventory(common, slots, {self.lb_host.name: lb_vars})
        self._env(collections, ansible_cfg)
        self.env.update(fleet.env())

    def live(self):
        with open(self.fleet.host_path(self.app_host.name, '/var/lib/failsafe-deploy/live-slot')) as handle:
            return handle.read().strip()

    def journal(self, name):
        host = self.lb_host.name if name == 'traffic' else self.app_host.name
        with open(self.fleet.host_path(host, '/var/lib/failsafe-deploy/%s/journal.json' % name)) as handle:
            return json.load(handle)

    def supervisorctl(self, *args):
        return self.fleet.run(self.app_host.name, [os.path.join(VENV_BIN, 'supervisorctl'), '-c',
                                                   '/srv/supervisor/supervisord.conf'] + list(args))

    def slot_version(self, slot):
        return get(self.ports[slot], '/version', timeout=2, host=self.app_host.address)

    def stop(self):
        self.lb.stop()
        self.supervisorctl('shutdown')
