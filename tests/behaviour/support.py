# Support for behaviour tests: real ansible-playbook runs against this machine, a real HTTP receiver for
# webhook alerts, and helpers that read the hosts' real state (files, checksums, processes, HTTP answers).
import hashlib
import importlib.util
import io
import json
import os
import re
import signal
import stat
import subprocess
import tarfile
import threading
import time
import urllib.request

# the behaviour tests import these two from here
from tests.helpers import Receiver, free_port  # noqa: F401 pylint: disable=unused-import

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VENV_BIN = os.path.join(os.environ.get('FAILSAFE_VENV', os.path.join(ROOT, '.venv')), 'bin')
DEMO = os.path.join(ROOT, 'examples', 'demo')


# The warning the auto_rollback callback's event guard (CallbackModule._guard, v2_playbook_on_stats) prints when a
# handler raised: the run goes on, but the callback did less than it should. No behaviour test accepts one.
IGNORED_CALLBACK_ERROR = re.compile(
    r'failsafe\.deploy\.auto_rollback: error while (?:handling [\w ]+?|finishing the run) \(ignored\)[^\n]{0,400}')


def ignored_callback_errors(*outputs):
    """Every "error while ... (ignored)" warning of the auto_rollback callback in ``outputs``: strings (a run's
    output, a log) or anything JSON-serialisable (ansible-runner job events)."""
    found = []
    for output in outputs:
        text = output if isinstance(output, str) else json.dumps(output)
        found.extend(m.group(0) for m in IGNORED_CALLBACK_ERROR.finditer(text or ''))
    return found


def assert_no_ignored_callback_errors(*outputs, where='the run'):
    """Fails the test when the callback swallowed an exception in an event handler anywhere in ``outputs``."""
    found = ignored_callback_errors(*outputs)
    assert not found, 'the auto_rollback callback ignored errors in its event handlers (%s):\n%s' % (
        where, '\n'.join(found))


def assert_log_has_no_ignored_callback_errors(path):
    """The same check on a log file (the fault matrix's runs.log, a rollback log)."""
    with open(path, encoding='utf-8', errors='replace') as f:
        assert_no_ignored_callback_errors(f.read(), where=path)


def load_example_build():
    """examples/app/build.py as a module: builds release archives of the example app (``build(out, files, releases)``)."""
    spec = importlib.util.spec_from_file_location('failsafe_example_build', os.path.join(ROOT, 'examples', 'app',
                                                                                         'build.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fleet_env(fleet, base, dist):
    """The environment of an ansible-playbook run against a namespace fleet with the demo ansible.cfg: this checkout
    as failsafe.deploy, a private ANSIBLE_HOME under ``base``, release archives in ``dist``, and nothing of the
    caller's callback, webhook or run settings."""
    env = dict(os.environ)
    env.pop('FAILSAFE_CONTROLLER_PID', None)  # a callback unit test run in this process may have exported it
    env.update(fleet.env())
    env.update({
        'PATH': VENV_BIN + os.pathsep + os.environ.get('PATH', ''),
        'ANSIBLE_CONFIG': os.path.join(DEMO, 'ansible.cfg'),
        'ANSIBLE_COLLECTIONS_PATH': os.path.join(ROOT, '.build', 'collections'),
        'ANSIBLE_COLLECTIONS_SCAN_SYS_PATH': 'false',
        'ANSIBLE_HOME': os.path.join(base, 'ansible-home'),
        'ANSIBLE_NOCOLOR': '1',
        'ANSIBLE_FORCE_COLOR': '0',
        'ANSIBLE_PIPELINING': 'True',
        'FAILSAFE_DIST': dist,
        'FAILSAFE_VENV_BIN': VENV_BIN,
    })
    for key in ('ANSIBLE_STDOUT_CALLBACK', 'ANSIBLE_CALLBACKS_ENABLED', 'FAILSAFE_WEBHOOK_URL',
                'FAILSAFE_CONTROLLER_PID', 'FAILSAFE_RUN_ID', 'FAILSAFE_ROLLBACK_CHILD'):
        env.pop(key, None)
    return env


def tree_digest(paths):
    """Type, mode, owner and content hash or link target of every path below each of `paths` (absence too).

    A symlink to a directory (such as `current`) is recorded as a link and the tree it points into is recorded
    below the link's own path (`current/app.py`), so the digest covers what the link serves, not only its target.
    """
    out = {}

    def record(p, followed):
        try:
            st = os.lstat(p)
        except FileNotFoundError:
            out[p] = ('absent',)
            return
        meta = (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid)
        if stat.S_ISLNK(st.st_mode):
            out[p] = ('link', os.readlink(p)) + meta
            real = os.path.realpath(p)
            if os.path.isdir(real) and real not in followed:
                listing(p, followed | {real})
        elif stat.S_ISDIR(st.st_mode):
            out[p] = ('dir',) + meta
            listing(p, followed | {os.path.realpath(p)})
        else:
            with open(p, 'rb') as f:
                out[p] = ('file', hashlib.sha256(f.read()).hexdigest()) + meta

    def listing(directory, followed):
        for name in sorted(os.listdir(directory)):
            record(os.path.join(directory, name), followed)

    for p in paths:
        record(p, frozenset())
    return out


def run_stamped(cmd, env, cwd, timeout):
    """subprocess.run(cmd) with stdout and stderr together, each line stamped with the time.monotonic() it arrived:
    the CompletedProcess has ``stamped`` ([(time, line)]) and ``ended`` (when the exit was seen) besides ``stdout``."""
    child = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    killer = threading.Timer(timeout, child.kill)
    killer.start()
    try:
        stamped = [(time.monotonic(), line) for line in child.stdout]
        child.wait()
        ended = time.monotonic()
    finally:
        killer.cancel()
        child.stdout.close()
    proc = subprocess.CompletedProcess(cmd, child.returncode, ''.join(line for dummy, line in stamped))
    proc.stamped, proc.ended = stamped, ended
    return proc


class LocalDeploy:
    """The demo setup of examples/demo in a private directory, driven by real ansible-playbook runs."""

    def __init__(self, base, receiver):
        self.dir = str(base)
        self.port = free_port()
        self.receiver = receiver
        subprocess.run(['bash', os.path.join(DEMO, 'prepare.sh'), self.dir], check=True)
        self.app_root = os.path.join(self.dir, 'srv', 'app')
        self.state_dir = os.path.join(self.dir, 'state')
        self.incidents = os.path.join(self.dir, 'incidents')
        self.spool = os.path.join(self.incidents, 'alerts.jsonl')
        self.program_conf = os.path.join(self.dir, 'supervisor', 'conf.d', 'demo-app.conf')
        self.env = dict(os.environ)
        # a callback unit test run in this process may have exported its controller pid (this process's): a
        # deploy without the callback would then record it as the lock holder, alive for the whole session
        self.env.pop('FAILSAFE_CONTROLLER_PID', None)
        self.env.update({
            'PATH': VENV_BIN + os.pathsep + os.environ['PATH'],
            'ANSIBLE_CONFIG': os.path.join(DEMO, 'ansible.cfg'),
            'ANSIBLE_COLLECTIONS_PATH': os.path.join(ROOT, '.build', 'collections'),
            'ANSIBLE_COLLECTIONS_SCAN_SYS_PATH': 'false',
            'ANSIBLE_HOME': os.path.join(self.dir, 'ansible-home'),
            'ANSIBLE_NOCOLOR': '1',
            'ANSIBLE_FORCE_COLOR': '0',
            'FAILSAFE_DEMO_DIR': self.dir,
            'FAILSAFE_DEMO_PORT': str(self.port),
            'FAILSAFE_REPORT_DIR': self.incidents,
            'FAILSAFE_SPOOL_PATH': self.spool,
            'FAILSAFE_WEBHOOK_URL': receiver.url,
        })
        for key in ('ANSIBLE_STDOUT_CALLBACK', 'ANSIBLE_CALLBACKS_ENABLED'):
            self.env.pop(key, None)

    @property
    def captured_paths(self):
        return [os.path.join(self.app_root, 'current'), os.path.join(self.app_root, 'shared'), self.program_conf]

    def playbook(self, playbook, *args, inventory=None, stamped=False):
        """Run ``playbook`` on the demo inventory. ``stamped``: the result also has ``stamped``, each output line with
        the time.monotonic() it arrived, and ``ended``, when the process was seen to exit."""
        cmd = ['ansible-playbook', '-i', inventory or os.path.join(DEMO, 'inventory.yml'), playbook] + list(args)
        if stamped:
            proc = run_stamped(cmd, env=self.env, cwd=self.dir, timeout=600)
        else:
            proc = subprocess.run(cmd, env=self.env, cwd=self.dir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  text=True, timeout=600, check=False)
        with open(os.path.join(self.dir, 'runs.log'), 'a') as log:
            log.write('$ %s\n%s\nrc=%s\n' % (' '.join(cmd), proc.stdout, proc.returncode))
        assert_no_ignored_callback_errors(proc.stdout, where=' '.join(cmd))
        return proc

    def deploy(self, version, *args, stamped=False):
        return self.playbook('failsafe.deploy.deploy', '-e', 'release_version=%s' % version, *args, stamped=stamped)

    def digest(self):
        return tree_digest(self.captured_paths)

    def current(self):
        return os.readlink(os.path.join(self.app_root, 'current'))

    def ledger(self):
        with open(os.path.join(self.app_root, '.failsafe', 'ledger.json')) as f:
            return json.load(f)

    def journal(self):
        with open(os.path.join(self.state_dir, 'demo-app', 'journal.json')) as f:
            return json.load(f)

    def lock_path(self):
        return os.path.join(self.state_dir, 'demo-app', 'lock.json')

    def http(self, path, timeout=5):
        with urllib.request.urlopen('http://127.0.0.1:%d%s' % (self.port, path), timeout=timeout) as r:
            return r.status, r.read().decode().strip()

    def incident_reports(self):
        if not os.path.isdir(self.incidents):
            return []
        return sorted(os.path.join(self.incidents, n) for n in os.listdir(self.incidents)
                      if re.match(r'^inc-[^.]+\.json$', n))

    def report_outcomes(self):
        """The outcome of every incident report, in the order of incident_reports()."""
        outcomes = []
        for path in self.incident_reports():
            with open(path) as handle:
                outcomes.append(json.load(handle).get('outcome'))
        return outcomes

    def change_reports(self):
        """The incident reports of deploys that changed something: all but those of deploys refused before any
        change, which are written up as REFUSED BEFORE ANY CHANGE."""
        return [path for path, outcome in zip(self.incident_reports(), self.report_outcomes()) if outcome != 'refused']

    def spool_events(self):
        if not os.path.exists(self.spool):
            return []
        with open(self.spool) as f:
            return [json.loads(line) for line in f if line.strip()]

    def stop(self):
        # A commit-confirmed watchdog still armed (a rollback that failed before its code stage leaves the transaction
        # open) would revert this site at its deadline and start the app again after the test: stop it first.
        for pid in confirm_watchdogs_under(self.dir):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        subprocess.run([os.path.join(VENV_BIN, 'supervisorctl'), '-c',
                        os.path.join(self.dir, 'supervisor', 'supervisord.conf'), 'shutdown'],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)


def confirm_watchdogs_under(directory):
    """Pids of this machine's commit-confirmed watchdogs whose parameters file lies under ``directory``."""
    found = []
    prefix = os.path.join(os.path.realpath(str(directory)), '')
    for entry in os.listdir('/proc'):
        if not entry.isdigit():
            continue
        try:
            with open('/proc/%s/cmdline' % entry, 'rb') as handle:
                args = handle.read().decode(errors='replace').split('\0')
        except OSError:
            continue
        if any(a.startswith(prefix) and '%sconfirm%s' % (os.sep, os.sep) in a for a in args[1:]):
            found.append(int(entry))
    return found


def add_migrations(archive, files):
    """Rewrite a release archive of the example app with a migrations/ directory holding ``files`` {name: SQL}."""
    with tarfile.open(archive) as src:
        members = [(m, src.extractfile(m).read() if m.isfile() else None) for m in src.getmembers()
                   if not m.name.split('/')[-1] == 'migrations' and '/migrations/' not in '/' + m.name]
    names = [m.name for m, dummy in members]
    top = names[0].split('/')[0] if names and '/' in names[0] else ''
    prefix = (top + '/') if top and all(n == top or n.startswith(top + '/') for n in names) else ''
    with tarfile.open(archive, 'w:gz') as out:
        for member, data in members:
            out.addfile(member, io.BytesIO(data) if data is not None else None)
        info = tarfile.TarInfo(prefix + 'migrations')
        info.type = tarfile.DIRTYPE
        info.mode = 0o755
        out.addfile(info)
        for name, text in sorted(files.items()):
            data = text.encode()
            info = tarfile.TarInfo(prefix + 'migrations/' + name)
            info.size = len(data)
            info.mode = 0o644
            out.addfile(info, io.BytesIO(data))


def recap_changed(output):
    """The changed= counts of the PLAY RECAP, per host."""
    return {m.group(1): int(m.group(2)) for m in re.finditer(r'^(\S+)\s+:\s+ok=\d+\s+changed=(\d+)', output, re.M)}


def staging_site(hosts, base, dist, store):
    """A staging and a production group of two fleet hosts (the first host staging), the environment of a run with
    the auto_rollback callback (incident reports in <base>/incidents) and ``playbook(name, *args)``: runs the
    playbook over both groups with the fleet's app settings and the rehearsal store ``store``, each run logged to
    <base>/runs.log. Returns (env, playbook)."""
    staging, production = hosts.names
    groups = os.path.join(base, 'groups.ini')
    with open(groups, 'w', encoding='utf-8') as handle:
        handle.write('[staging]\n%s\n\n[production]\n%s\n' % (staging, production))
    env = fleet_env(hosts, base, dist)
    env['ANSIBLE_CALLBACKS_ENABLED'] = 'failsafe.deploy.auto_rollback'
    env['FAILSAFE_REPORT_DIR'] = os.path.join(base, 'incidents')
    app_vars = os.path.join(ROOT, 'tests', 'fleet', 'app-vars.yml')

    def playbook(name, *args):
        argv = ['ansible-playbook', '-i', hosts.inventory_path, '-i', groups, name, '-e', '@' + app_vars,
                '-e', 'failsafe_rehearsal_store=%s' % store] + list(args)
        proc = subprocess.run(argv, env=env, cwd=base, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, timeout=1200, check=False)
        with open(os.path.join(base, 'runs.log'), 'a', encoding='utf-8') as log:
            log.write('$ %s\n%s\nrc=%s\n' % (' '.join(argv), proc.stdout, proc.returncode))
        return proc

    return env, playbook


def code_then_infra_rolled_back(d, infra_journal):
    """The demo site ``d`` after a failed release that also changed infrastructure (the ``infra`` host's journal
    ``infra_journal``): the code is back on 1.0.0 and healthy, it was rolled back before the infrastructure's undo
    finished, and the last incident report says rolled back. Returns that report."""
    assert d.current() == 'releases/1.0.0' and d.journal()['status'] == 'rolled_back'
    assert d.http('/health')[0] == 200
    code_done = [h['time'] for h in d.journal()['status_history'] if h['status'] == 'rolled_back'][-1]
    infra_done = [h['time'] for h in infra_journal['status_history'] if h['status'] == 'rolled_back'][-1]
    assert code_done < infra_done, 'the infrastructure was undone before the code: %s < %s' % (infra_done, code_done)
    with open(d.incident_reports()[-1]) as handle:
        report = json.load(handle)
    assert report['outcome'] == 'rolled_back', report['outcome']
    return report
