# -*- coding: utf-8 -*-
# Copyright: Contributors to failsafe.deploy
# SPDX-License-Identifier: GPL-3.0-or-later
"""A fleet of real SSH hosts built from Linux namespaces (see README.md beside this file)."""

from .fleet import DEFAULT_NAME, Fleet, FleetError, Host, default_subnet, down_all, ensure_prereqs

__all__ = ['DEFAULT_NAME', 'Fleet', 'FleetError', 'Host', 'default_subnet', 'down_all', 'ensure_prereqs']
