# -*- coding: utf-8 -*-
# Copyright: Contributors to failsafe.deploy
# SPDX-License-Identifier: GPL-3.0-or-later
"""The virtualenv the suite runs in, made by `make setup`, holds exactly the versions of requirements-dev.lock.

A behaviour test, not a unit test: ansible-test runs the unit tests in virtualenvs of its own."""

import os
import re
from importlib import metadata

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PIN = re.compile(r'^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;#]+)$')


def canonical(name):
    return re.sub(r'[-_.]+', '-', name).lower()


def test_the_virtualenv_holds_exactly_the_locked_versions():
    locked = {}
    with open(os.path.join(ROOT, 'requirements-dev.lock')) as f:
        for line in f:
            match = PIN.match(line.strip())
            if match:
                locked[canonical(match.group(1))] = match.group(2)
    assert len(locked) > 50
    installed = dict((canonical(d.metadata['Name']), d.version) for d in metadata.distributions())
    wrong = dict((n, (installed.get(n), v)) for n, v in locked.items() if installed.get(n) != v)
    assert not wrong, 'installed vs locked: %s' % wrong
    extra = sorted(set(installed) - set(locked) - {'pip', 'setuptools', 'wheel'})
    assert not extra, 'installed but not locked: %s' % extra
