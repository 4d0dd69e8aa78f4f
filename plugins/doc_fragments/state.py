# -*- coding: utf-8 -*-
# Copyright: Contributors to failsafe.deploy
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type


class ModuleDocFragment(object):
    """Where a host keeps the state of its deployments. The matching argument spec is
    C(module_utils._argspec.state_argument_spec())."""

    DOCUMENTATION = r'''
options:
  state_dir:
    description:
      - Directory of the deploy state on the host (the roles' C(failsafe_state_dir)). Each deployment keeps its
        journal, lock and history in a folder of its own under it, and the snapshot store in C(snapshots/).
    type: path
    default: /var/lib/failsafe-deploy
  name:
    description:
      - Name of the deployment (the roles' C(failsafe_name)); keys its journal, lock and history in O(state_dir).
    type: str
    default: app
'''
