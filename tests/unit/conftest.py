# -*- coding: utf-8 -*-
# Copyright: Contributors to failsafe.deploy
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""What the unit tests of one test process share (tests/process_shared.py): the servers (one PostgreSQL cluster, one
MariaDB server and one moto server, each started by the first test that needs it) and files built once. Under
ansible-test units every test runs in a fork of its own; these hooks run in the process that forks them, so the
session's end stops the servers and removes what was built."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

from ansible_collections.failsafe.deploy.tests import dbservers, moto_cli, process_shared


def pytest_configure(config):  # pylint: disable=unused-argument
    process_shared.begin()


def _end():
    dbservers.session_end()
    moto_cli.session_end()
    process_shared.end()


def pytest_sessionfinish(session, exitstatus):  # pylint: disable=unused-argument
    _end()


def pytest_unconfigure(config):  # pylint: disable=unused-argument
    # also when the session ends early (a collection error, an interrupt): no server outlives pytest
    _end()
