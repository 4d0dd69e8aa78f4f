# -*- coding: utf-8 -*-
# Copyright: Contributors to failsafe.deploy
# SPDX-License-Identifier: GPL-3.0-or-later
"""AWX job slicing on a 4-host namespace fleet: one deploy playbook run as two ansible-runner jobs side by side (the
slices of a sliced job template: every other host, the same extra vars, one workflow job id), the auto_rollback
callback deferring to the workflow as it does under AWX. One host of the second slice fails after its verification;
the first slice commits. The workflow's failure path, a rollback job fed with the artifacts of both slices (merged
the way AWX passes parent artifacts on: key by key), must roll back every host of both slices, the committed ones
included, to the previous verified release (current symlink and /version checked on every host)."""

import json
import os
import shutil
import subprocess

import pytest
import yaml

from support import DEMO, ROOT, assert_no_ignored_callback_errors, fleet_env, load_example_build
from tests.requires import require_module

pytestmark = [pytest.mark.fleet, pytest.mark.slow]

APP_VARS = os.path.join(ROOT, 'tests', 'fleet', 'app-vars.yml')
VERSION_PROBE = ("import urllib.request;"
                 "print(urllib.request.urlopen('http://127.0.0.1:8080/version', timeout=5).read().decode().strip())")
WORKFLOW_JOB_ID = 7300
FAULT = '''\
- name: Fail on one host of the second slice, after its verification
  ansible.builtin.fail:
    msg: injected failure on {{ inventory_hostname }}
  when: inventory_hostname == failing_host
'''


def _runner_env(env):
    """What a job's environment holds: the fleet's ANSIBLE_/FAILSAFE_ settings without ANSIBLE_CONFIG (the
    project's own ansible.cfg enables the callback), and the callback deferring to the workflow."""
    out = dict((k, v) for k, v in env.items() if k.startswith(('FAILSAFE_', 'ANSIBLE_', 'PATH')))
    out.pop('ANSIBLE_CONFIG', None)
    out['FAILSAFE_DEFER_TO_WORKFLOW'] = 'true'
    return out


def _stats(r):
    found = [e for e in r.events if e['event'] == 'playbook_on_stats']
    assert len(found) == 1
    return found[0]['event_data']


def _version(fleet, host):
    result = fleet.run(host, ['/usr/bin/python3', '-c', VERSION_PROBE], timeout=30)
    return result.stdout.strip() if result.returncode == 0 else 'unhealthy: %s' % result.stderr.strip()[-200:]


def _current(fleet, host):
    try:
        return os.path.basename(os.readlink(fleet.host_path(host, '/srv/app/current')))
    except OSError:
        return None


def _journal(fleet, host):
    with open(fleet.host_path(host, '/var/lib/failsafe-deploy/app/journal.json')) as handle:
        return json.load(handle)


def test_a_failure_in_one_slice_rolls_back_the_hosts_of_both(fleet, tmp_path):
    ansible_runner = require_module('ansible_runner', 'ansible-runner is missing (requirements-dev.txt)')
    hosts = fleet(4)
    base = str(tmp_path)
    dist = os.path.join(base, 'dist')
    load_example_build().build(dist, 0, [('1.0.0', 'good'), ('2.0.0', 'good')])
    env = fleet_env(hosts, base, dist)
    setup = subprocess.run(['ansible-playbook', '-i', hosts.inventory_path, 'failsafe.deploy.deploy', '-e',
                            '@' + APP_VARS, '-e', 'release_version=1.0.0'], env=env, cwd=base,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600, check=False)
    assert setup.returncode == 0, setup.stdout[-4000:]

    project = os.path.join(base, 'project')
    os.makedirs(project)
    shutil.copy(os.path.join(DEMO, 'ansible.cfg'), os.path.join(project, 'ansible.cfg'))
    for name in ('deploy', 'rollback'):
        with open(os.path.join(project, name + '.yml'), 'w') as f:
            f.write('---\n- name: Run failsafe.deploy.%s\n  ansible.builtin.import_playbook: failsafe.deploy.%s\n'
                    % (name, name))
    with open(os.path.join(project, 'fault.yml'), 'w') as f:
        f.write(FAULT)

    names = hosts.names
    slices = [names[0::2], names[1::2]]          # AWX gives slice k every n-th host from k
    failing = slices[1][0]
    envvars = _runner_env(env)
    saved = dict((k, os.environ.pop(k)) for k in list(os.environ) if k.startswith(('FAILSAFE_', 'ANSIBLE_')))
    try:
        jobs = []
        for number, members in enumerate(slices, 1):
            extravars = {'release_version': '2.0.0', 'awx_job_id': WORKFLOW_JOB_ID + number,
                         'awx_workflow_job_id': WORKFLOW_JOB_ID, 'failing_host': failing,
                         'failsafe_verify_after_tasks': os.path.join(project, 'fault.yml')}
            with open(APP_VARS) as handle:
                extravars.update(dict((k, v) for k, v in yaml.safe_load(handle).items() if k not in extravars))
            os.makedirs(os.path.join(base, 'job-slice%d' % number))
            slice_env = dict(envvars, FAILSAFE_REPORT_DIR=os.path.join(base, 'incidents-slice%d' % number))
            thread, runner = ansible_runner.run_async(
                private_data_dir=os.path.join(base, 'job-slice%d' % number), project_dir=project,
                ident='slice%d' % number, playbook='deploy.yml', inventory=hosts.inventory_path,
                limit=','.join(members), envvars=slice_env, extravars=extravars, quiet=True, timeout=600)
            jobs.append((thread, runner))
        for thread, dummy in jobs:
            thread.join(timeout=900)
        first, second = [runner for dummy, runner in jobs]
        for runner in (first, second):
            assert_no_ignored_callback_errors(list(runner.events), where='job events of %s' % runner.config.ident)
        assert (first.status, first.rc) == ('successful', 0)
        assert (second.status, second.rc) == ('failed', 2)
        run_id = 'awx-workflow-%d' % WORKFLOW_JOB_ID
        # slice 1 committed; slice 2 left its transactions to the workflow's failure path
        for host in slices[0]:
            assert (_journal(hosts, host)['status'], _journal(hosts, host)['run_id']) == ('committed', run_id)
            assert _current(hosts, host) == '2.0.0' and _version(hosts, host) == '2.0.0'
        assert _journal(hosts, failing)['status'] == 'open'

        # the failure node: one rollback job, fed with the artifacts of both slices, merged key by key as AWX does
        artifacts = {}
        for runner in (first, second):
            data = _stats(runner)['artifact_data']
            assert data['failsafe_rollback_run_id'] == run_id
            artifacts.update(data)
        with open(APP_VARS) as handle:
            rollback_vars = dict(yaml.safe_load(handle), **artifacts)
        os.makedirs(os.path.join(base, 'job-failure-node'))
        node = ansible_runner.run(
            private_data_dir=os.path.join(base, 'job-failure-node'), project_dir=project, ident='failure-node',
            playbook='rollback.yml', inventory=hosts.inventory_path, envvars=dict(
                envvars, FAILSAFE_DEFER_TO_WORKFLOW='false', FAILSAFE_REPORT_DIR=os.path.join(base, 'incidents-node')),
            extravars=rollback_vars, quiet=True, timeout=600)
        assert (node.status, node.rc) == ('successful', 0), ''.join(
            e.get('stdout') or '' for e in node.events)[-4000:]
    finally:
        os.environ.update(saved)

    for host in names:
        assert _current(hosts, host) == '1.0.0', (host, _current(hosts, host))
        assert _version(hosts, host) == '1.0.0', (host, _version(hosts, host))
        journal = _journal(hosts, host)
        assert (journal['status'], journal['release'], journal['run_id']) == ('rolled_back', '2.0.0', run_id), host
