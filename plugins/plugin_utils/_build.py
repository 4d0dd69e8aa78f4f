# -*- coding: utf-8 -*-
# Private to this collection: not a public API.
# Copyright: Contributors to failsafe.deploy
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Which build a deploy runs: the sha256 of the release archive, the version of this collection and the git commit
of the playbook's directory. The action plugin of failsafe.deploy.transaction hands them to the open phase, which
records them in the host's journal (``build``); the ledger, the history, the reports and the alerts read them there.
Nothing here raises: what cannot be known is None."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import hashlib
import json
import os
import re
import subprocess

# The collection's root: plugins/plugin_utils/ is two levels below it.
COLLECTION_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD_KEYS = ('archive_sha256', 'collection_version', 'playbook_commit', 'playbook_dirty')
_VERSION = re.compile(r'^version:\s*["\']?([^"\'\s#]+)', re.M)
_COMMIT = re.compile(r'^[0-9a-f]{40}([0-9a-f]{24})?$')


def sha256_of(path, chunk=1048576):
    """The sha256 (hex) of the file ``path``, or None when it cannot be read."""
    digest = hashlib.sha256()
    try:
        with open(path, 'rb') as handle:
            for block in iter(lambda: handle.read(chunk), b''):
                digest.update(block)
    except (IOError, OSError):
        return None
    return digest.hexdigest()


def collection_version(root=COLLECTION_ROOT):
    """The version of the collection installed at ``root``: its MANIFEST.json (a built collection), else its
    galaxy.yml (a checkout used as the collection)."""
    try:
        with open(os.path.join(root, 'MANIFEST.json'), 'rb') as handle:
            version = (json.loads(handle.read().decode('utf-8')).get('collection_info') or {}).get('version')
        if version:
            return str(version)
    except (IOError, OSError, ValueError, AttributeError):
        pass
    try:
        with open(os.path.join(root, 'galaxy.yml'), 'rb') as handle:
            match = _VERSION.search(handle.read().decode('utf-8'))
        return match.group(1) if match else None
    except (IOError, OSError, UnicodeDecodeError):
        return None


def _git(directory, *args):
    try:
        proc = subprocess.run(['git', '-C', directory] + list(args), stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout.decode('utf-8', 'replace').strip() if proc.returncode == 0 else None


def playbook_commit(directory):
    """(commit, dirty) of the git checkout that holds ``directory``: the commit checked out there and whether
    tracked files differ from it; (None, None) when it is no checkout (or git is missing)."""
    if not directory or not os.path.isdir(directory):
        return None, None
    commit = _git(directory, 'rev-parse', '--verify', '-q', 'HEAD')
    if not commit or not _COMMIT.match(commit):
        return None, None
    status = _git(directory, 'status', '--porcelain', '--untracked-files=no')
    return commit, (bool(status) if status is not None else None)


def playbook_directory(fallback=None):
    """The directory of the playbook this run was started with (the first one on the command line): an operator's
    deploy.yml that imports failsafe.deploy.deploy is in their checkout, while ``playbook_dir`` names the imported
    playbook's. A collection playbook run by name (failsafe.deploy.deploy) has no file of the operator's: then the
    directory the run started in (where its inventory and variables are). ``fallback`` when neither is known."""
    try:
        from ansible import context
        playbooks = list((context.CLIARGS or {}).get('args') or ())
    except (ImportError, AttributeError, TypeError):
        playbooks = []
    if playbooks:
        first = str(playbooks[0])
        if os.path.isfile(first):
            return os.path.dirname(os.path.abspath(first))
        return os.getcwd()
    return fallback


def build_of(archive=None, playbook_dir=None, archive_sha256=None):
    """The build record of a deploy: the archive's sha256 (``archive``, a file on the controller, unless
    ``archive_sha256`` is given), this collection's version, and the playbook directory's git commit."""
    commit, dirty = playbook_commit(playbook_dir)
    return {
        'archive_sha256': archive_sha256 or (sha256_of(archive) if archive and os.path.isfile(archive) else None),
        'collection_version': collection_version(),
        'playbook_commit': commit,
        'playbook_dirty': dirty,
    }


def describe(build):
    """One line of words for a build record (reports, alerts, the history): what is known of it."""
    if not isinstance(build, dict):
        return None
    parts = []
    if build.get('archive_sha256'):
        parts.append('archive sha256 %s' % str(build['archive_sha256'])[:12])
    if build.get('collection_version'):
        parts.append('failsafe.deploy %s' % build['collection_version'])
    if build.get('playbook_commit'):
        parts.append('playbook commit %s%s' % (str(build['playbook_commit'])[:12],
                                               ' (with uncommitted changes)' if build.get('playbook_dirty') else ''))
    return ', '.join(parts) or None
