# -*- coding: utf-8 -*-
# Copyright: Contributors to failsafe.deploy
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Commit confirmed on one host: the activation arms a real detached watchdog process, the commit disarms it, an
unconfirmed transaction is rolled back by the host itself at its deadline, and a commit racing the deadline ends
with exactly one outcome. The service manager is ``none`` here (the fleet tests run it with supervisor)."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import json
import os
import subprocess
import sys
import time

import pytest

from ansible_collections.failsafe.deploy.plugins.module_utils import _confirm
from ansible_collections.failsafe.deploy.plugins.module_utils import _engine as engine
from ansible_collections.failsafe.deploy.plugins.module_utils._errors import FailsafeError
from ansible_collections.failsafe.deploy.plugins.module_utils._journal import DeployState
from ansible_collections.failsafe.deploy.plugins.module_utils._release import (
    ReleaseRoot, ensure_active, ensure_staged, ensure_verified,
)


def no_run(argv):
    raise AssertionError('no command expected with manager none: %r' % (argv,))


def make_host(base):
    """An application root with 1.0 verified and current, 2.0 staged, and a state directory."""
    app = os.path.join(base, 'app')
    os.makedirs(os.path.join(app, 'shared'))
    with open(os.path.join(app, 'shared', 'app.json'), 'w') as handle:
        handle.write('{"label": "one"}')
    rr = ReleaseRoot(app)
    for rid in ('1.0', '2.0'):
        src = os.path.join(base, 'src-' + rid)
        os.makedirs(src)
        with open(os.path.join(src, 'VERSION'), 'w') as handle:
            handle.write(rid)
        ensure_staged(rr, rid, src)
    ensure_active(rr, '1.0')
    ensure_verified(rr, '1.0')
    return {'state_dir': os.path.join(base, 'state'), 'name': 'app', 'app_root': app, 'release': '2.0',
            'run_id': 'run-1', 'snapshot_paths': [os.path.join(app, 'current'), os.path.join(app, 'shared')],
            'service': {'manager': 'none'}, 'min_free_mb': 0, 'check_running': False}


@pytest.fixture
def host(tmp_path):
    return make_host(str(tmp_path))


def watchdogs(params_dir):
    """Live processes whose command line names a parameters file under params_dir (the process table itself)."""
    found = []
    for entry in os.listdir('/proc'):
        if not entry.isdigit():
            continue
        try:
            with open('/proc/%s/cmdline' % entry, 'rb') as handle:
                argv = handle.read().decode('utf-8', 'replace').split('\0')
            with open('/proc/%s/stat' % entry) as handle:
                state = handle.read().rsplit(')', 1)[1].split()[0]
        except (IOError, OSError):
            continue
        if state != 'Z' and any(a.startswith(params_dir + os.sep) for a in argv):
            found.append(int(entry))
    return found


def wait_for(predicate, timeout, what):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError('%s: not within %s s' % (what, timeout))


def activate(host, seconds):
    engine.open_phase(dict(host), no_run)
    with open(os.path.join(host['app_root'], 'shared', 'app.json'), 'w') as handle:
        handle.write('{"label": "two"}')
    return engine.activate_phase(dict(host, confirm_timeout=seconds), no_run)


def confirm_dir(host):
    return os.path.join(host['state_dir'], 'app', 'confirm')


def test_activation_arms_a_detached_watchdog_and_the_commit_disarms_it(host):
    res = activate(host, 120)
    confirm = res['confirm']
    assert confirm['armed'] and confirm['state'] == 'armed' and confirm['mechanism'] == 'process'
    ds = DeployState(host['state_dir'], 'app')
    journal = ds.read_journal()
    assert journal['confirm']['deadline'] == confirm['deadline'] and journal['confirm']['pid'] == confirm['pid']
    assert 110 < confirm['deadline'] - time.time() <= 120
    assert watchdogs(confirm_dir(host)) == [confirm['pid']], 'one watchdog process, the one in the journal'
    # its own session: the end of the SSH session (its process group, its controlling terminal) does not reach it
    assert os.getsid(confirm['pid']) == confirm['pid']
    params = os.path.join(confirm_dir(host), '%s.json' % journal['txid'])
    assert os.stat(params).st_mode & 0o777 == 0o600
    # activating again in the same run keeps the watchdog it armed
    again = engine.activate_phase(dict(host, confirm_timeout=120), no_run)
    assert again['confirm']['pid'] == confirm['pid'] and again['confirm']['changed'] is False
    done = engine.confirmed_commit(dict(host))
    assert (done['confirm'] or {}).get('state') == 'confirmed', done['confirm']
    wait_for(lambda: not watchdogs(confirm_dir(host)), 10, 'the watchdog ends after the commit')
    journal = ds.read_journal()
    assert journal['status'] == 'committed' and journal['confirm']['state'] == 'confirmed'
    assert not os.path.exists(params)
    assert ReleaseRoot(host['app_root']).read_current() == '2.0'


def test_check_mode_shows_what_would_be_armed_and_arms_nothing(host):
    engine.open_phase(dict(host), no_run)
    res = engine.activate_phase(dict(host, confirm_timeout=45), no_run, check_mode=True)
    assert res['confirm']['would_arm'] is True and res['confirm']['seconds'] == 45
    assert 'would arm' in res['confirm']['msg']
    assert not watchdogs(confirm_dir(host)) and not os.path.exists(confirm_dir(host))
    assert 'confirm' not in DeployState(host['state_dir'], 'app').read_journal()


def test_off_arms_nothing(host):
    res = activate(host, 0)
    assert res['confirm']['armed'] is False
    assert not os.path.exists(confirm_dir(host))


def test_a_rollback_disarms_the_watchdog(host):
    pid = activate(host, 120)['confirm']['pid']
    engine.guarded_rollback(dict(host, reason='verify failed'), no_run)
    wait_for(lambda: not watchdogs(confirm_dir(host)), 10, 'the watchdog ends after the rollback')
    assert not os.path.exists('/proc/%d/cmdline' % pid) or pid not in watchdogs(confirm_dir(host))
    journal = DeployState(host['state_dir'], 'app').read_journal()
    assert journal['status'] == 'rolled_back' and journal['confirm']['state'] == 'disarmed'
    assert _confirm.read_facts(DeployState(host['state_dir'], 'app')) is None


def test_an_unconfirmed_activation_is_reverted_by_the_host_itself(host):
    before = open(os.path.join(host['app_root'], 'shared', 'app.json')).read()
    res = activate(host, 2)
    assert ReleaseRoot(host['app_root']).read_current() == '2.0'
    ds = DeployState(host['state_dir'], 'app')
    wait_for(lambda: (ds.read_journal() or {}).get('status') == 'rolled_back', 20, 'the host reverts itself')
    wait_for(lambda: not watchdogs(confirm_dir(host)), 10, 'the watchdog ends after its revert')
    journal = ds.read_journal()
    assert journal['confirm']['state'] == 'reverted'
    assert 'not confirmed within 2 s' in journal['outcome']['reason'] and journal['outcome']['verified'] is True
    assert ReleaseRoot(host['app_root']).read_current() == '1.0'
    # reverted for lack of confirmation, not shown bad: not quarantined
    assert ReleaseRoot(host['app_root']).load_ledger()['releases']['2.0']['state'] == 'staged'
    assert open(os.path.join(host['app_root'], 'shared', 'app.json')).read() == before
    assert ds.read_lock() is None, 'the revert releases the deploy lock'
    facts = _confirm.read_facts(ds)
    assert facts['txid'] == journal['txid'] and facts['outcome'] == 'rolled_back'
    assert facts['cause'] == 'not confirmed within 2 s' and facts['rollback']['verified'] is True
    assert facts['started'] >= res['confirm']['deadline']
    # a confirmation after that fails loudly and commits nothing
    with pytest.raises(_confirm.ConfirmError) as err:
        engine.confirmed_commit(dict(host))
    assert 'host reverted before confirmation' in err.value.msg
    assert ds.read_journal()['status'] == 'rolled_back'
    assert ReleaseRoot(host['app_root']).load_ledger()['releases']['2.0']['state'] == 'staged'
    # a rollback finds nothing to undo and says why
    res = engine.guarded_rollback(dict(host), no_run)
    assert res['nothing_to_undo'] and res['self_revert']['txid'] == journal['txid']
    assert 'reverted transaction %s by itself' % journal['txid'] in res['msg']
    # the next run reports it, once
    nxt = dict(host, run_id='run-2', release='2.0', force=True)
    opened = engine.open_phase(nxt, no_run)
    assert opened['self_reverted']['txid'] == journal['txid']
    assert _confirm.read_facts(ds)['reported_by'] == 'run-2'
    engine.guarded_rollback(dict(nxt, reason='cleanup'), no_run)
    assert engine.open_phase(dict(host, run_id='run-3', force=True), no_run)['self_reverted'] is None


def test_a_revert_cut_part_way_is_finished_by_the_next_rollback_and_says_so(host, monkeypatch):
    # the watchdog's own crash point: it dies inside its revert's restore, as on a host that lost power there
    monkeypatch.setenv('FAILSAFE_WATCHDOG_CRASH_AT', 'restore.entry-restored')
    activate(host, 2)
    monkeypatch.delenv('FAILSAFE_WATCHDOG_CRASH_AT')
    ds = DeployState(host['state_dir'], 'app')
    wait_for(lambda: (ds.read_journal()['confirm']).get('state') == 'reverting', 20, 'the host begins its revert')
    wait_for(lambda: not watchdogs(confirm_dir(host)), 10, 'the watchdog dies inside its revert')
    journal = ds.read_journal()
    assert journal['status'] == 'open' and journal['confirm']['state'] == 'reverting', journal
    assert _confirm.read_facts(ds) is None
    txid = journal['txid']
    res = engine.guarded_rollback(dict(host, reason='recovered after an interrupted deploy'), no_run)
    assert res['failsafe_rollback']['verified'] is True, res
    journal = ds.read_journal()
    assert journal['status'] == 'rolled_back' and journal['confirm']['state'] == 'revert_interrupted', journal
    assert 'interrupted' in journal['confirm']['why'] and 'recovered after' in journal['confirm']['why']
    assert not os.path.exists(os.path.join(confirm_dir(host), '%s.json' % txid))
    assert ReleaseRoot(host['app_root']).read_current() == '1.0'
    assert open(os.path.join(host['app_root'], 'shared', 'app.json')).read() == '{"label": "one"}'


def test_a_self_revert_that_recover_reported_is_not_reported_again(host):
    activate(host, 2)
    ds = DeployState(host['state_dir'], 'app')
    wait_for(lambda: ((ds.read_journal() or {}).get('confirm') or {}).get('state') == 'reverted', 20,
             'the host reverts itself')
    facts = _confirm.facts_of(ds, ds.read_journal())
    # recover.yml's query with a run id reports it, and marks it reported by that run
    assert _confirm.report_once(ds, facts, 'recover-1', check_mode=True)['txid'] == facts['txid']
    assert _confirm.read_facts(ds)['reported_by'] is None, 'check mode marked it'
    assert _confirm.report_once(ds, facts, 'recover-1')['txid'] == facts['txid']
    assert _confirm.read_facts(ds)['reported_by'] == 'recover-1'
    assert _confirm.report_once(ds, _confirm.read_facts(ds), 'recover-2') is None
    # and the next deploy does not report it again
    assert engine.open_phase(dict(host, run_id='run-2', force=True), no_run)['self_reverted'] is None


# --- the race between the commit and the deadline -----------------------------------------------------------------

# Imports first and says so, then reads when to commit: a slow start of the child never shifts the moment.
COMMIT_CHILD = r'''
import json, sys, time
from ansible_collections.failsafe.deploy.plugins.module_utils import _engine
params = json.loads(sys.argv[1])
sys.stdout.write('ready\n')
sys.stdout.flush()
at = float(sys.stdin.readline())
while time.time() < at:
    time.sleep(min(0.005, max(0.0, at - time.time())))
try:
    res = _engine.confirmed_commit(params)
    print(json.dumps({'ok': True, 'at': time.time()}))
except Exception as exc:
    print(json.dumps({'ok': False, 'msg': getattr(exc, 'msg', str(exc)), 'at': time.time()}))
'''


def _collections():
    return os.path.abspath(os.path.join(os.path.dirname(_confirm.__file__), '..', '..', '..', '..', '..'))


# Offsets of the commit from the deadline (s): early, at it, and late; each run several times.
OFFSETS = [-0.3, -0.02, -0.005, 0.0, 0.0, 0.005, 0.02, 0.3] * 2


def test_a_commit_racing_the_deadline_ends_with_exactly_one_outcome(tmp_path):
    env = dict(os.environ, PYTHONPATH=_collections() + os.pathsep + os.environ.get('PYTHONPATH', ''))
    seen = {'committed': 0, 'reverted': 0}
    for n, offset in enumerate(OFFSETS):
        host = make_host(str(tmp_path / ('h%d' % n)))
        child = subprocess.Popen([sys.executable, '-c', COMMIT_CHILD, json.dumps(host)], env=env,
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                 universal_newlines=True)
        assert child.stdout.readline().strip() == 'ready'
        res = activate(host, 1)
        deadline = res['confirm']['deadline']
        out = child.communicate('%r\n' % (deadline + offset), timeout=60)[0]
        answer = json.loads(out.strip().splitlines()[-1])
        ds = DeployState(host['state_dir'], 'app')
        wait_for(lambda: not watchdogs(confirm_dir(host)), 20, 'no watchdog left (round %d)' % n)
        journal = ds.read_journal()
        facts = _confirm.read_facts(ds)
        ledger = ReleaseRoot(host['app_root']).load_ledger()['releases']
        current = ReleaseRoot(host['app_root']).read_current()
        where = 'round %d, offset %s: commit %r, journal %s, confirm %r' % (
            n, offset, answer, journal['status'], journal.get('confirm'))
        if answer['ok']:
            # the commit won: committed, on the new release, never reverted
            assert journal['status'] == 'committed' and journal['confirm']['state'] == 'confirmed', where
            assert current == '2.0' and ledger['2.0']['state'] == 'verified', where
            assert facts is None, where
            seen['committed'] += 1
        else:
            # the revert won: rolled back, on the previous release, and the commit said so loudly
            assert 'host reverted before confirmation' in answer['msg'], where
            assert journal['status'] == 'rolled_back' and journal['confirm']['state'] == 'reverted', where
            assert current == '1.0' and ledger['2.0']['state'] == 'staged', where
            assert facts and facts['outcome'] == 'rolled_back' and facts['txid'] == journal['txid'], where
            seen['reverted'] += 1
        assert ds.read_lock() is None, where
    assert seen['committed'] and seen['reverted'], 'both orders must be hit: %r' % seen


# --- a rollback still running on the host when the next run recovers ----------------------------------------------

HOLDER_CHILD = r'''
import json, sys
from ansible_collections.failsafe.deploy.plugins.module_utils import _confirm, _engine
from ansible_collections.failsafe.deploy.plugins.module_utils._errors import FailsafeError
from ansible_collections.failsafe.deploy.plugins.module_utils._journal import DeployState
from ansible_collections.failsafe.deploy.plugins.module_utils._layers import _run
params = json.loads(sys.argv[1])
with _confirm.host_lock(DeployState(params['state_dir'], params['name'])):
    sys.stdout.write('locked\n')
    sys.stdout.flush()
    sys.stdin.readline()
    _engine.guarded_rollback(dict(params, reason='the dead run\'s rollback'), _run)
'''


def test_the_next_run_waits_for_a_rollback_still_running_and_then_opens(tmp_path):
    """A rollback whose controller died keeps running on the host; the next run's open, which saw the transaction
    open, waits for it on the host lock instead of undoing the same layers at the same time, then opens."""
    import threading
    host = make_host(str(tmp_path))
    engine.open_phase(dict(host, ttl=1), no_run)
    engine.activate_phase(dict(host, confirm_timeout=120), no_run)
    time.sleep(1.1)  # the dead run's lock expires: the next run may recover
    env = dict(os.environ, PYTHONPATH=_collections() + os.pathsep + os.environ.get('PYTHONPATH', ''))
    child = subprocess.Popen([sys.executable, '-c', HOLDER_CHILD, json.dumps(host)], env=env, stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True)
    assert child.stdout.readline().strip() == 'locked'
    out = {}

    def next_run():
        try:
            out['result'] = engine.open_phase(dict(host, run_id='run-2', release='2.0', force=True), no_run)
        except Exception as exc:  # pylint: disable=broad-except
            out['error'] = exc

    thread = threading.Thread(target=next_run)
    thread.start()
    thread.join(1.0)
    assert thread.is_alive(), 'the next run did not wait for the rollback holding the host lock'
    child.communicate('go\n', timeout=60)
    thread.join(60)
    assert child.returncode == 0
    assert 'error' not in out, out.get('error')
    assert out['result']['recovered'] is None, 'the layers were undone twice'
    ds = DeployState(host['state_dir'], 'app')
    history = ds.history_tail(10)
    assert [t['status'] for t in history if t['run_id'] == 'run-1'] == ['rolled_back']
    assert ds.read_journal()['run_id'] == 'run-2' and ds.read_journal()['status'] == 'open'
    assert not watchdogs(confirm_dir(host))


# --- what an unconfirmed revert says, and what comes after it -------------------------------------------------------

def _history(ds):
    path = os.path.join(ds.dir, 'history.jsonl')
    with open(path) as handle:
        return [json.loads(line) for line in handle if line.strip()]


def test_an_unconfirmed_revert_does_not_quarantine_and_the_release_deploys_again_without_force(host):
    """Given an activation nobody confirmed and nobody showed bad, when the host reverts it at its deadline, then the
    ledger, the journal and the history say it was reverted for lack of confirmation (not failed), and the next deploy
    of the same release proceeds without force."""
    activate(host, 1)
    ds = DeployState(host['state_dir'], 'app')
    wait_for(lambda: (ds.read_journal() or {}).get('confirm', {}).get('state') == 'reverted', 20,
             'the host reverts itself')
    rr = ReleaseRoot(host['app_root'])
    assert rr.read_current() == '1.0'
    entry = rr.load_ledger()['releases']['2.0']
    assert entry['state'] == 'staged', entry
    last = entry['history'][-1]
    assert last['event'] == 'reverted' and 'not confirmed within 1 s' in last['reason'], last
    assert not any(h['state'] == 'failed' for h in entry['history']), entry['history']
    journal = ds.read_journal()
    assert journal['outcome']['quarantined'] is False and 'not confirmed within 1 s' in journal['outcome']['reason']
    closed = [t for t in _history(ds) if t['txid'] == journal['txid']]
    assert [t['status'] for t in closed] == ['rolled_back'] and closed[0]['outcome']['quarantined'] is False
    assert os.path.isdir(rr.release_path('2.0')), 'a release that ran stays on disk'
    # the same release again, without force: not refused as quarantined
    nxt = dict(host, run_id='run-2')
    opened = engine.open_phase(nxt, no_run)
    assert opened['needed'] is True and ds.read_journal()['run_id'] == 'run-2'
    engine.activate_phase(dict(nxt, confirm_timeout=120), no_run)
    engine.verify_phase(dict(nxt))
    engine.confirmed_commit(dict(nxt))
    assert rr.read_current() == '2.0' and rr.load_ledger()['releases']['2.0']['state'] == 'verified'


def test_a_release_shown_bad_before_the_revert_is_quarantined_by_it(host):
    """Given a verify that failed on the host after the activation (its controller died before the rollback), when
    the host reverts at its deadline, then the journal recorded the failed verify and the release is quarantined."""
    activate(host, 1)
    with pytest.raises(engine.EngineError):
        engine.verify_phase(dict(host, checks=[{'name': 'down', 'cmd': ['false'], 'retries': 0}]))
    ds = DeployState(host['state_dir'], 'app')
    steps = ds.read_journal()['steps']
    assert [(s['step'], s['status']) for s in steps if s['step'] == 'verify'] == [('verify', 'failed')], steps
    wait_for(lambda: (ds.read_journal() or {}).get('confirm', {}).get('state') == 'reverted', 20,
             'the host reverts itself')
    assert ReleaseRoot(host['app_root']).load_ledger()['releases']['2.0']['state'] == 'failed'
    assert ds.read_journal()['outcome']['quarantined'] is True


def test_a_verify_that_reaches_the_host_while_it_reverts_fails_and_writes_nothing(host, tmp_path):
    """Given a host that began reverting (its restored release's check is still waiting), when the dead run's verify
    reaches it and its checks pass, then the verify fails loudly and neither the journal nor the history records a
    verification of the reverted transaction."""
    gate = str(tmp_path / 'gate')
    waiting = {'name': 'restored', 'cmd': ['sh', '-c', 'test -e %s' % gate], 'retries': 400, 'sleep': 0.05}
    engine.open_phase(dict(host), no_run)
    engine.activate_phase(dict(host, confirm_timeout=1, checks=[waiting]), no_run)
    ds = DeployState(host['state_dir'], 'app')
    try:
        wait_for(lambda: (ds.read_journal() or {}).get('confirm', {}).get('state') == 'reverting', 20,
                 'the host begins reverting')
        with pytest.raises(FailsafeError) as err:
            engine.verify_phase(dict(host, checks=[{'name': 'ok', 'cmd': ['true'], 'retries': 0}]))
        assert 'revert' in err.value.msg and ds.read_journal()['txid'] in err.value.msg, err.value.msg
        assert not [s for s in ds.read_journal().get('steps') or [] if s['step'] == 'verify']
    finally:
        open(gate, 'w').close()
    wait_for(lambda: (ds.read_journal() or {}).get('confirm', {}).get('state') == 'reverted', 30,
             'the host finishes its revert')
    journal = ds.read_journal()
    assert not [s for s in journal.get('steps') or [] if s['step'] == 'verify'], journal['steps']
    closed = [t for t in _history(ds) if t['txid'] == journal['txid']]
    assert closed and not [s for t in closed for s in t.get('steps') or [] if s['step'] == 'verify']
    # after the revert, a verify still fails loudly and writes nothing
    with pytest.raises(FailsafeError) as err:
        engine.verify_phase(dict(host, checks=[{'name': 'ok', 'cmd': ['true'], 'retries': 0}]))
    assert 'revert' in err.value.msg, err.value.msg
    assert ds.read_journal() == journal


def test_the_watchdogs_checks_do_not_wait_the_deploys_verify_delay(host):
    """Given a deploy whose checks wait 30 s before their first attempt (failsafe_verify_delay), when the host reverts
    an unconfirmed activation, then its checks of the restored release start at once: the revert ends within a few
    seconds of the deadline."""
    engine.open_phase(dict(host), no_run)
    res = engine.activate_phase(dict(host, confirm_timeout=1, checks=[{'name': 'ok', 'cmd': ['true']}],
                                     check_defaults={'delay': 30, 'retries': 2, 'sleep': 1, 'timeout': 5}), no_run)
    ds = DeployState(host['state_dir'], 'app')
    wait_for(lambda: (ds.read_journal() or {}).get('confirm', {}).get('state') == 'reverted', 12,
             'the host reverts itself without the verify delay')
    facts = _confirm.read_facts(ds)
    assert facts['outcome'] == 'rolled_back' and facts['rollback']['checks'][0]['ok'] is True
    assert facts['finished'] - res['confirm']['deadline'] < 8, facts


def test_the_watchdogs_code_built_from_sources_holds_every_module_it_imports(tmp_path):
    """Where a module runs without a payload file on the host (Mitogen), the watchdog's code is a zip of the sources
    the module imported: the entry points and everything they import at any depth (the kinds loaded on first use,
    ansible.module_utils.urls of the HTTP checks), and nothing else of the collection (not the module itself). An
    interpreter with nothing but the standard library and that zip imports all of it."""
    sources = _confirm.code_sources()
    prefix = 'ansible_collections.failsafe.deploy.plugins.'
    for name in ('module_utils._confirm', 'module_utils._engine', 'module_utils._health', 'module_utils.kinds',
                 'module_utils.kinds.database', 'module_utils.kinds.traffic', 'module_utils.kinds.flags'):
        assert prefix + name in sources, name
    assert 'ansible.module_utils.urls' in sources
    assert not [n for n in sources if n.startswith(prefix + 'modules') or n.startswith(prefix + 'plugin_utils')]
    assert sources['ansible_collections.failsafe.deploy'] == ('', True)
    data = _confirm.payload_zip(sources)
    assert data == _confirm.payload_zip(_confirm.code_sources()), 'the same code must give the same zip'
    path = str(tmp_path / 'payload.zip')
    with open(path, 'wb') as handle:
        handle.write(data)
    names = sorted(n for n in sources if n.startswith(prefix) or n.startswith('ansible.module_utils.'))
    # every module, from the zip (those below ansible.module_utils.distro, which puts the module it chose in its own
    # place on import, are imported by it)
    code = ('import sys; sys.path.insert(0, sys.argv[1])\n'
            'for name in sys.argv[2:]:\n'
            '    parent = sys.modules.get(name.rpartition(".")[0])\n'
            '    if parent is not None and parent.__name__ != name.rpartition(".")[0]:\n'
            '        continue\n'
            '    module = __import__(name, fromlist=["x"])\n'
            '    assert module.__file__.startswith(sys.argv[1]), (name, module.__file__)\n'
            'assert sys.modules["ansible.module_utils.distro"].__file__.startswith(sys.argv[1])\n')
    proc = subprocess.run([sys.executable, '-I', '-S', '-c', code, path] + names, capture_output=True, text=True,
                          cwd='/', check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_without_a_payload_file_the_watchdog_runs_from_the_sources_and_reverts(host, monkeypatch):
    """Given a module whose code was not imported from a path on the host (Mitogen: ``__file__`` is
    ``master:<path>``), the activation writes a zip of its sources to the state directory, checked by importing it,
    and the watchdog armed with it reverts the unconfirmed transaction by itself."""
    monkeypatch.setattr(_confirm, '_code_root', lambda: None)
    res = activate(host, 1)
    ds = DeployState(host['state_dir'], 'app')
    payloads = [n for n in os.listdir(confirm_dir(host)) if n.startswith('payload-') and n.endswith('.zip')]
    assert len(payloads) == 1 and not [n for n in os.listdir(confirm_dir(host)) if n.startswith('.')], payloads
    params = os.path.join(confirm_dir(host), '%s.json' % ds.read_journal()['txid'])
    with open(params) as handle:
        assert json.load(handle)['payload'] == os.path.join(confirm_dir(host), payloads[0])
    wait_for(lambda: (ds.read_journal() or {}).get('confirm', {}).get('state') == 'reverted', 20,
             'the host reverts itself with the code built from sources')
    facts = _confirm.read_facts(ds)
    assert facts['by'] == 'the watchdog' and facts['outcome'] == 'rolled_back', facts
    assert res['confirm']['pid'] and ReleaseRoot(host['app_root']).read_current() == '1.0'
