# -*- coding: utf-8 -*-
# Copyright: Contributors to failsafe.deploy
# SPDX-License-Identifier: GPL-3.0-or-later
"""The auto_rollback callback's gc_freeze option, end to end: a real ansible-playbook run's worker (the process that
runs a task) starts with the controller's objects frozen when the callback is enabled, and with none frozen when
gc_freeze is false or the callback is not enabled.

The worker says so itself: a lookup plugin beside the playbook runs in the worker and returns the worker's
``gc.get_freeze_count()`` and process id, which must not be ansible-playbook's own."""

import os
import re
import subprocess

import pytest

from support import ROOT, VENV_BIN, assert_no_ignored_callback_errors

LOOKUP = '''
import gc
import os

from ansible.plugins.lookup import LookupBase


class LookupModule(LookupBase):
    def run(self, terms, variables=None, **kwargs):
        return ['frozen=%d pid=%d' % (gc.get_freeze_count(), os.getpid())]
'''

PLAYBOOK = '''
- name: Report the worker's frozen objects
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Ask the worker
      ansible.builtin.debug:
        msg: "WORKER {{ lookup('freeze_count') }}"
'''


@pytest.fixture(scope='module')
def project(tmp_path_factory):
    base = tmp_path_factory.mktemp('gc-freeze')
    (base / 'lookup_plugins').mkdir()
    (base / 'lookup_plugins' / 'freeze_count.py').write_text(LOOKUP)
    (base / 'play.yml').write_text(PLAYBOOK)
    (base / 'ansible.cfg').write_text('[defaults]\nretry_files_enabled = false\n')
    return base


def worker(project, callback=True, **settings):
    env = dict(os.environ, PATH=VENV_BIN + os.pathsep + os.environ['PATH'],
               ANSIBLE_COLLECTIONS_PATH=os.path.join(ROOT, '.build', 'collections'),
               ANSIBLE_COLLECTIONS_SCAN_SYS_PATH='false', ANSIBLE_NOCOLOR='1', ANSIBLE_CONFIG=str(project / 'ansible.cfg'),
               ANSIBLE_HOME=str(project / 'ansible-home'), FAILSAFE_REPORT_DIR=str(project / 'incidents'),
               FAILSAFE_SPOOL_PATH=str(project / 'incidents' / 'alerts.jsonl'))
    env.pop('FAILSAFE_GC_FREEZE', None)
    env.update(settings)
    env.pop('ANSIBLE_STDOUT_CALLBACK', None)
    if callback:
        env['ANSIBLE_CALLBACKS_ENABLED'] = 'failsafe.deploy.auto_rollback'
    else:
        env.pop('ANSIBLE_CALLBACKS_ENABLED', None)
    proc = subprocess.Popen(['ansible-playbook', '-i', 'localhost,', '-c', 'local', 'play.yml'], env=env,
                            cwd=str(project), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out = proc.communicate(timeout=300)[0]
    assert proc.returncode == 0, out
    assert_no_ignored_callback_errors(out)
    found = re.search(r'WORKER frozen=(\d+) pid=(\d+)', out)
    assert found, out
    assert int(found.group(2)) != proc.pid, 'the lookup ran in ansible-playbook itself, not in a worker'
    return int(found.group(1))


def test_with_the_callback_enabled_a_worker_starts_with_the_controllers_objects_frozen(project):
    assert worker(project) > 10000


@pytest.mark.parametrize('callback, settings', [(True, {'FAILSAFE_GC_FREEZE': 'false'}), (False, {})],
                         ids=['gc_freeze-false', 'callback-not-enabled'])
def test_off_or_without_the_callback_a_worker_starts_with_nothing_frozen(project, callback, settings):
    assert worker(project, callback, **settings) == 0
