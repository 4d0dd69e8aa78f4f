"""Each step role, run twice in a row on its own, changes nothing the second time.

The whole-deploy test (test_local_idempotence.py) shows the short-circuit: a second deploy of the release in place
skips every step. Here every step of one transaction runs on its own, twice, in separate ansible-playbook runs that
continue the same transaction (same run id): the second run of each must report changed=0 and leave the host's
state (application root, state directory, supervisor's program files) exactly as the first left it.
"""
import json
import os

import pytest

from support import recap_changed, tree_digest

pytestmark = pytest.mark.slow

HERE = os.path.dirname(os.path.abspath(__file__))
STEPS_PLAYBOOK = os.path.join(HERE, 'playbooks', 'steps.yml')
STEPS = ['preflight', 'snapshot', 'release', 'activate', 'verify', 'commit']
RUN_ID = 'step-idempotence-run'


def run_step(d, step, *extra):
    return d.playbook(STEPS_PLAYBOOK, '-e', json.dumps({'failsafe_steps': [step]}), '-e', 'release_version=2.0.0',
                      '-e', 'failsafe_release_id=2.0.0', '-e', 'failsafe_run_id=%s' % RUN_ID, *extra)


def read_lock(d):
    if not os.path.exists(d.lock_path()):
        return None
    with open(d.lock_path()) as f:
        return json.load(f)


def holder_moved(before, after):
    """Whether a lock differs in more than its controller process and expiry. Each ansible-playbook run is a new
    controller process: preflight records that process in the run's lock (a later run tells a dead holder by it),
    which pushes the expiry too. That is the only change a second preflight of the same run may make."""
    ignore = ('pid', 'expires', 'expires_iso')
    return [k for k in set(before or {}) | set(after or {})
            if k not in ignore and (before or {}).get(k) != (after or {}).get(k)]


def twice(d, step, *extra):
    """Runs the step twice; returns (changed of the first run, changed of the second, what the second changed)."""
    everything = [d.app_root, d.state_dir, os.path.dirname(d.program_conf)]
    first = run_step(d, step, *extra)
    assert first.returncode == 0, '%s, first run:\n%s' % (step, first.stdout[-6000:])
    before, lock_before = tree_digest(everything), read_lock(d)
    second = run_step(d, step, *extra)
    assert second.returncode == 0, '%s, second run:\n%s' % (step, second.stdout[-6000:])
    after, lock_after = tree_digest(everything), read_lock(d)
    moved = sorted(p for p in set(before) | set(after) if before.get(p) != after.get(p))
    if moved == [d.lock_path()] and lock_before and lock_after and not holder_moved(lock_before, lock_after):
        assert lock_after['run_id'] == RUN_ID and lock_after['pid'] != lock_before['pid']
        moved = []
    return recap_changed(first.stdout)['localhost'], recap_changed(second.stdout)['localhost'], moved


def test_given_a_transaction_when_each_step_runs_twice_on_its_own_then_the_second_run_changes_nothing(local_deploy):
    d = local_deploy
    base = d.deploy('1.0.0')
    assert base.returncode == 0, base.stdout[-6000:]
    problems = {}
    firsts = {}
    for step in STEPS:
        firsts[step], changed, moved = twice(d, step)
        if changed or moved:
            problems[step] = {'changed': changed, 'paths changed by the second run': moved}
    assert problems == {}, json.dumps(problems, indent=1)
    # The steps really did the deploy, one at a time: the first runs changed the host, and 2.0.0 is live,
    # verified and committed under this run.
    assert all(firsts[s] > 0 for s in STEPS), firsts
    assert d.current().endswith('2.0.0')
    assert d.http('/version') == (200, '2.0.0')
    assert d.ledger()['releases']['2.0.0']['state'] == 'verified'
    journal = d.journal()
    assert journal['status'] == 'committed' and journal['run_id'] == RUN_ID and journal['release'] == '2.0.0'
    assert [s['step'] for s in journal['steps']] == ['snapshot', 'release', 'activate', 'verify']
    assert not os.path.exists(d.lock_path())


def test_given_a_committed_transaction_when_it_is_rolled_back_twice_then_the_second_rollback_changes_nothing(
        local_deploy):
    d = local_deploy
    for version in ('1.0.0', '2.0.0'):
        res = d.deploy(version, '-e', 'failsafe_run_id=%s-%s' % (RUN_ID, version))
        assert res.returncode == 0, res.stdout[-6000:]
    first, second, moved = twice(d, 'rollback', '-e', 'failsafe_rollback_run_id=%s-2.0.0' % RUN_ID)
    assert first > 0
    assert (second, moved) == (0, [])
    assert d.current().endswith('1.0.0')
    assert d.http('/version') == (200, '1.0.0')
    assert d.journal()['status'] == 'rolled_back'
    assert d.ledger()['releases']['2.0.0']['state'] == 'failed'


def test_given_an_activation_cut_short_after_the_switch_when_activate_runs_again_then_the_service_restarts(
        local_deploy):
    d = local_deploy
    base = d.deploy('1.0.0')
    assert base.returncode == 0, base.stdout[-6000:]
    for step in ('preflight', 'snapshot', 'release'):
        res = run_step(d, step)
        assert res.returncode == 0, res.stdout[-6000:]
    cut = d.playbook(os.path.join(HERE, 'playbooks', 'switch_only.yml'), '-e', 'release_version=2.0.0')
    assert cut.returncode == 0, cut.stdout[-6000:]
    assert d.current().endswith('2.0.0') and d.http('/version') == (200, '1.0.0')
    # Nothing activate writes changes any more, but its step is not in the journal: the old process must go.
    again = run_step(d, 'activate')
    assert again.returncode == 0, again.stdout[-6000:]
    assert d.http('/version') == (200, '2.0.0')
    assert [s['step'] for s in d.journal()['steps']] == ['snapshot', 'release', 'activate']
