"""A real Unleash server for the flags layer's tests: unleash-server 7.5.x from npm (installed by
scripts/unleash-prereqs.sh) on a private PostgreSQL 15 cluster in a temporary directory, both on free ports, with an
admin API token and a client API token. Stopped and removed by ``stop()``."""
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request

from tests.helpers import free_port

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PG = '/usr/lib/postgresql/15/bin'
ADMIN_TOKEN = '*:*.failsafe-admin-9d3c'
CLIENT_TOKEN = 'default:development.failsafe-client-51ab'

SERVER_JS = """
const unleash = require('unleash-server');
unleash.start({
  db: {user: 'postgres', password: '', host: '127.0.0.1', port: %(pg_port)d, database: 'unleash', ssl: false},
  server: {port: %(port)d, host: '127.0.0.1'},
  authentication: {type: 'open-source', createAdminUser: false, initApiTokens: [
    {environment: '*', project: '*', secret: %(admin)s, type: 'admin', tokenName: 'failsafe-admin'},
    {environment: 'development', project: 'default', secret: %(client)s, type: 'client', tokenName: 'failsafe-client'}]},
}).then(() => console.log('UNLEASH UP'));
"""


def _as_postgres(argv):
    return subprocess.run(['runuser', '-u', 'postgres', '--'] + argv, check=True, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=120)


class UnleashServer:
    def __init__(self):
        # installed once per machine, in the cache outside the checkout; the script's last line names where
        prereqs = subprocess.run(['bash', os.path.join(ROOT, 'scripts', 'unleash-prereqs.sh')], check=True,
                                 stdout=subprocess.PIPE, text=True, timeout=900)
        self.install = prereqs.stdout.strip().splitlines()[-1].split('unleash-dir: ', 1)[1]
        # outside pytest's private temporary tree: the postgres user must reach the cluster's directory
        self.dir = tempfile.mkdtemp(prefix='failsafe-unleash-')
        os.chmod(self.dir, 0o755)
        self.data = os.path.join(self.dir, 'pg')
        shutil.chown(self.dir, 'postgres')
        self.pg_port = free_port()
        self.port = free_port()
        self.url = 'http://127.0.0.1:%d' % self.port
        self.proc = None
        self.log = os.path.join(self.dir, 'unleash.log')
        _as_postgres([PG + '/initdb', '-D', self.data, '-A', 'trust', '-U', 'postgres'])
        _as_postgres([PG + '/pg_ctl', '-D', self.data, '-w', '-l', os.path.join(self.dir, 'pg.log'), '-o',
                      '-p %d -k %s -c listen_addresses=127.0.0.1' % (self.pg_port, self.dir), 'start'])
        _as_postgres([PG + '/createdb', '-h', '127.0.0.1', '-p', str(self.pg_port), 'unleash'])
        script = os.path.join(self.dir, 'server.js')
        with open(script, 'w') as handle:
            handle.write(SERVER_JS % {'pg_port': self.pg_port, 'port': self.port, 'admin': json.dumps(ADMIN_TOKEN),
                                      'client': json.dumps(CLIENT_TOKEN)})
        env = dict(os.environ, NODE_PATH=os.path.join(self.install, 'node_modules'), LOG_LEVEL='warn')
        with open(self.log, 'w') as out:
            self.proc = subprocess.Popen(['node', script], stdout=out, stderr=subprocess.STDOUT, env=env,
                                         cwd=self.dir)
        deadline = time.time() + 180
        while 'UNLEASH UP' not in open(self.log).read():
            if self.proc.poll() is not None or time.time() > deadline:
                text = open(self.log).read()[-3000:]
                self.stop()
                raise RuntimeError('the Unleash server did not start: %s' % text)
            time.sleep(0.5)

    def call(self, method, path, body=None, token=ADMIN_TOKEN):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={'Authorization': token, 'Content-Type': 'application/json'})
        with urllib.request.urlopen(req, timeout=10) as resp:
            raw = resp.read()
        return json.loads(raw) if raw.strip() else None

    def enabled(self, feature, environment='development'):
        """The feature's state in the environment through the admin API."""
        data = self.call('GET', '/api/admin/projects/default/features/%s' % feature)
        return [e['enabled'] for e in data['environments'] if e['name'] == environment][0]

    def client_enabled(self, feature, expect=None, timeout=15):
        """What an Unleash client SDK sees: the client API's features of the client token's environment. Unleash
        serves the client API from a cache it refreshes by itself, so a feature created or switched a moment ago may
        not show yet: this polls until the feature shows (with ``expect``, until it shows that value) and returns
        what it saw last, or None when the feature never showed."""
        deadline = time.time() + timeout
        seen = None
        while True:
            data = self.call('GET', '/api/client/features', token=CLIENT_TOKEN)
            found = [f['enabled'] for f in data['features'] if f['name'] == feature]
            seen = found[0] if found else None
            if found and (expect is None or seen == expect):
                return seen
            if time.time() >= deadline:
                return seen
            time.sleep(0.5)

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if os.path.exists(os.path.join(self.data, 'postmaster.pid')):
            subprocess.run(['runuser', '-u', 'postgres', '--', PG + '/pg_ctl', '-D', self.data, '-m', 'fast', 'stop'],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False, timeout=60)
        shutil.rmtree(self.dir, ignore_errors=True)
