# -*- coding: utf-8 -*-
# Copyright: Contributors to failsafe.deploy
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The one way a test of a real component (a server, a browser, a tool, a library the test drives, root itself)
says it cannot run here.

Where the tests must run, under CI (``CI=true``) and as root (the machines the suite is proven on), a test that
cannot run fails with its reason: a missing component is then a broken machine, never a quiet pass. Elsewhere (a
developer's machine without root) the test skips with that reason, shown by ``pytest -rs``.

Unit tests import it as ``ansible_collections.failsafe.deploy.tests.requires`` (as ansible-test units sees the
collection), behaviour tests and the fleet plugin as ``tests.requires`` (the repository root on sys.path).
tests/behaviour/test_no_silent_skips.py proves the rule and that no test skips around it.
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import functools
import importlib
import os

import pytest


def must_run():
    """True where a test that cannot run is a failure, not a skip: under CI (``CI=true``) and as root."""
    return os.environ.get('CI', '').strip().lower() in ('true', '1', 'yes') or os.geteuid() == 0


def cannot_run(reason):
    """Ends the test that cannot run here: a failure naming ``reason`` where tests must run, else a skip.

    Called at the top level of a test module it skips the whole module; there, where tests must run, it fails the
    collection of that module, so prefer calling it from a fixture or a test."""
    if must_run():
        error = pytest.fail.Exception(
            'test did not run (CI=%s, euid=%d); under CI and as root a test of a real component that cannot run '
            'fails the run. Skip reason: %s' % (os.environ.get('CI', ''), os.geteuid(), reason), pytrace=False)
        error.failsafe_not_run = True   # the fleet plugin counts such a test as one that did not run
        raise error
    pytest.skip(reason, allow_module_level=True)


def require(ok, reason):
    """Goes on when ``ok`` is true, else ends the test with ``reason`` (see cannot_run)."""
    if not ok:
        cannot_run(reason)


def require_root(reason):
    """Goes on as root, else ends the test with ``reason`` (see cannot_run)."""
    require(os.geteuid() == 0, reason)


def require_module(name, reason=None):
    """The imported module ``name``, else ends the test with ``reason`` or the import error (see cannot_run)."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        cannot_run(reason or 'cannot import %s: %s' % (name, exc))
    return None   # not reached: cannot_run raises


def needs(ok, reason):
    """A decorator for a test function: it runs when ``ok`` is true, else ends with ``reason`` (see cannot_run).

    ``ok`` is a value known at import time or a function called when the test runs."""

    def decorate(test):
        @functools.wraps(test)
        def checked(*args, **kwargs):
            require(ok() if callable(ok) else ok, reason)
            return test(*args, **kwargs)
        return checked
    return decorate
