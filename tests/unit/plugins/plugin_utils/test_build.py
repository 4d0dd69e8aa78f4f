# -*- coding: utf-8 -*-
# Copyright: Contributors to failsafe.deploy
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Which build a deploy runs (_build): the archive's sha256, the collection's version from MANIFEST.json or
galaxy.yml, the git commit of a real checkout made here (and whether it has uncommitted changes), and the words the
reports and alerts use; a run's builds as the incident model collects them."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import hashlib
import json
import subprocess

from ansible_collections.failsafe.deploy.plugins.plugin_utils import _build
from ansible_collections.failsafe.deploy.plugins.plugin_utils._incident import DeployRun
from ansible_collections.failsafe.deploy.plugins.plugin_utils._redact import Redactor


def git(repo, *args):
    argv = ['git', '-C', str(repo), '-c', 'user.name=t', '-c', 'user.email=t@example.invalid'] + list(args)
    return subprocess.run(argv, check=True, stdout=subprocess.PIPE, text=True).stdout.strip()


def test_given_a_file_then_its_sha256_and_none_for_a_missing_one(tmp_path):
    path = tmp_path / 'app-1.0.0.tar.gz'
    path.write_bytes(b'x' * 3000000)
    assert _build.sha256_of(str(path), chunk=65536) == hashlib.sha256(b'x' * 3000000).hexdigest()
    assert _build.sha256_of(str(tmp_path / 'missing')) is None


def test_given_a_manifest_or_a_galaxy_file_then_the_collection_version(tmp_path):
    (tmp_path / 'galaxy.yml').write_text('namespace: failsafe\nname: deploy\nversion: "1.2.3"  # here\n')
    assert _build.collection_version(str(tmp_path)) == '1.2.3'
    (tmp_path / 'MANIFEST.json').write_text(json.dumps({'collection_info': {'version': '1.2.4'}}))
    assert _build.collection_version(str(tmp_path)) == '1.2.4'
    assert _build.collection_version(str(tmp_path / 'nowhere')) is None
    # this checkout's own
    assert _build.collection_version() is not None


def test_given_a_checkout_then_its_commit_and_whether_tracked_files_changed(tmp_path):
    repo = tmp_path / 'ops'
    (repo / 'plays').mkdir(parents=True)
    assert _build.playbook_commit(str(repo / 'plays')) == (None, None)   # not a checkout yet
    git(repo, 'init', '-q')
    (repo / 'plays' / 'deploy.yml').write_text('---\n')
    git(repo, 'add', 'plays/deploy.yml')
    git(repo, 'commit', '-q', '-m', 'one')
    head = git(repo, 'rev-parse', 'HEAD')
    assert _build.playbook_commit(str(repo / 'plays')) == (head, False)
    (repo / 'untracked.yml').write_text('x')   # untracked files do not make it dirty
    assert _build.playbook_commit(str(repo)) == (head, False)
    (repo / 'plays' / 'deploy.yml').write_text('--- # changed\n')
    assert _build.playbook_commit(str(repo)) == (head, True)
    assert _build.playbook_commit(None) == (None, None)


def test_given_a_build_then_its_words_name_what_is_known():
    build = {'archive_sha256': 'a' * 64, 'collection_version': '0.1.0', 'playbook_commit': 'b' * 40,
             'playbook_dirty': True}
    assert _build.describe(build) == ('archive sha256 aaaaaaaaaaaa, failsafe.deploy 0.1.0, playbook commit '
                                      'bbbbbbbbbbbb (with uncommitted changes)')
    assert _build.describe({'archive_sha256': None, 'collection_version': '0.1.0', 'playbook_commit': None}) == \
        'failsafe.deploy 0.1.0'
    assert _build.describe({}) is None and _build.describe(None) is None


def test_given_hosts_with_one_build_then_the_run_names_it_once():
    run = DeployRun(Redactor())
    build = {'archive_sha256': 'c' * 64, 'collection_version': '0.1.0', 'playbook_commit': None,
             'playbook_dirty': None}
    for host in ('web1', 'web2'):
        run.observe_transaction(host, {'txid': 't-' + host, 'run_id': 'r', 'release': '2.0.0', 'status': 'open',
                                       'build': build})
    assert run.builds == [build]
    assert run.build_words == 'archive sha256 cccccccccccc, failsafe.deploy 0.1.0'
    assert DeployRun(Redactor()).build_words is None
