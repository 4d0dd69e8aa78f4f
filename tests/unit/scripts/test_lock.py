# -*- coding: utf-8 -*-
# Copyright: Contributors to failsafe.deploy
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The tooling is locked: every lock pins exact versions of what its requirements resolve to (that the virtualenv
`make setup` makes holds exactly them is tests/behaviour/test_locked_tooling.py)."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
NAMES = ('dev', 'checks', 'awx')
PIN = re.compile(r'^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;#]+)$')


def canonical(name):
    return re.sub(r'[-_.]+', '-', name).lower()


def pins(name):
    found = {}
    with open(os.path.join(ROOT, 'requirements-%s.lock' % name)) as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith('#'):
                continue
            match = PIN.match(line)
            assert match, 'requirements-%s.lock: not an exact pin: %r' % (name, line)
            found[canonical(match.group(1))] = match.group(2)
    return found


def requirement_names(name):
    names = []
    with open(os.path.join(ROOT, 'requirements-%s.txt' % name)) as f:
        for line in f:
            line = line.split('#', 1)[0].strip()
            if line:
                names.append(canonical(re.split(r'[<>=!~;\[ ]', line, 1)[0]))
    return names


@pytest.mark.parametrize('name', NAMES)
def test_each_lock_pins_every_requirement_exactly(name):
    locked = pins(name)
    assert len(locked) >= len(requirement_names(name))
    for requirement in requirement_names(name):
        assert requirement in locked, 'requirements-%s.txt names %s, which its lock does not pin' % (name, requirement)
    # the release that makes ansible-core 2.19 warn at every start is kept out
    assert int(locked['cryptography'].split('.')[0]) < 51


def test_the_refresh_command_is_documented_and_setup_installs_from_the_lock():
    with open(os.path.join(ROOT, 'README.md')) as f:
        readme = f.read()
    assert 'scripts/lock.sh' in readme
    with open(os.path.join(ROOT, 'scripts', 'venv.sh')) as f:
        assert '-c "$lock"' in f.read()
    usage = subprocess.run(['bash', '-n', os.path.join(ROOT, 'scripts', 'lock.sh')], check=False)
    assert usage.returncode == 0
    assert sys.prefix != sys.base_prefix   # a virtualenv, as made by setup
