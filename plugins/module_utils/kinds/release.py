# -*- coding: utf-8 -*-
# Private to this collection: not a public API.
# Copyright: Contributors to failsafe.deploy
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The ``release`` layer kind (stage ``code``): the ``current`` pointer and the ledger of release states."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

from ansible_collections.failsafe.deploy.plugins.module_utils._layers import Layer
from ansible_collections.failsafe.deploy.plugins.module_utils._release import ReleaseRoot, ensure_active, ensure_rolled_back


class ReleaseLayer(Layer):
    """The ``current`` pointer. Undo switches back to the last verified release other than the failed one, and
    quarantines the failed release only when the engine says it was shown bad on this host after its activation."""

    kind = 'release'
    stage = 'code'

    def __init__(self, app_root):
        self.root = ReleaseRoot(app_root)

    def capture(self, params):
        return {'release': params['release'], 'previous': self.root.read_current()}

    def apply(self, params, record):
        return ensure_active(self.root, params['release'], force=params.get('force', False))

    def undo(self, record, reason=None, quarantine=True, event='rolled back'):
        res = ensure_rolled_back(self.root, record.get('release'), reason=reason, quarantine=quarantine, event=event)
        return {'changed': res['changed'], 'target': res['current'], 'quarantined': res.get('quarantined', False)}

    def verify(self, record):
        target = record.get('target')
        current = self.root.read_current()
        if current != target:
            return ['current is %s, not the rollback target %s' % (current, target)]
        return []
