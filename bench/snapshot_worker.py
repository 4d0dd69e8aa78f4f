# -*- coding: utf-8 -*-
# Copyright: Contributors to failsafe.deploy
# SPDX-License-Identifier: GPL-3.0-or-later
"""One snapshot store operation in a fresh process: prints JSON with its seconds, peak RSS and store counters.

usage: snapshot_worker.py capture STORE ID PATH | restore STORE ID
"""

import json
import resource
import sys
import time

from ansible_collections.failsafe.deploy.plugins.module_utils._snapshot import SnapshotStore


def main(argv):
    op, store_dir, snap_id = argv[:3]
    store = SnapshotStore(store_dir)
    start = time.perf_counter()
    if op == 'capture':
        res = store.capture([argv[3]], snapshot_id=snap_id)
    else:
        res = store.restore(snap_id)
    seconds = time.perf_counter() - start
    out = {'seconds': seconds, 'maxrss_kb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
           'counters': dict(store.counters), 'changed': bool(res.get('changed'))}
    sys.stdout.write(json.dumps(out) + '\n')


if __name__ == '__main__':
    main(sys.argv[1:])
