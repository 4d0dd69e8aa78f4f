# -*- coding: utf-8 -*-
# Copyright: Contributors to failsafe.deploy
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type


class ModuleDocFragment(object):
    """What every module of this collection shares: its authors, full check mode support and a POSIX target, with
    the attributes' descriptions (as community.general's C(attributes) fragment carries them). A module adds the
    details of its own check and diff modes; what it sets itself wins over the fragment."""

    # Every module: a module's own attributes (the details of its check mode) are added to these.
    DOCUMENTATION = r'''
options: {}
author:
  - failsafe.deploy maintainers (@failsafe-deploy)
attributes:
  check_mode:
    description: Can run in check mode and return changed status prediction without modifying the target.
    support: full
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check mode), when in diff
      mode.
  platform:
    description: Target OS/families that can be operated against.
    support: full
    platforms: posix
'''

    # A module that only reads.
    READ_ONLY = r'''
options: {}
attributes:
  check_mode:
    details: The module only reads, so it runs in check mode exactly as it does otherwise.
  diff_mode:
    support: none
'''

    # A module with an action plugin on the controller, run per host.
    ACTION = r'''
options: {}
attributes:
  action:
    description: Has a corresponding action plugin, so some parts of the options run on the controller.
    support: full
  async:
    description: Supports being used with the C(async) keyword.
    support: none
  bypass_host_loop:
    description: Forces a 'global' task that does not run per host (per host templating, serial and throttle are
      bypassed).
    support: none
'''
