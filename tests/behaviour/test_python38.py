# -*- coding: utf-8 -*-
# Copyright: Contributors to failsafe.deploy
# SPDX-License-Identifier: GPL-3.0-or-later
"""The modules' claim of Python 3.8 on managed hosts, tested: a real deploy and an automatic rollback on fleet
hosts whose ansible_python_interpreter is a Python 3.8.

The 3.8 interpreter comes from pyenv under /root, which the hosts do not see (their /root is their own): the
fleet binds it in (Fleet(shared_paths=...)). A health check of the verify step (and so of the rollback, which runs
the deploy's checks) records the executable of the process that runs failsafe.deploy.health_check: the parent of
the probe command. Every module of a run goes through the same interpreter.
"""

import glob
import json
import os
import re
import subprocess
import sys

import pytest

from support import ROOT, fleet_env, load_example_build, tree_digest

if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from tests.fleet.pytest_fleet import fleet  # noqa: E402,F401  pylint: disable=wrong-import-position,unused-import
from tests.requires import require  # noqa: E402  pylint: disable=wrong-import-position

pytestmark = pytest.mark.fleet

PY38 = os.environ.get('FAILSAFE_PY38', '/root/.pyenv/versions/3.8.18/bin/python3.8')
APP_VARS = os.path.join(ROOT, 'tests', 'fleet', 'app-vars.yml')
CAPTURED = ('/srv/app/current', '/srv/app/shared', '/srv/supervisor/conf.d/app.conf')
MARKER = '/srv/module-python.log'
# Run by the probe command, a child of the health_check module: appends the module process's executable.
PROBE = ("import os; exe = os.readlink('/proc/%d/exe' % os.getppid()); "
         "open('" + MARKER + "', 'a').write(exe + '\\n'); print(exe)")
VERSION_PROBE = ("import urllib.request;"
                 "print(urllib.request.urlopen('http://127.0.0.1:8080/version', timeout=5).read().decode().strip())")


class Py38Fleet:
    def __init__(self, hosts, base):
        self.hosts = hosts
        self.base = base
        self.dist = os.path.join(base, 'dist')
        load_example_build().build(self.dist, 0, [('1.0.0', 'good'), ('2.0.0', 'good'), ('3.0.0', 'unhealthy')])
        # The hosts' interpreter, set where an operator sets it: in the inventory.
        with open(hosts.inventory_path, encoding='utf-8') as handle:
            text = handle.read()
        text, count = re.subn(r'ansible_python_interpreter=\S+', 'ansible_python_interpreter=' + PY38, text)
        assert count == 1, text
        self.inventory = os.path.join(base, 'inventory-py38.ini')
        with open(self.inventory, 'w', encoding='utf-8') as handle:
            handle.write(text)
        checks = {'failsafe_verify_checks': [
            {'name': 'module python', 'type': 'command', 'cmd': ['/usr/bin/python3', '-c', PROBE],
             'body_regex': 'python3\\.8$', 'retries': 1},
            {'name': 'health', 'url': 'http://127.0.0.1:8080/health', 'body_regex': '"status": *"ok"',
             'retries': 6, 'sleep': 0.5, 'timeout': 2},
        ]}
        self.checks = os.path.join(base, 'checks.json')
        with open(self.checks, 'w', encoding='utf-8') as handle:
            json.dump(checks, handle)
        self.env = fleet_env(hosts, base, self.dist)
        self.env['FAILSAFE_REPORT_DIR'] = os.path.join(base, 'incidents')

    def deploy(self, version):
        argv = ['ansible-playbook', '-i', self.inventory, 'failsafe.deploy.deploy', '-e', '@' + APP_VARS,
                '-e', '@' + self.checks, '-e', 'release_version=%s' % version]
        proc = subprocess.run(argv, env=self.env, cwd=self.base, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, timeout=600, check=False)
        with open(os.path.join(self.base, 'runs.log'), 'a', encoding='utf-8') as log:
            log.write('$ %s\n%s\nrc=%s\n' % (' '.join(argv), proc.stdout, proc.returncode))
        return proc

    def path(self, host, path):
        return self.hosts.host_path(host, path)

    def read_json(self, host, path):
        with open(self.path(host, path), encoding='utf-8') as handle:
            return json.load(handle)

    def current(self, host):
        return os.path.basename(os.readlink(self.path(host, '/srv/app/current')))

    def served(self, host):
        result = self.hosts.run(host, ['/usr/bin/python3', '-c', VERSION_PROBE], timeout=30)
        return result.stdout.strip() if result.returncode == 0 else 'unhealthy: %s' % result.stderr.strip()[-200:]

    def digest(self, host):
        return tree_digest([self.path(host, p) for p in CAPTURED])

    def module_pythons(self, host):
        try:
            with open(self.path(host, MARKER), encoding='utf-8') as handle:
                return handle.read().split()
        except FileNotFoundError:
            return []


def test_given_hosts_on_python_38_when_a_good_then_a_failing_release_is_deployed_then_it_is_rolled_back(fleet, tmp_path):
    # The machines CI runs on carry pyenv's 3.8 (/root/.pyenv/versions): there the claim is always tested.
    require(os.access(PY38, os.X_OK), 'no Python 3.8 at %s (FAILSAFE_PY38) to test the hosts with' % PY38)
    py38_home = os.path.dirname(os.path.dirname(PY38))
    d = Py38Fleet(fleet(2, shared_paths=[py38_home]), str(tmp_path))
    names = d.hosts.names
    # The hosts really see that interpreter, and it is a 3.8.
    for host in names:
        seen = d.hosts.ssh(host, '%s -c "import sys; print(sys.version_info[:2])"' % PY38)
        assert seen.stdout.strip() == '(3, 8)', seen.stdout + seen.stderr

    for version in ('1.0.0', '2.0.0'):
        good = d.deploy(version)
        assert good.returncode == 0, good.stdout[-8000:]
        for host in names:
            assert d.current(host) == version and d.served(host) == version
    before = {host: d.digest(host) for host in names}
    probes_before = {host: len(d.module_pythons(host)) for host in names}
    assert all(probes_before.values()), probes_before

    bad = d.deploy('3.0.0')
    assert bad.returncode != 0, bad.stdout[-8000:]
    for host in names:
        assert d.current(host) == '2.0.0', host
        assert d.served(host) == '2.0.0', host
        assert d.digest(host) == before[host], host
        journal = d.read_json(host, '/var/lib/failsafe-deploy/app/journal.json')
        assert journal['status'] == 'rolled_back' and journal['release'] == '3.0.0', journal
        assert journal['outcome']['verified'] is True, journal['outcome']
        ledger = d.read_json(host, '/srv/app/.failsafe/ledger.json')
        assert ledger['releases']['3.0.0']['state'] == 'failed' and ledger['last_verified'] == '2.0.0'
        assert not os.path.exists(d.path(host, '/var/lib/failsafe-deploy/app/lock.json'))
        # Every module process the probes saw, in the deploys and in the rollback, was that Python 3.8; the
        # rollback (which runs the deploy's checks on the restored release) added its own.
        pythons = d.module_pythons(host)
        assert pythons and set(pythons) == {os.path.realpath(PY38)}, pythons
        assert len(pythons) >= probes_before[host] + 2, (pythons, probes_before[host])
    incidents = [p for p in glob.glob(os.path.join(str(tmp_path), 'incidents', 'inc-*.json')) if p.count('.') == 1]
    assert len(incidents) == 1, incidents
    with open(incidents[0], encoding='utf-8') as handle:
        assert json.load(handle)['outcome'] == 'rolled_back'
