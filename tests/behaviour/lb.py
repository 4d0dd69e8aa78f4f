# Real load balancers for the traffic layer's tests and bench: Debian's HAProxy and nginx started per test session
# with their own configuration, pid file, admin socket and ephemeral ports (never the system services), and a
# bounded HTTP client that counts every answer through the load balancer.
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


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


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def wait_port(port, timeout=10.0, host='127.0.0.1'):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError('nothing listens on %s:%d after %s s' % (host, port, timeout))


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    try:
        with open('/proc/%d/stat' % pid) as handle:
            return handle.read().split(')')[-1].split()[0] != 'Z'
    except OSError:
        return False


class HAProxy(object):
    """HAProxy 2.6 with an admin socket, a server-state-file loaded at start, and one backend of named servers."""

    def __init__(self, base, servers, backend='app'):
        self.dir = str(base)
        os.makedirs(self.dir, exist_ok=True)
        self.backend = backend
        self.servers = list(servers)          # [(name, port, weight)]
        self.port = free_port()
        self.socket = os.path.join(self.dir, 'admin.sock')
        self.state_file = os.path.join(self.dir, 'server-state')
        self.pid_file = os.path.join(self.dir, 'haproxy.pid')
        self.config = os.path.join(self.dir, 'haproxy.cfg')
        self.write_config()

    def write_config(self, broken=False):
        lines = [
            'global',
            '    stats socket %s mode 600 level admin' % self.socket,
            '    server-state-file %s' % self.state_file,
            '    pidfile %s' % self.pid_file,
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
            '    bind 127.0.0.1:%d' % self.port,
            '    default_backend %s' % self.backend,
            'backend %s' % self.backend,
            '    balance roundrobin',
        ]
        for name, port, weight in self.servers:
            lines.append('    server %s 127.0.0.1:%d weight %d check inter 500ms fall 2 rise 1'
                         % (name, port, weight))
        if broken:
            lines.append('    this-is-not-a-keyword on')
        with open(self.config, 'w') as handle:
            handle.write('\n'.join(lines) + '\n')

    def start(self):
        subprocess.run(['haproxy', '-D', '-f', self.config, '-p', self.pid_file], check=True, capture_output=True)
        wait_port(self.port)
        return self

    def pid(self):
        with open(self.pid_file) as handle:
            return int(handle.read().split()[0])

    def reload(self):
        """The way an operator reloads a daemon-mode HAProxy: a new process takes over (-sf) from the old one."""
        old = self.pid()
        subprocess.run(['haproxy', '-D', '-f', self.config, '-p', self.pid_file, '-sf', str(old)], check=True,
                       capture_output=True)
        deadline = time.time() + 10
        while _pid_alive(old) and time.time() < deadline:
            time.sleep(0.05)
        assert self.pid() != old
        wait_port(self.port)

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
            os.kill(self.pid(), signal.SIGTERM)
        except (OSError, ValueError):
            pass


class Nginx(object):
    """nginx 1.22 as root with its own prefix (-p) and configuration (-c), proxying to an upstream kept in an
    include file that the traffic layer writes."""

    def __init__(self, base, upstream_file_content, upstream='app'):
        self.dir = str(base)
        for sub in ('logs', 'conf', 'tmp'):
            os.makedirs(os.path.join(self.dir, sub), exist_ok=True)
        self.upstream = upstream
        self.port = free_port()
        self.pid_file = os.path.join(self.dir, 'logs', 'nginx.pid')
        self.conf = os.path.join(self.dir, 'conf', 'nginx.conf')
        self.include = os.path.join(self.dir, 'conf', 'upstream-%s.conf' % upstream)
        with open(self.include, 'w') as handle:
            handle.write(upstream_file_content)
        tmp = os.path.join(self.dir, 'tmp')
        with open(self.conf, 'w') as handle:
            handle.write('\n'.join([
                'worker_processes 1;',
                'worker_shutdown_timeout 10s;',
                'pid %s;' % self.pid_file,
                'error_log %s/logs/error.log warn;' % self.dir,
                'events { worker_connections 1024; }',
                'http {',
                '    access_log off;',
                '    client_body_temp_path %s/body;' % tmp,
                '    proxy_temp_path %s/proxy;' % tmp,
                '    fastcgi_temp_path %s/fastcgi;' % tmp,
                '    uwsgi_temp_path %s/uwsgi;' % tmp,
                '    scgi_temp_path %s/scgi;' % tmp,
                '    include %s;' % self.include,
                '    server {',
                '        listen 127.0.0.1:%d;' % self.port,
                '        location / {',
                '            proxy_pass http://%s;' % upstream,
                '            proxy_next_upstream error timeout http_502 http_503;',
                '            proxy_connect_timeout 2s;',
                '        }',
                '    }',
                '}',
            ]) + '\n')

    def argv(self, *args):
        return ['nginx', '-p', self.dir, '-c', self.conf] + list(args)

    def start(self):
        proc = subprocess.run(self.argv(), capture_output=True, text=True, check=False)
        assert proc.returncode == 0, proc.stderr
        wait_port(self.port)
        return self

    def master(self):
        with open(self.pid_file) as handle:
            return int(handle.read().split()[0])

    def stop(self):
        try:
            os.kill(self.master(), signal.SIGQUIT)
        except (OSError, ValueError):
            pass


def get(port, path='/version', timeout=5.0):
    """(status, body) of one request through the load balancer, on a connection of its own (no keep-alive)."""
    request = urllib.request.Request('http://127.0.0.1:%d%s' % (port, path), headers={'Connection': 'close'})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            return resp.status, resp.read().decode().strip()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors='replace').strip()


class Load(object):
    """A bounded client: ``workers`` threads that each send GET /version through the load balancer, one request per
    connection (keep-alive off), until stopped or ``max_requests`` is reached. Every answer is counted: non-2xx
    statuses and connection errors are failures, 2xx answers are counted per body (the version that served it)."""

    def __init__(self, port, workers=4, max_requests=200000, path='/version'):
        self.port = port
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
            status, body = get(self.port, self.path)
        except (OSError, urllib.error.URLError) as e:
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
