"""An operator's own playbook, built from the modules alone: a configuration directory changed inside a transaction
(``deploy_state`` + ``snapshot``), no release and no service. When its validation fails, the callback rolls it back:
the files are byte-exact what they were, and no service command runs, because the transaction recorded none.

Real ansible-playbook runs on this machine with the auto_rollback callback enabled; ``supervisorctl`` and
``systemctl`` are shims first on PATH that record their arguments and fail.
"""
import hashlib
import json
import os
import stat
import subprocess

import pytest

from support import DEMO, ROOT, VENV_BIN, assert_no_ignored_callback_errors

pytestmark = pytest.mark.slow

SHIM = '''#!/bin/sh
echo "$(basename "$0") $*" >> "%s"
exit 1
'''

PLAYBOOK = '''---
- name: Change the configuration of myapp
  hosts: box
  gather_facts: false
%(connection)s  vars:
    own_dir: "{{ lookup('ansible.builtin.env', 'OWN_DIR') }}"
    state_dir: "{{ own_dir }}/state"
    conf_dir: "{{ own_dir }}/etc/myapp"
    run_id: "own-{{ lookup('ansible.builtin.env', 'OWN_RUN') }}"
  tasks:
    - name: Take the lock
      failsafe.deploy.deploy_state:
        path: "{{ state_dir }}"
        name: myapp
        state: locked
        run_id: "{{ run_id }}"

    - name: Open the transaction
      failsafe.deploy.deploy_state:
        path: "{{ state_dir }}"
        name: myapp
        state: open
        run_id: "{{ run_id }}"

    - name: Snapshot the configuration
      failsafe.deploy.snapshot:
        store: "{{ state_dir }}/snapshots"
        paths: ["{{ conf_dir }}"]
        state: present
      register: snap

    - name: Record the snapshot
      failsafe.deploy.deploy_state:
        path: "{{ state_dir }}"
        name: myapp
        state: step
        step: snapshot
        run_id: "{{ run_id }}"
        snapshots:
          files: "{{ snap.id }}"

    - name: Write the new configuration
      ansible.builtin.copy:
        dest: "{{ conf_dir }}/app.conf"
        content: "listen = nowhere\\n"
        mode: '0600'

    - name: Add a file
      ansible.builtin.copy:
        dest: "{{ conf_dir }}/extra.conf"
        content: "extra = 1\\n"
        mode: '0644'

    - name: Validate the configuration
      ansible.builtin.command: grep -q '^listen = 127' {{ conf_dir }}/app.conf
      changed_when: false

    - name: Commit
      failsafe.deploy.deploy_state:
        path: "{{ state_dir }}"
        name: myapp
        state: committed
        run_id: "{{ run_id }}"
'''


def digest(root):
    """Every path under root: type, mode, and content hash."""
    out = {}
    for here, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(dirs + files):
            path = os.path.join(here, name)
            st = os.lstat(path)
            if stat.S_ISREG(st.st_mode):
                with open(path, 'rb') as f:
                    out[path] = ('file', stat.S_IMODE(st.st_mode), hashlib.sha256(f.read()).hexdigest())
            else:
                out[path] = ('dir', stat.S_IMODE(st.st_mode))
    return out


@pytest.fixture
def own_site(tmp_path):
    site = tmp_path / 'site'
    conf = site / 'etc' / 'myapp'
    conf.mkdir(parents=True)
    (conf / 'app.conf').write_bytes(b'listen = 127.0.0.1:8080\n')
    (conf / 'app.conf').chmod(0o640)
    (conf / 'conf.d').mkdir()
    (conf / 'conf.d' / 'limits.conf').write_bytes(b'max = 10\n')
    shims = site / 'shims'
    shims.mkdir()
    record = site / 'service-commands.log'
    for name in ('supervisorctl', 'systemctl', 'supervisord', 'service'):
        path = shims / name
        path.write_text(SHIM % record)
        path.chmod(0o755)
    return site


def run_own_playbook(site, connection):
    """Run the operator's playbook: the inventory names the host without a connection when the play sets it."""
    inventory = site / 'inventory.yml'
    host = {'ansible_python_interpreter': '{{ ansible_playbook_python }}'}
    if connection == 'inventory':
        host['ansible_connection'] = 'local'
    inventory.write_text(json.dumps({'all': {'hosts': {'box': dict(host, ansible_host='127.0.0.1')}}}))
    playbook = site / 'own.yml'
    playbook.write_text(PLAYBOOK % {'connection': '  connection: local\n' if connection == 'play' else ''})
    incidents = site / 'incidents'
    env = dict(os.environ)
    for key in ('ANSIBLE_STDOUT_CALLBACK', 'ANSIBLE_CALLBACKS_ENABLED', 'FAILSAFE_CONTROLLER_PID', 'FAILSAFE_RUN_ID',
                'FAILSAFE_ROLLBACK_CHILD', 'FAILSAFE_WEBHOOK_URL'):
        env.pop(key, None)
    env.update({
        # the shims come first: any supervisorctl or systemctl the rollback runs is theirs
        'PATH': os.pathsep.join([str(site / 'shims'), VENV_BIN, os.environ['PATH']]),
        'ANSIBLE_CONFIG': os.path.join(DEMO, 'ansible.cfg'),
        'ANSIBLE_COLLECTIONS_PATH': os.path.join(ROOT, '.build', 'collections'),
        'ANSIBLE_COLLECTIONS_SCAN_SYS_PATH': 'false',
        'ANSIBLE_HOME': str(site / 'ansible-home'),
        'ANSIBLE_NOCOLOR': '1',
        'ANSIBLE_FORCE_COLOR': '0',
        'FAILSAFE_REPORT_DIR': str(incidents),
        'FAILSAFE_SPOOL_PATH': str(incidents / 'alerts.jsonl'),
        'OWN_DIR': str(site),
        'OWN_RUN': connection,
    })
    proc = subprocess.run([os.path.join(VENV_BIN, 'ansible-playbook'), '-i', str(inventory), str(playbook)], env=env,
                          cwd=str(site), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600,
                          check=False)
    assert_no_ignored_callback_errors(proc.stdout)
    return proc


def reports(site):
    incidents = site / 'incidents'
    found = sorted(p for p in incidents.glob('inc-*.json') if '.' not in p.name[:-len('.json')]) \
        if incidents.is_dir() else []
    return [json.loads(p.read_text()) for p in found]


@pytest.mark.parametrize('connection', ['inventory', 'play'])
def test_given_an_own_playbook_of_a_config_directory_when_its_validation_fails_then_it_is_rolled_back_untouched(
        own_site, connection):
    conf = own_site / 'etc' / 'myapp'
    before = digest(str(conf))

    proc = run_own_playbook(own_site, connection)

    out = proc.stdout
    assert proc.returncode == 2, out[-6000:]
    assert 'TASK [Validate the configuration]' in out
    # the configuration is byte-exact what it was: contents, modes, the added file gone
    assert digest(str(conf)) == before, out[-6000:]
    # the transaction recorded no service: no service command ran, not even one that fails
    record = own_site / 'service-commands.log'
    assert not record.exists(), record.read_text()
    found = reports(own_site)
    assert len(found) == 1, out[-6000:]
    incident = found[0]
    assert incident['outcome'] == 'rolled_back', out[-6000:]
    host = incident['rollback']['hosts']['box']
    assert host['status'] == 'ok' and host['verified'] is True
    assert 'ROLLED BACK' in out
    assert 'ROLLBACK FAILED' not in out
    with open(own_site / 'state' / 'myapp' / 'journal.json') as f:
        journal = json.load(f)
    assert journal['status'] == 'rolled_back'
    assert not (own_site / 'state' / 'myapp' / 'lock.json').exists()
