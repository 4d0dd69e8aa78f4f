# -*- coding: utf-8 -*-
# Copyright: Contributors to failsafe.deploy
# SPDX-License-Identifier: GPL-3.0-or-later
"""Deploys, the automatic rollback and the commit-confirmed watchdog under Mitogen's ``mitogen_linear`` strategy.

Real ansible-playbook runs with ``ANSIBLE_STRATEGY=mitogen_linear`` and ``ANSIBLE_STRATEGY_PLUGINS`` at
ansible_mitogen's strategy plugins (the mitogen package of requirements-dev.txt): the demo site of examples/demo on
this machine (local connection, a real supervisord and the example app), and one host of a namespace SSH fleet
(Mitogen's real use). Under Mitogen a module has no AnsiballZ payload on the host and its ``__file__`` is
``master:<path>``: the watchdog's code is then a zip of the sources the module imported, written to the state
directory, and the tests check that this is the payload the watchdog was armed with (so they fail when the runs
silently used the default strategy).

- a good deploy: the app serves the new release, the journal is committed and its watchdog confirmed;
- a failing deploy: the callback rolls it back by itself (its rollback child runs under Mitogen too: a witness
  strategy, Mitogen's own mitogen_linear found first on the plugin path, records each run), the app
  serves the previous release, the captured files are byte-exact, the outcome is rolled back and
  scripts/deploy_outcome.py exits 1;
- a commit-confirmed deploy whose controller is SIGKILLed after the switch: the watchdog armed under Mitogen reverts
  the host by itself at its short deadline.

The fleet is named by FAILSAFE_FLEET_NAME (default fsd) on FAILSAFE_FLEET_SUBNET, like every fleet test.
"""

import json
import os
import signal
import subprocess
import sys
import time
import zipfile

import pytest

from support import ROOT, LocalDeploy, confirm_watchdogs_under, load_example_build

if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from tests.requires import require_module, require_root  # noqa: E402  pylint: disable=wrong-import-position

pytestmark = pytest.mark.slow

HOOK = os.path.join(ROOT, 'tests', 'behaviour', 'fault_hooks', 'fault.yml')
MODULE_PATH = 'ansible_collections/failsafe/deploy/plugins/modules/transaction.py'
CONFIRM_PATH = 'ansible_collections/failsafe/deploy/plugins/module_utils/_confirm.py'
# From a host's deadline to its restore proven (test_commit_confirmed.py's bound, for one local host).
REVERT_BOUND = 12.0


WITNESS = os.path.join(ROOT, 'tests', 'behaviour', 'mitogen_witness')


def mitogen_env(witness_file):
    """The environment that runs ansible-playbook under mitogen_linear; fails (CI, root) or skips without mitogen.
    ansible_mitogen's strategy plugins come after tests/behaviour/mitogen_witness, whose mitogen_linear is Mitogen's
    own and also writes a line to ``witness_file`` for each playbook run under it."""
    ansible_mitogen = require_module('ansible_mitogen', 'mitogen is not installed: run make setup '
                                                        '(requirements-dev.txt)')
    strategies = os.path.join(os.path.dirname(os.path.abspath(ansible_mitogen.__file__)), 'plugins', 'strategy')
    assert os.path.isfile(os.path.join(strategies, 'mitogen_linear.py')), strategies
    return {'ANSIBLE_STRATEGY': 'mitogen_linear', 'ANSIBLE_STRATEGY_PLUGINS': WITNESS + os.pathsep + strategies,
            'FAILSAFE_TEST_STRATEGY_WITNESS': witness_file,
            # Mitogen counts its whole bootstrap against the connection timeout (10 s by default), which a loaded
            # 2-CPU machine running the other tests beside this one can overrun on a run's first connection
            'ANSIBLE_TIMEOUT': '30'}


def witnessed(path):
    """The ansible-playbook runs the witness saw under Mitogen's mitogen_linear, in order: [(playbooks, rollback
    child)] (it writes a line for each play of a run)."""
    if not os.path.exists(path):
        return []
    with open(path, encoding='utf-8') as handle:
        lines = [json.loads(line) for line in handle if line.strip()]
    runs, pids = [], []
    for line in lines:
        assert line['base'] == 'failsafe_witnessed_mitogen_linear', line
        if line['pid'] not in pids:
            pids.append(line['pid'])
            runs.append((line['playbooks'], line['rollback_child']))
    return runs


def wait_no_watchdog(directory, timeout=10.0):
    """The watchdogs under directory once those that finished their work have exited."""
    limit = time.monotonic() + timeout
    while confirm_watchdogs_under(directory) and time.monotonic() < limit:
        time.sleep(0.1)
    return confirm_watchdogs_under(directory)


def payload_of(state_dir, name):
    """The names in the zip the armed watchdog of the journal's transaction imports (its parameters file, or the
    newest payload left in the confirm directory once the parameters file is gone)."""
    confirm = os.path.join(state_dir, name, 'confirm')
    zips = sorted((os.path.getmtime(os.path.join(confirm, n)), os.path.join(confirm, n))
                  for n in os.listdir(confirm) if n.startswith('payload-') and n.endswith('.zip'))
    assert zips, 'no watchdog payload in %s: %s' % (confirm, os.listdir(confirm))
    with zipfile.ZipFile(zips[-1][1]) as archive:
        return set(archive.namelist())


def assert_built_from_sources(names, where):
    """A payload built from the module's sources under Mitogen, not a copy of an AnsiballZ zip (which holds the
    module itself): the runs really went through Mitogen."""
    assert CONFIRM_PATH in names, (where, sorted(names))
    assert MODULE_PATH not in names, ('%s: the watchdog payload is an AnsiballZ zip: the run did not use Mitogen'
                                      % where)


def outcome_exit(report_dir, rc):
    proc = subprocess.run([sys.executable, os.path.join(ROOT, 'scripts', 'deploy_outcome.py'), '--report-dir',
                           report_dir, '--rc', str(rc)], capture_output=True, text=True, check=False)
    return proc.returncode, proc.stdout


# --- this machine, local connection ---------------------------------------------------------------------------------

@pytest.fixture(scope='module')
def site(tmp_path_factory, module_receiver):
    base = tmp_path_factory.mktemp('mitogen-site')
    d = LocalDeploy(base, module_receiver)
    d.witness = str(base / 'strategy-witness.jsonl')
    d.env.update(mitogen_env(d.witness))
    try:
        yield d
    finally:
        d.stop()


def test_a_good_deploy_under_mitogen_serves_the_new_release_and_commits(site):
    d = site
    for version in ('1.0.0', '2.0.0'):
        proc = d.deploy(version)
        assert proc.returncode == 0, proc.stdout[-6000:]
        assert d.http('/version') == (200, version)
        journal = d.journal()
        assert (journal['release'], journal['status']) == (version, 'committed'), journal.get('status')
        assert journal['confirm']['state'] == 'confirmed', journal['confirm']
    assert d.current() == 'releases/2.0.0' and d.ledger()['last_verified'] == '2.0.0'
    assert_built_from_sources(payload_of(d.state_dir, 'demo-app'), 'localhost')
    assert wait_no_watchdog(d.dir) == [], 'a watchdog is left after a good deploy'
    assert d.report_outcomes() == []
    assert witnessed(d.witness) == [(['failsafe.deploy.deploy'], False)] * 2


def test_a_failing_deploy_under_mitogen_is_rolled_back_by_the_callback(site):
    d = site
    assert d.current() == 'releases/2.0.0', 'the good deploys did not run'
    before = d.digest()
    failed = d.deploy('3.0.0')
    assert failed.returncode != 0, failed.stdout[-6000:]
    assert d.http('/version') == (200, '2.0.0')
    assert d.digest() == before, 'the captured paths differ from before the failed deploy'
    journal = d.journal()
    assert (journal['release'], journal['status']) == ('3.0.0', 'rolled_back'), journal.get('status')
    assert journal['confirm']['state'] == 'disarmed', journal['confirm']
    assert d.ledger()['releases']['3.0.0']['state'] == 'failed'
    assert d.report_outcomes() == ['rolled_back'], failed.stdout[-6000:]
    with open(d.incident_reports()[-1], encoding='utf-8') as handle:
        incident = json.load(handle)
    assert incident['rollback']['hosts']['localhost']['status'] == 'ok', incident['rollback']
    # the rollback child ran under the deploy's strategy, Mitogen's
    assert witnessed(d.witness)[-2:] == [(['failsafe.deploy.deploy'], False), (['failsafe.deploy.rollback'], True)]
    code, out = outcome_exit(d.incidents, failed.returncode)
    assert code == 1, out
    assert wait_no_watchdog(d.dir) == []


def test_an_unconfirmed_deploy_under_mitogen_is_reverted_by_the_hosts_own_watchdog(site):
    d = site
    assert d.current() == 'releases/2.0.0', 'the earlier deploys did not leave 2.0.0'
    load_example_build().build(os.path.join(d.dir, 'dist'), 0, [('4.0.0', 'good')])
    before = d.digest()
    seconds = 15
    marker = os.path.join(d.dir, 'held')
    cmd = ['ansible-playbook', '-i', os.path.join(ROOT, 'examples', 'demo', 'inventory.yml'), 'failsafe.deploy.deploy',
           '-e', 'release_version=4.0.0', '-e', 'failsafe_confirm_timeout=%d' % seconds,
           '-e', 'failsafe_confirm_mechanism=process',
           '-e', 'failsafe_verify_before_tasks=%s' % HOOK, '-e', 'failsafe_fault_host=localhost',
           '-e', 'failsafe_fault_kind=hold', '-e', 'failsafe_fault_step=verify',
           '-e', 'failsafe_fault_marker=%s' % marker, '-e', 'failsafe_fault_hold_seconds=40']
    with open(os.path.join(d.dir, 'runs.log'), 'a', encoding='utf-8') as log:
        log.write('$ %s\n' % ' '.join(cmd))
        log.flush()
        proc = subprocess.Popen(cmd, env=d.env, cwd=d.dir, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
        try:
            limit = time.monotonic() + 300
            while not (os.path.exists(marker) and os.path.getsize(marker) > 0):
                assert proc.poll() is None, 'the deploy ended (rc %s) before the verify step was held' % proc.returncode
                assert time.monotonic() < limit, 'the verify step was not held within 300 s'
                time.sleep(0.1)
            assert d.current() == 'releases/4.0.0', 'the host has not switched'
            confirm = d.journal()['confirm']
            assert confirm['state'] == 'armed' and confirm['mechanism'] == 'process', confirm
            assert confirm_watchdogs_under(d.dir) == [confirm['pid']], 'no watchdog armed'
            assert_built_from_sources(payload_of(d.state_dir, 'demo-app'), 'localhost')
        finally:
            killed = time.monotonic()
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            # Mitogen's multiplexer, forked from ansible-playbook into a session of its own, is not in the killed
            # group: it is killed too (its command line is the run's, marker included), as the controller's death is
            for entry in os.listdir('/proc'):
                try:
                    with open('/proc/%s/cmdline' % entry, 'rb') as handle:
                        if marker.encode() in handle.read() and int(entry) != os.getpid():
                            os.kill(int(entry), signal.SIGKILL)
                except (OSError, ValueError):
                    pass
            held = open(marker).read().strip() if os.path.exists(marker) else ''
            if held.isdigit():
                try:
                    os.kill(int(held), signal.SIGKILL)  # the held step's sleep, orphaned by the kill
                except OSError:
                    pass
    limit = killed + seconds + REVERT_BOUND + 10
    while time.monotonic() < limit:
        journal = d.journal()
        if journal.get('status') == 'rolled_back' and journal['confirm'].get('state') in ('reverted', 'revert_failed'):
            break
        time.sleep(0.2)
    journal = d.journal()
    assert journal['status'] == 'rolled_back' and journal['confirm']['state'] == 'reverted', journal.get('confirm')
    with open(os.path.join(d.state_dir, 'demo-app', 'self_revert.json'), encoding='utf-8') as handle:
        facts = json.load(handle)
    assert facts['by'] == 'the watchdog' and facts['outcome'] == 'rolled_back', facts
    assert facts['rollback']['verified'] is True and facts['started'] >= journal['confirm']['deadline']
    assert facts['finished'] - journal['confirm']['deadline'] <= REVERT_BOUND, facts
    assert d.http('/version') == (200, '2.0.0')
    assert d.current() == 'releases/2.0.0'
    assert d.digest() == before, 'the host is not byte-identical to its snapshot after its own revert'
    assert d.ledger()['releases']['4.0.0']['state'] == 'staged'
    assert not os.path.exists(d.lock_path())
    assert wait_no_watchdog(d.dir) == []


# --- one SSH host of a namespace fleet ------------------------------------------------------------------------------

@pytest.mark.fleet
def test_on_an_ssh_host_under_mitogen_a_good_deploy_commits_and_a_failing_one_is_rolled_back(tmp_path):
    from test_fault_matrix import Matrix  # pylint: disable=import-outside-toplevel
    from tests.fleet.fleet import Fleet, ensure_prereqs  # pylint: disable=import-outside-toplevel
    base = str(tmp_path)
    witness = os.path.join(base, 'strategy-witness.jsonl')
    env = mitogen_env(witness)
    require_root('the namespace fleet needs root')
    ensure_prereqs()
    fleet = Fleet(1, base_dir=os.path.join(base, 'fleet'))
    fleet.up()
    try:
        # Mitogen counts its whole bootstrap against the connection timeout, which the fleet's inventory sets to 3 s
        # (a group var, which no environment setting overrides): 30 s as in mitogen_env, in the inventory that the
        # callback's rollback child reads as well
        fleet.set_ssh_timeout(30)
        matrix = Matrix(fleet, base)
        matrix.env.update(env)
        host = fleet.names[0]
        matrix.build.build(matrix.dist, 0, [('1.0.0', 'good'), ('1.1.0', 'good'), ('9.0.0', 'unhealthy')])
        for version in ('1.0.0', '1.1.0'):
            cell_dir = os.path.join(base, 'good-%s' % version)
            os.makedirs(cell_dir)
            rc, dummy = matrix.play(cell_dir, 'failsafe.deploy.deploy', '-e', 'release_version=%s' % version)
            assert rc == 0, 'see %s/runs.log' % cell_dir
            assert matrix.served_version(host) == version
            journal = matrix.read_json(host, '/var/lib/failsafe-deploy/app/journal.json')
            assert journal['status'] == 'committed' and journal['confirm']['state'] == 'confirmed', journal
        assert_built_from_sources(payload_of(fleet.host_path(host, '/var/lib/failsafe-deploy'), 'app'), host)
        before = matrix.digest(host)
        cell_dir = os.path.join(base, 'failing')
        os.makedirs(cell_dir)
        rc, dummy = matrix.play(cell_dir, 'failsafe.deploy.deploy', '-e', 'release_version=9.0.0')
        assert rc != 0
        state = matrix.state(host)
        assert state['served'] == '1.1.0' and state['current'] == '1.1.0', state
        assert state['journal'] == 'rolled_back' and not state['lock'], state
        assert matrix.digest(host) == before, 'the captured paths differ from before the failed deploy'
        reports = os.path.join(cell_dir, 'incidents')
        code, out = outcome_exit(reports, rc)
        assert code == 1, out
        assert [child for dummy, child in witnessed(witness)] == [False, False, False, True]
    finally:
        fleet.down()
