# -*- coding: utf-8 -*-
# Private to this collection: not a public API.
# Copyright: Contributors to failsafe.deploy
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The one error base class of the controller-side code (plugin_utils, the callback and the action plugins).

Every error the controller-side code raises on purpose derives from ``ControllerSideError``; an error that is also a
bad value keeps ``ValueError`` as a second base, so what callers catch does not change.
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type


class ControllerSideError(Exception):
    """A refusal or failure of the controller-side code; the message says what and why."""
