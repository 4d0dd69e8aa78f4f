# -*- coding: utf-8 -*-
# Copyright: Contributors to failsafe.deploy
# SPDX-License-Identifier: GPL-3.0-or-later
"""The auto_rollback callback's payload_cache option, end to end, with real ansible-playbook runs on a copy of this
collection: the first run builds the payload of the module it calls and keeps it; the next run does not build it
(ansible-core's own debug log says which it did) and the module runs from the kept payload; a change to a
module_utils file is shipped at once (the changed code runs on the host, not the kept payload); with
payload_cache=false every run builds its payload and nothing is kept."""

import os
import shutil
import subprocess

import pytest

from support import ROOT, VENV_BIN, assert_no_ignored_callback_errors

PLAYBOOK = '''
- name: Read the deploy history
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Call a module of the collection
      failsafe.deploy.history_info:
        name: app
        state_dir: "{{ playbook_dir }}/state"
'''
MODULE = 'ansible_collections.failsafe.deploy.plugins.modules.history_info'
EDITED = 'plugins/module_utils/_layers.py'  # imported by history_info


@pytest.fixture(scope='module')
def project(tmp_path_factory):
    base = tmp_path_factory.mktemp('payload-cache')
    collection = base / 'collections' / 'ansible_collections' / 'failsafe' / 'deploy'
    for rel in ('plugins', 'meta'):
        shutil.copytree(os.path.join(ROOT, rel), str(collection / rel), ignore=shutil.ignore_patterns('__pycache__'))
    shutil.copy(os.path.join(ROOT, 'galaxy.yml'), str(collection / 'galaxy.yml'))
    (base / 'play.yml').write_text(PLAYBOOK)
    (base / 'ansible.cfg').write_text('[defaults]\nretry_files_enabled = false\ninterpreter_python = /usr/bin/python3\n')
    return base


def run(project, **settings):
    """One ansible-playbook run: (return code, output, whether it built the module's payload, whether it used a
    cached one)."""
    env = dict(os.environ, PATH=VENV_BIN + os.pathsep + os.environ['PATH'],
               ANSIBLE_COLLECTIONS_PATH=str(project / 'collections'), ANSIBLE_COLLECTIONS_SCAN_SYS_PATH='false',
               ANSIBLE_NOCOLOR='1', ANSIBLE_CONFIG=str(project / 'ansible.cfg'), ANSIBLE_HOME=str(project / 'home'),
               ANSIBLE_CALLBACKS_ENABLED='failsafe.deploy.auto_rollback', ANSIBLE_DEBUG='1',
               FAILSAFE_REPORT_DIR=str(project / 'incidents'),
               FAILSAFE_SPOOL_PATH=str(project / 'incidents' / 'alerts.jsonl'),
               FAILSAFE_PAYLOAD_CACHE_DIR=str(project / 'store'))
    for name in ('FAILSAFE_PAYLOAD_CACHE', 'ANSIBLE_STDOUT_CALLBACK'):
        env.pop(name, None)
    env.update(settings)
    for name, value in settings.items():
        if value is None:
            del env[name]
    proc = subprocess.run(['ansible-playbook', '-i', 'localhost,', '-c', 'local', 'play.yml'], env=env,
                          cwd=str(project), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300,
                          check=False)
    lines = proc.stdout.splitlines()
    built = any('ANSIBALLZ: Creating module' in line for line in lines) and any(
        'Lock acquired' in line and MODULE + '-' in line for line in lines)
    cached = any('ANSIBALLZ: using cached module' in line and MODULE + '-' in line for line in lines)
    return proc.returncode, proc.stdout, built, cached


def entries(project):
    store = project / 'store'
    if not store.exists():
        return {}
    return {key: sorted(os.listdir(str(store / key))) for key in os.listdir(str(store))}


def test_a_payload_is_built_once_kept_and_built_again_when_its_code_changes(project):
    rc, out, built, cached = run(project)
    assert rc == 0, out[-3000:]
    assert_no_ignored_callback_errors(out)
    assert built and not cached, 'the first run builds the payload'
    kept = entries(project)
    assert list(kept.values()) == [[MODULE + '-ZIP_DEFLATED-none']], kept
    assert (project / 'store').stat().st_mode & 0o777 == 0o700

    rc, out, built, cached = run(project)
    assert rc == 0, out[-3000:]
    assert cached and not built, 'the second run uses the kept payload and builds none'
    assert entries(project) == kept

    # A module_utils file changes: the next run ships the changed code (it runs on the host), not the kept payload.
    edited = project / 'collections' / 'ansible_collections' / 'failsafe' / 'deploy' / EDITED
    original = edited.read_text()
    edited.write_text(original + '\nraise RuntimeError("the edited module_utils ran")\n')
    try:
        rc, out, built, cached = run(project)
        assert rc != 0 and 'the edited module_utils ran' in out, out[-3000:]
        assert built and not cached
        assert len(entries(project)) == 2, 'the changed code is kept under a key of its own'
    finally:
        edited.write_text(original)
    rc, out, built, cached = run(project)
    assert rc == 0 and cached and not built, 'back to the first code: its kept payload again'


def test_with_payload_cache_false_every_run_builds_and_nothing_is_kept(project):
    before = entries(project)
    for dummy in range(2):
        rc, out, built, cached = run(project, FAILSAFE_PAYLOAD_CACHE='false')
        assert rc == 0, out[-3000:]
        assert built and not cached
    assert entries(project) == before


def test_not_set_the_store_is_the_users_cache_directory_and_nothing_lands_where_the_run_is(project):
    """The default is $XDG_CACHE_HOME/failsafe-deploy/payloads: never the working directory, which an empty path
    would resolve to."""
    before = sorted(os.listdir(str(project)))
    xdg = project / 'xdg'
    rc, out, built, cached = run(project, FAILSAFE_PAYLOAD_CACHE_DIR=None, XDG_CACHE_HOME=str(xdg))
    assert rc == 0, out[-3000:]
    assert built and not cached
    store = xdg / 'failsafe-deploy' / 'payloads'
    assert [sorted(os.listdir(str(store / key))) for key in os.listdir(str(store))] == [
        [MODULE + '-ZIP_DEFLATED-none']]
    assert sorted(os.listdir(str(project))) == sorted(before + ['xdg']), 'the run left something in its directory'
    rc, out, built, cached = run(project, FAILSAFE_PAYLOAD_CACHE_DIR=None, XDG_CACHE_HOME=str(xdg))
    assert rc == 0 and cached and not built, out[-3000:]
