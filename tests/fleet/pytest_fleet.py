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

from ..requires import must_run, require_root
from .fleet import DEFAULT_NAME, Fleet, ensure_prereqs

MARKER = 'fleet: builds a fleet of namespace SSH hosts (needs root; see tests/fleet/README.md)'


def pytest_configure(config):
    config.addinivalue_line('markers', MARKER)


_FLEET_SECONDS = {'tests': 0, 'skipped': 0, 'seconds': 0.0}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Turns the skip of a test marked ``fleet`` into a failure where fleet tests must run (tests/requires.py
    must_run: under CI and as root); a test that tests/requires.py failed for the same reason is counted with them."""
    outcome = yield
    report = outcome.get_result()
    if report.failed and call.excinfo is not None and getattr(call.excinfo.value, 'failsafe_not_run', False):
        report.fleet_not_run = True
        return
    if not report.skipped or hasattr(report, 'wasxfail') or item.get_closest_marker('fleet') is None:
        return
    if not must_run():
        return
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) and len(report.longrepr) == 3 \
        else str(report.longrepr)
    if reason.startswith('Skipped: '):
        reason = reason[len('Skipped: '):]
    report.outcome = 'failed'
    report.fleet_not_run = True
    report.longrepr = ('fleet test did not run (CI=%s, euid=%d); under CI and as root a skipped fleet test fails '
                       'the run. Skip reason: %s' % (os.environ.get('CI', ''), os.geteuid(), reason))


def pytest_runtest_logreport(report):
    """Adds up the time of every phase (setup included: that is where fleets come up) of tests marked fleet."""
    if 'fleet' in report.keywords:
        _FLEET_SECONDS['seconds'] += report.duration
        if report.skipped or getattr(report, 'fleet_not_run', False):
            _FLEET_SECONDS['skipped'] += 1
        elif report.when == 'call':
            _FLEET_SECONDS['tests'] += 1


def pytest_terminal_summary(terminalreporter):
    """Reports how many fleet tests ran (0 included) and their total time, so neither can go unnoticed."""
    terminalreporter.write_line('fleet tests: %d tests ran, %d did not run, %.0f s in total (setup and teardown included)'
                                % (_FLEET_SECONDS['tests'], _FLEET_SECONDS['skipped'], _FLEET_SECONDS['seconds']))


@pytest.fixture
def fleet(request, tmp_path_factory):
    """Factory fixture: ``fleet(n=3, name=None, subnet=None, **kwargs)`` returns a running Fleet.

    Every fleet made through it is torn down when the test ends, even when it fails. A second fleet in the same
    test gets its own name (``<name>2``, ...) and so its own subnet, unless you pass one.
    """
    require_root('the namespace fleet needs root')
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
