# -*- coding: utf-8 -*-
# Copyright: Contributors to failsafe.deploy
# SPDX-License-Identifier: GPL-3.0-or-later
"""pytest glue for the namespace test fleet: the ``fleet`` fixture factory and the ``fleet`` marker.

Use from a conftest.py (with the repository root on sys.path)::

    from tests.fleet.pytest_fleet import fleet, pytest_configure  # noqa: F401

or ``pytest_plugins = ['tests.fleet.pytest_fleet']``. In a test::

    @pytest.mark.fleet
    def test_something(fleet):
        hosts = fleet(3)            # a running Fleet; torn down after the test, pass or fail
        hosts.inventory_path
"""

import os

import pytest

from .fleet import DEFAULT_NAME, Fleet, ensure_prereqs

MARKER = 'fleet: builds a fleet of namespace SSH hosts (needs root; see tests/fleet/README.md)'


def pytest_configure(config):
    config.addinivalue_line('markers', MARKER)


_FLEET_SECONDS = {'tests': 0, 'seconds': 0.0}


def pytest_runtest_logreport(report):
    """Adds up the time of every phase (setup included: that is where fleets come up) of tests marked fleet."""
    if 'fleet' in report.keywords:
        _FLEET_SECONDS['seconds'] += report.duration
        if report.when == 'call':
            _FLEET_SECONDS['tests'] += 1


def pytest_terminal_summary(terminalreporter):
    """Reports the total time of the fleet tests, so their cost stays visible in every run."""
    if _FLEET_SECONDS['tests']:
        terminalreporter.write_line('fleet tests: %d tests, %.0f s in total (setup and teardown included)'
                                    % (_FLEET_SECONDS['tests'], _FLEET_SECONDS['seconds']))


@pytest.fixture
def fleet(request, tmp_path_factory):
    """Factory fixture: ``fleet(n=3, name=None, subnet=None, **kwargs)`` returns a running Fleet.

    Every fleet made through it is torn down when the test ends, even when it fails. A second fleet in the same
    test gets its own name (``<name>2``, ...) and so its own subnet, unless you pass one.
    """
    if os.geteuid() != 0:
        pytest.skip('the namespace fleet needs root')
    made = []

    def make(n=3, name=None, **kwargs):
        ensure_prereqs()
        if name is None:
            name = DEFAULT_NAME if not made else '%s%d' % (DEFAULT_NAME, len(made) + 1)
        base_dir = kwargs.pop('base_dir', None) or str(tmp_path_factory.mktemp('fleet-%s' % name))
        instance = Fleet(n, name=name, base_dir=base_dir, **kwargs)
        made.append(instance)
        instance.up()
        return instance

    yield make
    errors = []
    for instance in reversed(made):
        try:
            instance.down()
        except Exception as exc:  # pylint: disable=broad-except
            errors.append('%s: %s' % (instance.name, exc))
    if errors:
        pytest.fail('fleet teardown failed: %s' % '; '.join(errors))
