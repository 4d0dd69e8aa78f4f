# -*- coding: utf-8 -*-
# Copyright: Contributors to failsafe.deploy
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""tests/helpers.free_port picks ports that no outgoing connection or port-0 bind can take before the service that
asked for one binds it: below the kernel's ephemeral range, free, and different from call to call."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import socket

from ansible_collections.failsafe.deploy.tests import helpers


def test_free_port_is_below_the_ephemeral_range_and_free():
    floor = helpers._ephemeral_floor()  # pylint: disable=protected-access
    ports = [helpers.free_port() for dummy in range(20)]
    assert all(helpers.PORT_FLOOR <= port < floor for port in ports), (ports, floor)
    assert len(set(ports)) > 10  # picked at random: processes side by side rarely pick the same one
    for port in ports[:5]:
        with socket.socket() as sock:
            sock.bind(('127.0.0.1', port))


def test_a_port_in_use_is_never_picked(monkeypatch):
    taken = socket.socket()
    taken.bind(('127.0.0.1', 0))
    taken.listen(1)
    try:
        busy = taken.getsockname()[1]
        with socket.socket() as other:
            other.bind(('127.0.0.1', 0))
            idle = other.getsockname()[1]
        picks = iter([busy, busy, idle])
        monkeypatch.setattr(helpers, '_ephemeral_floor', lambda: helpers.PORT_FLOOR + 2000)
        monkeypatch.setattr(helpers.random.SystemRandom, 'randrange', lambda self, a, b: next(picks))
        assert helpers.free_port() == idle
    finally:
        taken.close()
