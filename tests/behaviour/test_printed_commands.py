"""The commands a deploy prints for the operator do what they say, run exactly as printed (split as a shell splits
them, from the same directory, in the same environment) on the demo site: the rollback command of a committed
deploy rolls it back, and the way out that a ROLLBACK FAILED prints finishes the rollback. A check run says it was
one and that nothing changed, and prints no rollback command; the host is as before (tree, journal on disk)."""
import os
import re
import shlex
import subprocess

import pytest

from support import DEMO

pytestmark = pytest.mark.slow

# How the debug task prints the commit's message, and how the ROLLBACK FAILED banner prints its way out.
COMMITTED = re.compile(r'To roll this deploy back to the release before it: (ansible-playbook [^"\n]+)')
WAY_OUT = re.compile(r'^!!! Way out, once the cause is fixed: (ansible-playbook .+)$', re.M)


def run_as_printed(d, command, env=None):
    proc = subprocess.run(shlex.split(command), env=env or d.env, cwd=d.dir, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=600, check=False)
    with open(os.path.join(d.dir, 'runs.log'), 'a') as log:
        log.write('$ %s\n%s\nrc=%s\n' % (command, proc.stdout, proc.returncode))
    return proc


def journal_bytes(d):
    with open(os.path.join(d.state_dir, 'demo-app', 'journal.json'), 'rb') as handle:
        return handle.read()


def test_given_a_committed_deploy_when_its_printed_rollback_command_runs_as_printed_then_the_host_is_back(
        local_deploy):
    d = local_deploy
    assert d.deploy('1.0.0').returncode == 0
    proc = d.deploy('2.0.0')
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert d.current() == 'releases/2.0.0' and d.http('/version') == (200, '2.0.0')
    run_id = d.journal()['run_id']
    found = COMMITTED.findall(proc.stdout)
    assert len(found) == 1, proc.stdout[-4000:]
    command = found[0]
    assert '-e failsafe_rollback_run_id=%s' % run_id in command
    assert 'FAILSAFE_WEBHOOK' not in command and d.receiver.url not in command
    rolled = run_as_printed(d, command)
    assert rolled.returncode == 0, rolled.stdout[-4000:]
    assert 'No inventory was parsed' not in rolled.stdout
    # the host's real state: the link, the app that answers, the journal
    assert d.current() == 'releases/1.0.0'
    assert d.http('/version') == (200, '1.0.0')
    assert d.journal()['status'] == 'rolled_back' and d.journal()['run_id'] == run_id


def test_given_a_rollback_that_failed_when_its_printed_way_out_runs_as_printed_then_the_host_is_back(local_deploy):
    d = local_deploy
    assert d.deploy('2.0.0').returncode == 0
    # the automatic rollback is killed after a second: it cannot finish, and the outcome is ROLLBACK FAILED
    env = dict(d.env, FAILSAFE_ROLLBACK_TIMEOUT='1')
    cmd = ['ansible-playbook', '-i', os.path.join(DEMO, 'inventory.yml'), 'failsafe.deploy.deploy', '-e',
           'release_version=3.0.0']
    proc = subprocess.run(cmd, env=env, cwd=d.dir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=600, check=False)
    assert proc.returncode != 0
    assert 'ROLLBACK FAILED' in proc.stdout, proc.stdout[-4000:]
    assert d.journal()['status'] in ('open', 'rollback_failed')
    assert d.current() == 'releases/3.0.0'
    found = WAY_OUT.findall(proc.stdout)
    assert len(found) == 1, proc.stdout[-4000:]
    assert '--limit localhost' in found[0]
    rolled = run_as_printed(d, found[0], env=env)
    assert rolled.returncode == 0, rolled.stdout[-4000:]
    assert d.current() == 'releases/2.0.0'
    assert d.http('/version') == (200, '2.0.0')
    assert d.journal()['status'] == 'rolled_back'


def test_given_a_check_run_after_a_deploy_then_its_words_say_nothing_changed_and_nothing_did(local_deploy):
    d = local_deploy
    assert d.deploy('1.0.0').returncode == 0
    digest, journal = d.digest(), journal_bytes(d)
    proc = d.deploy('2.0.0', '--check', '--diff')
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert 'verified and committed' not in proc.stdout
    assert 'To roll this deploy back' not in proc.stdout
    assert 'failsafe_rollback_run_id' not in proc.stdout
    assert ('would make release 2.0.0 the last known good on this host; nothing was changed, so there is nothing '
            'to roll back.') in proc.stdout, proc.stdout[-4000:]
    assert 'opened a transaction' not in proc.stdout
    # the words are true: nothing changed on the host
    assert d.digest() == digest
    assert journal_bytes(d) == journal
    assert d.current() == 'releases/1.0.0' and d.http('/version') == (200, '1.0.0')
