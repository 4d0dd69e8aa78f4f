# -*- coding: utf-8 -*-
# Copyright: Contributors to failsafe.deploy
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The auto_rollback callback stays a thin adapter: it captures events and delegates to plugins/plugin_utils
(deciding scope and outcome, launching, merging results, building the incident). Its code, the file without its
DOCUMENTATION and EXAMPLES blocks, is at most 500 lines, so that logic cannot grow back into it."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import ast
import os

from ansible_collections.failsafe.deploy.plugins.callback import auto_rollback

LIMIT = 500
DOC_BLOCKS = ('DOCUMENTATION', 'EXAMPLES')


def code_lines(source):
    """The lines of ``source`` outside its DOCUMENTATION and EXAMPLES string blocks."""
    doc = 0
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id in DOC_BLOCKS for t in node.targets):
            doc += node.end_lineno - node.lineno + 1
    return len(source.splitlines()) - doc


def test_code_lines_counts_everything_but_the_doc_blocks():
    source = "DOCUMENTATION = r'''\nname: x\n'''\n\nEXAMPLES = r'''\n# x\n'''\n\nimport os\nX = '''\nnot a doc\n'''\n"
    assert code_lines(source) == 12 - 3 - 3


def test_the_callback_code_is_at_most_500_lines():
    path = os.path.splitext(auto_rollback.__file__)[0] + '.py'
    with open(path, encoding='utf-8') as handle:
        source = handle.read()
    count = code_lines(source)
    assert count <= LIMIT, ('plugins/callback/auto_rollback.py has %d lines of code (without its DOCUMENTATION and '
                            'EXAMPLES): at most %d; move logic to plugins/plugin_utils' % (count, LIMIT))
