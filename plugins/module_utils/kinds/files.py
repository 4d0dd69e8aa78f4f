# -*- coding: utf-8 -*-
# Private to this collection: not a public API.
# Copyright: Contributors to failsafe.deploy
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The ``files`` layer kind (stage ``code``): files and configuration, through the snapshot store."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

from ansible_collections.failsafe.deploy.plugins.module_utils._layers import Layer
from ansible_collections.failsafe.deploy.plugins.module_utils._snapshot import SnapshotStore, describe_drift


class FilesLayer(Layer):
    """Files and configuration: a snapshot of the paths the deploy may change. Applying is whatever writes those
    paths (the release pointer, configuration files); undo restores the snapshot, verify reads every path back."""

    kind = 'files'
    stage = 'code'

    def __init__(self, store_dir):
        self.store = SnapshotStore(store_dir)

    def capture(self, params):
        res = self.store.capture(params['paths'], exclude=params.get('exclude') or [], labels=params.get('labels'))
        return {'snapshot': res['id'], 'entries': res['entries'], 'reused': not res['changed']}

    def apply(self, params, record):
        return {'changed': False}

    def undo(self, record):
        res = self.store.restore(record['snapshot'], verify=True)
        return {'changed': res['changed'], 'restored': res['restored']}

    def verify(self, record):
        res = self.store.verify(record['snapshot'])
        return [describe_drift(res['drift'])] if res['drift'] else []
