# -*- coding: utf-8 -*-
# Private to this collection: not a public API.
# Copyright: Contributors to failsafe.deploy
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Imports every module that registers a layer kind (``_layers.register``), so that the engine, and the modules
bundled with it, know every kind a journal may hold. A new kind adds one import here."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

from ansible_collections.failsafe.deploy.plugins.module_utils import _layers  # noqa: F401 pylint: disable=unused-import
from ansible_collections.failsafe.deploy.plugins.module_utils import _database  # noqa: F401 pylint: disable=unused-import
from ansible_collections.failsafe.deploy.plugins.module_utils import _traffic  # noqa: F401 pylint: disable=unused-import
from ansible_collections.failsafe.deploy.plugins.module_utils import _flags  # noqa: F401 pylint: disable=unused-import
