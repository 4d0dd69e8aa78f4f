# -*- coding: utf-8 -*-
# Copyright: Contributors to failsafe.deploy
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The controller side has one error base: every error class of plugin_utils, the callback and the action plugins
derives from it, and keeps the base its callers catch."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import ast
import glob
import json
import os
import subprocess
import sys

import pytest

from ansible_collections.failsafe.deploy.plugins.plugin_utils import _errors
from ansible_collections.failsafe.deploy.plugins.plugin_utils._analysis import AnalysisError
from ansible_collections.failsafe.deploy.plugins.plugin_utils._controller import ControllerError
from ansible_collections.failsafe.deploy.plugins.plugin_utils._errors import ControllerSideError
from ansible_collections.failsafe.deploy.plugins.plugin_utils._metric_gate import GateError, PrometheusError
from ansible_collections.failsafe.deploy.plugins.plugin_utils._probes import DependencyError

PLUGINS = os.path.dirname(os.path.dirname(os.path.abspath(_errors.__file__)))
CONTROLLER_DIRS = ('plugin_utils', 'callback', 'action')


def _name(node):
    return node.id if isinstance(node, ast.Name) else getattr(node, 'attr', type(node).__name__)


@pytest.mark.parametrize('error, also', [
    (AnalysisError, ValueError),
    (GateError, ValueError),
    (DependencyError, ValueError),
    (ControllerError, Exception),
    (PrometheusError, Exception),
])
def test_given_a_controller_error_then_it_derives_from_the_base_and_keeps_what_callers_catch(error, also):
    assert issubclass(error, ControllerSideError)
    assert issubclass(error, also)
    with pytest.raises(also):
        raise error('boom')


# Run in an interpreter of its own: under a long test session CPython 3.11's ast.parse can stop with "AST
# constructor recursion depth mismatch" once another test has hit its recursion limit.
CLASS_BASES = """
import ast, json, sys
out = {}
for path in sys.argv[1:]:
    with open(path, encoding='utf-8') as handle:
        tree = ast.parse(handle.read(), path)
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name.endswith(('Error', 'Exception')):
            out['%s:%s' % (path, node.name)] = [b.id if isinstance(b, ast.Name) else getattr(b, 'attr', '?')
                                                for b in node.bases]
print(json.dumps(out))
"""


def test_every_error_class_of_the_controller_side_derives_from_the_base():
    """Parsed, not imported: a new error class anywhere on the controller side is seen here."""
    paths = [path for directory in CONTROLLER_DIRS for path in glob.glob(os.path.join(PLUGINS, directory, '*.py'))]
    found = json.loads(subprocess.run([sys.executable, '-c', CLASS_BASES] + paths, stdout=subprocess.PIPE,
                                      check=True, text=True).stdout)
    bases = dict(('%s:%s' % (os.path.relpath(key.rsplit(':', 1)[0], PLUGINS), key.rsplit(':', 1)[1]), names)
                 for key, names in found.items())
    assert 'plugin_utils/_errors.py:ControllerSideError' in bases
    known = {'ControllerSideError'} | {key.split(':')[1] for key in bases}
    strays = {}
    for key, names in bases.items():
        if key.endswith(':ControllerSideError'):
            continue
        if not any(name in known for name in names):
            strays[key] = names
    assert strays == {}
