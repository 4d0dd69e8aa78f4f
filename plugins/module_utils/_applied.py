# -*- coding: utf-8 -*-
# Private to this collection: not a public API.
# Copyright: Contributors to failsafe.deploy
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""What a deploy applies besides its release, as checksums: the configuration and program files (content, mode,
owner, group), the directories, the service settings and the feature flag settings.

The open phase compares this run's with what the running verified release was committed with (the ledger records
it at commit): the same release with another configuration is deployed as a configuration change, never skipped.
Only checksums are kept, so no secret of a file or a flag store reaches the journal or the ledger."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import hashlib
import json


def _sha256(data):
    if not isinstance(data, bytes):
        data = data.encode('utf-8')
    return hashlib.sha256(data).hexdigest()


def _canonical(value):
    return json.dumps(value, sort_keys=True, separators=(',', ':'), default=str)


def file_digest(spec):
    """The checksum of one file as the activation writes it: its content with its mode, owner and group."""
    content = spec.get('content')
    if content is None:
        # not rendered where this was computed (a template that could not be rendered before the activation):
        # its source names it, so a run with the same source compares equal
        content = 'template:%s' % spec.get('src')
    meta = _canonical({'mode': str(spec.get('mode') or '0644'), 'owner': spec.get('owner') or None,
                       'group': spec.get('group') or None})
    return _sha256(_sha256(content) + meta)


def fingerprint(files=None, directories=None, service=None, flags=None):
    """What a deploy applies besides the release: ``files`` {dest: checksum}, ``directories`` (sorted),
    ``service`` and ``flags`` (checksums of their settings)."""
    return {
        'files': dict((spec['dest'], file_digest(spec)) for spec in files or []
                      if isinstance(spec, dict) and spec.get('dest')),
        'directories': sorted(set(directories or [])),
        'service': _sha256(_canonical(dict(service or {}))),
        'flags': _sha256(_canonical(list(flags or []))),
    }


def differences(recorded, wanted):
    """What differs between the settings a release was committed with (``recorded``) and those of this run
    (``wanted``), in words, one entry each; empty when nothing differs. With nothing recorded (a release
    committed before the ledger kept its settings) nothing can be told apart, and nothing is said to differ."""
    if not isinstance(recorded, dict) or not isinstance(wanted, dict):
        return []
    changes = []
    old_files = recorded.get('files') or {}
    new_files = wanted.get('files') or {}
    for dest in sorted(set(old_files) | set(new_files)):
        if dest not in old_files:
            changes.append('file %s added' % dest)
        elif dest not in new_files:
            changes.append('file %s no longer managed' % dest)
        elif old_files[dest] != new_files[dest]:
            changes.append('file %s' % dest)
    if sorted(recorded.get('directories') or []) != sorted(wanted.get('directories') or []):
        changes.append('directories')
    for key, words in (('service', 'service settings'), ('flags', 'feature flag settings')):
        if recorded.get(key) != wanted.get(key):
            changes.append(words)
    return changes
