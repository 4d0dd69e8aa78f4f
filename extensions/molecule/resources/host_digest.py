# -*- coding: utf-8 -*-
# Copyright: Contributors to failsafe.deploy
# SPDX-License-Identifier: GPL-3.0-or-later
"""Runs on a fleet host. `digest`: a JSON map of every path a deploy captures, and of the release `current` points
into, -> [type, sha256 or link target, mode, uid, gid]. `snapshot-drift`: the differences between those paths and
the snapshot(s) named by the deploy journal, read straight from the snapshot manifests (empty list =
byte-identical)."""
import hashlib
import json
import os
import stat
import sys

APP = '/srv/app'
STATE = '/var/lib/failsafe-deploy'
CAPTURED = [APP + '/current', APP + '/shared', '/srv/supervisor/conf.d/app.conf']


def describe(path):
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return ['absent', None, None, None, None]
    mode = stat.S_IMODE(st.st_mode)
    if stat.S_ISLNK(st.st_mode):
        return ['link', os.readlink(path), None, st.st_uid, st.st_gid]
    if stat.S_ISDIR(st.st_mode):
        return ['dir', None, mode, st.st_uid, st.st_gid]
    with open(path, 'rb') as f:
        return ['file', hashlib.sha256(f.read()).hexdigest(), mode, st.st_uid, st.st_gid]


def digest():
    """Every captured path and everything below it; a symlink to a directory (`current`) is followed, so the tree
    it points into is recorded below the link's own path (`current/app.py`) beside the link itself."""
    out = {}

    def record(path, followed):
        out[path] = describe(path)
        real = os.path.realpath(path)
        if out[path][0] in ('dir', 'link') and os.path.isdir(real) and real not in followed:
            for name in sorted(os.listdir(path)):
                record(os.path.join(path, name), followed | {real})

    for root in CAPTURED:
        record(root, frozenset())
    return out


def snapshot_drift():
    with open(os.path.join(STATE, 'app', 'journal.json')) as f:
        journal = json.load(f)
    drift = []
    ids = sorted(set((journal.get('snapshots') or {}).values()))
    if not ids:
        return ['journal %s names no snapshot' % journal.get('txid')]
    for snap in ids:
        with open(os.path.join(STATE, 'snapshots', 'manifests', snap + '.json')) as f:
            manifest = json.load(f)
        seen = set()
        for entry in manifest['entries']:
            seen.add(entry['path'])
            have = describe(entry['path'])
            if entry['type'] == 'absent':
                want = ['absent', None]
            elif entry['type'] == 'link':
                want = ['link', entry['target']]
            elif entry['type'] == 'dir':
                want = ['dir', None, entry['mode'], entry['uid'], entry['gid']]
            else:
                want = ['file', entry['sha256'], entry['mode'], entry['uid'], entry['gid']]
            if have[:len(want)] != want:
                drift.append({'path': entry['path'], 'snapshot': want, 'now': have})
        for root in manifest['roots']:
            if os.path.isdir(root) and not os.path.islink(root):
                for top, dirs, files in os.walk(root):
                    for name in dirs + files:
                        p = os.path.join(top, name)
                        if p not in seen:
                            drift.append({'path': p, 'snapshot': None, 'now': describe(p)})
    return drift


if __name__ == '__main__':
    result = digest() if sys.argv[1:] == ['digest'] else snapshot_drift()
    json.dump(result, sys.stdout, sort_keys=True)
