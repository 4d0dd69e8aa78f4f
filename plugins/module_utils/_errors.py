# -*- coding: utf-8 -*-
# Private to this collection: not a public API.
# Copyright: Contributors to failsafe.deploy
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The one error base class of the target-side code: a human message and structured details for fail_json; and the
engine's error, which the commit-confirmed watchdog (``_confirm``) catches too."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type


class FailsafeError(Exception):
    """A refusal or failure: ``msg`` says what and why, ``details`` go into the module's failure result."""

    def __init__(self, msg, **details):
        super(FailsafeError, self).__init__(msg)
        self.msg = msg
        self.details = details


class EngineError(FailsafeError):
    """A phase refused or failed; ``details`` go into the module's failure result."""
