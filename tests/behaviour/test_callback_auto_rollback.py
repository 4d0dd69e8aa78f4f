# -*- coding: utf-8 -*-
# Copyright: Contributors to failsafe.deploy
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The auto_rollback callback in real ansible-playbook runs on localhost (two inventory hosts, connection local).

A test-only module in the playbooks' ``library/`` returns its argument under a chosen result key, so a task can
report a ``failsafe_transaction`` (deploy side) or a ``failsafe_rollback`` (rollback side) without the real
modules. The rollback playbook writes a marker file per host: the tests assert on those files, on the incident
report files, on the alert spool and on what a real HTTP server on 127.0.0.1 received.

Those fakes prove the plumbing (scope, variables passed on, timeouts, a failing child). What the callback reports
about a real rollback is proved by the last test: a real deploy state (examples/demo), a failing real deploy, the
real ``failsafe.deploy.rollback`` playbook started by the callback, and assertions on the restored host.
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import json
import os
import subprocess
import sys
import textwrap
import time

import pytest

from support import assert_no_ignored_callback_errors
from tests.helpers import Receiver
from tests.requires import require_module

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.dirname(sys.executable)
HOOK_TOKEN = 'hOOkT0kenXYZ123'
DB_SECRET = 'hunter2hunter2'

ECHO_MODULE = '''\
#!/usr/bin/python
# Test-only module: returns `value` under the result key `key`.
from ansible.module_utils.basic import AnsibleModule


def main():
    module = AnsibleModule(argument_spec=dict(key=dict(type='str', required=True),
                                              value=dict(type='raw', required=True)),
                           supports_check_mode=True)
    module.exit_json(changed=True, **{module.params['key']: module.params['value']})


if __name__ == '__main__':
    main()
'''

DEPLOY = '''\
- name: Deploy
  hosts: app
  gather_facts: false
  tasks:
    - name: Open the transaction
      failsafe_echo:
        key: failsafe_transaction
        value: &txn
          txid: "tx-{{ inventory_hostname }}"
          run_id: run-behaviour
          name: app
          state_dir: "{{ site }}/state/{{ inventory_hostname }}"
          release: r2
          previous_release: r1
          app_root: /srv/app
          status: open

    - name: Try the fast path
      block:
        - name: Fast path fails
          ansible.builtin.fail:
            msg: fast path unavailable
      rescue:
        - name: Take the slow path
          ansible.builtin.debug:
            msg: slow path

    - name: Restart the app
      ansible.builtin.command: /bin/sh -c "echo 'db password=%(secret)s rejected' >&2; exit 3"
      when: inventory_hostname in (fail_hosts | default([]))

    - name: Commit the transaction
      failsafe_echo:
        key: failsafe_transaction
        value:
          <<: *txn
          status: committed
''' % {'secret': DB_SECRET}

ROLLBACK = '''\
- name: Roll back
  hosts: all
  gather_facts: false
  tasks:
    - name: Take a long time
      ansible.builtin.command: sleep {{ rollback_sleep }}
      when: rollback_sleep is defined

    - name: Report what was restored
      # debug with `var` returns the variable under its own name: the simplest way to return failsafe_rollback
      ansible.builtin.debug:
        var: failsafe_rollback
      vars:
        failsafe_rollback:
          target_release: "{{ failsafe_rollback_hosts[inventory_hostname].previous_release }}"
          restored: [/srv/app/current]
          verified: true

    - name: Record what the rollback was given
      ansible.builtin.copy:
        dest: "{{ site }}/{{ inventory_hostname }}.marker"
        mode: '0644'
        content: "{{ {'host': failsafe_rollback_hosts[inventory_hostname],
                      'run_id': failsafe_rollback_run_id,
                      'incident': failsafe_rollback_incident,
                      'release_version': release_version | default(none)} | to_json }}"

    - name: Fail where asked
      ansible.builtin.fail:
        msg: restore failed
      when: inventory_hostname in (rollback_fail_hosts | default([]))
'''


@pytest.fixture
def site(tmp_path):
    (tmp_path / 'library').mkdir()
    (tmp_path / 'library' / 'failsafe_echo.py').write_text(ECHO_MODULE)
    (tmp_path / 'deploy.yml').write_text(DEPLOY)
    (tmp_path / 'rollback.yml').write_text(ROLLBACK)
    (tmp_path / 'inventory.ini').write_text(textwrap.dedent('''\
        [app]
        h1
        h2

        [app:vars]
        ansible_connection=local
        ansible_python_interpreter=%s
        site=%s
        ''' % (sys.executable, tmp_path)))
    return tmp_path


@pytest.fixture
def receiver():
    r = Receiver('/hooks/%s' % HOOK_TOKEN)
    yield r
    r.close()


def run_playbook(site, receiver=None, extra_vars=None, **settings):
    env = dict((k, v) for k, v in os.environ.items() if not k.startswith(('FAILSAFE_', 'ANSIBLE_')))
    env.update({
        'PATH': BIN + os.pathsep + env.get('PATH', ''),
        'ANSIBLE_COLLECTIONS_PATH': os.path.join(ROOT, '.build', 'collections'),
        'ANSIBLE_COLLECTIONS_SCAN_SYS_PATH': 'false',
        'ANSIBLE_HOME': str(site / 'ansible-home'),
        'ANSIBLE_LOCAL_TEMP': str(site / 'ansible-home' / 'tmp'),
        'ANSIBLE_CALLBACKS_ENABLED': 'failsafe.deploy.auto_rollback',
        'ANSIBLE_NOCOLOR': '1',
        'FAILSAFE_ROLLBACK_PLAYBOOK': 'rollback.yml',
        'FAILSAFE_REPORT_DIR': str(site / 'incidents'),
    })
    if receiver is not None:
        env['FAILSAFE_WEBHOOK_URL'] = receiver.url
    for key, value in settings.items():
        env['FAILSAFE_' + key.upper()] = str(value)
    cmd = [os.path.join(BIN, 'ansible-playbook'), '-i', str(site / 'inventory.ini'), 'deploy.yml',
           '-e', 'release_version=2.0']
    if extra_vars:
        cmd += ['-e', json.dumps(extra_vars)]
    start = time.time()
    proc = subprocess.run(cmd, cwd=str(site), env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, universal_newlines=True, timeout=180, check=False)
    proc.elapsed = time.time() - start
    assert_no_ignored_callback_errors(proc.stdout, where=' '.join(cmd))
    return proc


def incident(site):
    reports = sorted(p for p in (site / 'incidents').glob('inc-*.json') if '.rollback' not in p.name)
    assert len(reports) == 1, reports
    data = json.loads(reports[0].read_text())
    return data, reports[0], reports[0].with_suffix('.md')


def spool_events(site):
    path = site / 'incidents' / 'alerts.jsonl'
    return [json.loads(line)['event'] for line in path.read_text().splitlines()] if path.exists() else []


def everything_written(site, proc, receiver):
    text = proc.stdout + json.dumps(receiver.events if receiver else [])
    for path in (site / 'incidents').iterdir():
        text += path.read_text()
    return text


def test_failed_deploy_is_rolled_back_alerted_and_written_up(site, receiver):
    proc = run_playbook(site, receiver, extra_vars={'fail_hosts': ['h1']})
    out = proc.stdout
    assert proc.returncode == 2, out   # the deploy failed: never reported as a success

    # every host that opened a transaction was rolled back (h2 had even committed), with the parent's vars
    for host in ('h1', 'h2'):
        marker = json.loads((site / ('%s.marker' % host)).read_text())
        assert marker['host']['txid'] == 'tx-%s' % host
        assert marker['host']['state_dir'] == '%s/state/%s' % (site, host)
        assert marker['host']['previous_release'] == 'r1'
        assert marker['run_id'] == 'run-behaviour'
        assert marker['release_version'] == '2.0'   # -e passed through to the child

    data, json_path, md_path = incident(site)
    assert data['outcome'] == 'rolled_back'
    assert [(f['host'], f['task'], f['cause']) for f in data['failures']] == [('h1', 'Restart the app', 'script_error')]
    line = DEPLOY.splitlines().index('    - name: Restart the app') + 1
    assert data['failures'][0]['path'] == '%s/deploy.yml:%d' % (site, line)
    assert sorted(f['task'] for f in data['ignored_failures']) == ['Fast path fails', 'Fast path fails']
    assert data['summary']['scope_hosts'] == ['h1', 'h2']
    assert data['summary']['verification'] == 'passed on every host'
    assert data['rollback']['rc'] == 0
    assert data['rollback']['hosts']['h2']['restored']['target_release'] == 'r1'
    assert data['incident_id'] == json.loads((site / 'h1.marker').read_text())['incident']
    md = md_path.read_text()
    assert 'ROLLED BACK' in md and '| h1 | Restart the app |' in md and 'script_error' in md

    assert spool_events(site) == ['deploy_failed', 'rolled_back']
    assert receiver.kinds() == ['deploy_failed', 'rolled_back']
    assert receiver.events[0]['host'] == 'h1' and receiver.events[0]['task'] == 'Restart the app'

    assert 'rollback | PLAY [Roll back]' in out   # the child's output is echoed
    assert 'failsafe auto_rollback: ROLLED BACK' in out
    assert str(json_path) in out and str(md_path) in out and str(site / 'incidents' / 'alerts.jsonl') in out
    assert 'ROLLBACK FAILED' not in out

    leaked = everything_written(site, proc, receiver)
    assert HOOK_TOKEN not in leaked
    report_and_alerts = json_path.read_text() + md_path.read_text() + json.dumps(receiver.events)
    assert DB_SECRET not in report_and_alerts


def test_rescued_failure_starts_no_rollback(site, receiver):
    proc = run_playbook(site, receiver)
    assert proc.returncode == 0, proc.stdout
    assert not list(site.glob('*.marker'))
    assert spool_events(site) == [] and receiver.kinds() == []
    assert not list(site.glob('incidents/inc-*'))
    assert 'no failure, no rollback needed' in proc.stdout


def test_failed_rollback_is_loud(site, receiver):
    proc = run_playbook(site, receiver, extra_vars={'fail_hosts': ['h1'], 'rollback_fail_hosts': ['h2']})
    assert proc.returncode == 2
    assert 'ROLLBACK FAILED' in proc.stdout
    data, _json_path, md_path = incident(site)
    assert data['outcome'] == 'rollback_failed'
    assert data['rollback']['hosts']['h2']['status'] == 'failed'
    assert data['rollback']['hosts']['h1']['status'] == 'ok'
    assert 'rollback playbook exited 2' in data['summary']['reason']
    assert md_path.read_text().startswith('# Incident %s: ROLLBACK FAILED' % data['incident_id'])
    assert spool_events(site) == ['deploy_failed', 'rollback_failed']
    assert receiver.kinds() == ['deploy_failed', 'rollback_failed']
    assert receiver.events[-1]['severity'] == 'critical'


def test_scope_failed_rolls_back_only_the_failed_host(site):
    proc = run_playbook(site, extra_vars={'fail_hosts': ['h2']}, rollback_scope='failed')
    assert proc.returncode == 2, proc.stdout
    assert (site / 'h2.marker').exists() and not (site / 'h1.marker').exists()
    data = incident(site)[0]
    assert data['outcome'] == 'rolled_back' and data['summary']['scope_hosts'] == ['h2']


def test_rollback_that_outlives_its_timeout_is_killed_and_failed(site):
    proc = run_playbook(site, extra_vars={'fail_hosts': ['h1'], 'rollback_sleep': 60}, rollback_timeout=4)
    assert proc.returncode == 2
    assert proc.elapsed < 45
    assert 'ROLLBACK FAILED' in proc.stdout
    data = incident(site)[0]
    assert data['outcome'] == 'rollback_failed' and data['rollback']['timed_out'] is True
    assert 'did not finish within 4 s' in data['summary']['reason']
    assert not list(site.glob('*.marker'))
    assert spool_events(site) == ['deploy_failed', 'rollback_failed']


def test_ansible_doc_renders():
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=os.path.join(ROOT, '.build', 'collections'),
               PATH=BIN + os.pathsep + os.environ.get('PATH', ''))
    proc = subprocess.run([os.path.join(BIN, 'ansible-doc'), '-t', 'callback', 'failsafe.deploy.auto_rollback'],
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True,
                          timeout=60, check=False)
    assert proc.returncode == 0, proc.stdout
    for option in ('rollback_scope', 'webhook_url', 'FAILSAFE_ROLLBACK_TIMEOUT', 'failsafe_auto_rollback'):
        assert option in proc.stdout


def test_under_ansible_runner_as_awx_runs_it(site, receiver):
    """ansible-runner forces its own stdout callback and passes the inventory only on the command line; the
    rollback child must still get the inventory, lose awx_display and load this callback in child mode."""
    ansible_runner = require_module('ansible_runner', 'ansible-runner is missing (requirements-dev.txt)')
    private = site / 'runner'
    (private / 'project').mkdir(parents=True)
    for name in ('deploy.yml', 'rollback.yml', 'library'):
        os.symlink(str(site / name), str(private / 'project' / name))
    envvars = {
        'PATH': BIN + os.pathsep + os.environ.get('PATH', ''),
        'ANSIBLE_COLLECTIONS_PATH': os.path.join(ROOT, '.build', 'collections'),
        'ANSIBLE_COLLECTIONS_SCAN_SYS_PATH': 'false',
        'ANSIBLE_HOME': str(site / 'ansible-home'),
        'ANSIBLE_LOCAL_TEMP': str(site / 'ansible-home' / 'tmp'),
        'ANSIBLE_CALLBACKS_ENABLED': 'failsafe.deploy.auto_rollback',
        'FAILSAFE_ROLLBACK_PLAYBOOK': 'rollback.yml',
        'FAILSAFE_REPORT_DIR': str(site / 'incidents'),
        'FAILSAFE_WEBHOOK_URL': receiver.url,
        'JOB_ID': '4711',
    }
    saved = dict((k, os.environ.pop(k)) for k in list(os.environ) if k.startswith(('FAILSAFE_', 'ANSIBLE_')))
    try:
        result = ansible_runner.run(private_data_dir=str(private), playbook='deploy.yml',
                                    inventory=str(site / 'inventory.ini'), envvars=envvars,
                                    extravars={'fail_hosts': ['h1'], 'release_version': '2.0'}, quiet=True,
                                    timeout=180)
    finally:
        os.environ.update(saved)
    assert result.status == 'failed' and result.rc == 2
    for host in ('h1', 'h2'):
        marker = json.loads((site / ('%s.marker' % host)).read_text())
        assert marker['release_version'] == '2.0' and marker['host']['txid'] == 'tx-%s' % host
    data = incident(site)[0]
    assert data['outcome'] == 'rolled_back'
    assert receiver.kinds() == ['deploy_failed', 'rolled_back']
    log = (site / 'incidents' / (data['incident_id'] + '.rollback.log')).read_text()
    assert '--inventory %s' % (site / 'inventory.ini') in log
    assert 'PLAY RECAP' in log   # the default stdout callback, not awx_display
    out = result.stdout.read()
    assert 'ROLLED BACK' in out
    assert_no_ignored_callback_errors(out, list(result.events), log, where='ansible-runner job')


@pytest.mark.slow
def test_given_a_real_deploy_state_when_a_deploy_fails_then_the_real_rollback_playbook_restores_it(local_deploy):
    """No fake here: the callback starts failsafe.deploy.rollback, which restores the snapshot of the real deploy;
    what the incident says was restored and verified must be what the host really is."""
    d = local_deploy
    good = d.deploy('1.0.0')
    assert good.returncode == 0, good.stdout[-6000:]
    before = d.digest()
    bad = d.deploy('3.0.0')   # its health check fails after the switch
    assert bad.returncode == 2, bad.stdout[-6000:]

    reports = d.incident_reports()
    assert len(reports) == 1
    with open(reports[0]) as f:
        data = json.load(f)
    assert data['outcome'] == 'rolled_back'
    assert data['rollback']['playbook'] == 'failsafe.deploy.rollback'
    assert data['rollback']['rc'] == 0
    with open(data['rollback']['log']) as f:
        log = f.read()
    assert 'PLAY [Roll back to the last verified state]' in log
    assert 'TASK [failsafe.deploy.rollback : Undo the transaction, check health and prove the restore]' in log

    journal = d.journal()
    host = data['rollback']['hosts']['localhost']
    assert host['status'] == 'ok' and host['verified'] is True
    assert host['restored']['txid'] == journal['txid'] == data['transactions']['localhost']['txid']
    assert host['restored']['failed_release'] == '3.0.0' and host['restored']['target_release'] == '1.0.0'
    assert os.path.join(d.app_root, 'current') in host['restored']['restored']
    assert data['summary']['verification'] == 'passed on every host'

    # the host really is what the incident claims
    assert d.digest() == before
    assert d.current() == 'releases/1.0.0'
    assert journal['status'] == 'rolled_back' and journal['release'] == '3.0.0'
    ledger = d.ledger()
    assert ledger['releases']['3.0.0']['state'] == 'failed' and ledger['last_verified'] == '1.0.0'
    assert not os.path.exists(d.lock_path())
    assert d.http('/version') == (200, '1.0.0')
    assert d.receiver.kinds() == ['deploy_failed', 'rolled_back']   # this module's receiver (see the fixture)
