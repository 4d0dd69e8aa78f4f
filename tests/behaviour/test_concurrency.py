"""Two deploys to the same host at once: one proceeds, the other is refused fast naming the holder, nothing breaks.

Real ansible-playbook processes against the demo setup (examples/demo under a private directory). The race is made
deterministic with the release step's before-hook: the first deploy takes the lock, opens its transaction, then
waits in the hook until the test lets it go; the second deploy runs in that window.
"""
import json
import os
import subprocess
import time

import pytest

from support import DEMO, assert_no_ignored_callback_errors, recap_changed

pytestmark = pytest.mark.slow

HOOK = """---
- name: Tell the test this deploy holds the lock
  ansible.builtin.file:
    path: {held}
    state: touch
    mode: "0600"

- name: Wait until the test lets this deploy go on
  ansible.builtin.wait_for:
    path: {go}
    timeout: 300
"""


def wait_for_file(path, proc, timeout=240):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if os.path.exists(path):
            return
        if proc.poll() is not None:
            pytest.fail('the first deploy ended (rc=%s) before it reached the hook:\n%s'
                        % (proc.returncode, proc.stdout.read()[-6000:]))
        time.sleep(0.2)
    pytest.fail('the first deploy never reached the hook')


def test_second_concurrent_deploy_is_refused_naming_the_holder_and_state_stays_intact(local_deploy, tmp_path):
    d = local_deploy
    first = d.deploy('1.0.0')
    assert first.returncode == 0, first.stdout[-6000:]
    history_before = open(os.path.join(d.state_dir, 'demo-app', 'history.jsonl')).read().splitlines()

    held, go = str(tmp_path / 'held'), str(tmp_path / 'go')
    hook = tmp_path / 'hold.yml'
    hook.write_text(HOOK.format(held=held, go=go))

    env_a = dict(d.env, FAILSAFE_RUN_ID='run-alice-0001')
    cmd_a = ['ansible-playbook', '-i', os.path.join(DEMO, 'inventory.yml'), 'failsafe.deploy.deploy',
             '-e', 'release_version=2.0.0', '-e', 'failsafe_lock_owner=alice@ctl-a',
             '-e', 'failsafe_run_id=run-alice-0001', '-e', 'failsafe_release_before_tasks=%s' % hook]
    winner = subprocess.Popen(cmd_a, env=env_a, cwd=d.dir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True)
    try:
        wait_for_file(held, winner)
        with open(d.lock_path()) as f:
            lock = json.load(f)
        assert lock['owner'] == 'alice@ctl-a' and lock['run_id'] == 'run-alice-0001'
        assert d.journal()['status'] == 'open' and d.journal()['run_id'] == 'run-alice-0001'

        started = time.monotonic()
        loser = d.playbook('failsafe.deploy.deploy', '-e', 'release_version=3.0.0',
                           '-e', 'failsafe_lock_owner=bob@ctl-b', '-e', 'failsafe_run_id=run-bob-0002')
        refused_in = time.monotonic() - started
    finally:
        open(go, 'w').close()
        out_a, dummy = winner.communicate(timeout=600)

    # the second deploy failed at the lock, naming who holds it, and did nothing else
    assert loser.returncode != 0, loser.stdout[-6000:]
    assert 'held by alice@ctl-a' in loser.stdout, loser.stdout[-6000:]
    assert 'run-alice-0001' in loser.stdout, loser.stdout[-6000:]
    assert 'TASK [failsafe.deploy.release' not in loser.stdout
    assert refused_in < 120, 'the refused deploy took %.0f s' % refused_in
    # it opened no transaction, so nothing was rolled back: its one report says it was refused before any change
    assert d.change_reports() == [] and d.report_outcomes() == ['refused']
    assert not any('rollback' in json.dumps(e) for e in d.spool_events())

    # the first deploy went through as if alone
    assert winner.returncode == 0, out_a[-6000:]
    assert_no_ignored_callback_errors(out_a, where='the first deploy')
    assert d.current() == 'releases/2.0.0'
    assert d.http('/version') == (200, '2.0.0')
    ledger = d.ledger()
    assert ledger['current'] == '2.0.0' and ledger['last_verified'] == '2.0.0'
    assert '3.0.0' not in ledger['releases'], 'the refused release was staged'
    assert not os.path.exists(os.path.join(d.app_root, 'releases', '3.0.0'))
    journal = d.journal()
    assert journal['status'] == 'committed' and journal['run_id'] == 'run-alice-0001'
    assert journal['release'] == '2.0.0'
    assert not os.path.exists(d.lock_path())
    with open(os.path.join(d.state_dir, 'demo-app', 'history.jsonl')) as f:
        history = [json.loads(line) for line in f if line.strip()]
    assert len(history) == len(history_before) + 1
    assert [h['run_id'] for h in history[len(history_before):]] == ['run-alice-0001']

    # and the host equals a clean deploy of 2.0.0: deploying it again changes nothing
    again = d.deploy('2.0.0')
    assert again.returncode == 0, again.stdout[-6000:]
    assert recap_changed(again.stdout) == {'localhost': 0}, again.stdout[-6000:]
