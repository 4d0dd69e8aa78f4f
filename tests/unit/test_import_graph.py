# -*- coding: utf-8 -*-
# Copyright: Contributors to failsafe.deploy
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The collection's modules import one another without a circle: every file under plugins/ is parsed (not
imported), every import of a collection module is an edge (an import inside a function too), and the graph has no
cycle."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PLUGINS = os.path.join(ROOT, 'plugins')
PACKAGE = 'ansible_collections.failsafe.deploy'


def module_name(path):
    return '.'.join([PACKAGE] + os.path.splitext(os.path.relpath(path, ROOT))[0].split(os.sep))


def collection_modules():
    """{module name: path} of every .py file under plugins/."""
    found = {}
    for directory, dummy, files in os.walk(PLUGINS):
        for name in files:
            if name.endswith('.py'):
                path = os.path.join(directory, name)
                found[module_name(path)] = path
    return found


def imports_in(source, name, modules):
    """The modules of ``modules`` that the source of module ``name`` imports, wherever the import statement is."""
    package = name.rsplit('.', 1)[0]
    out = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ''
            if node.level:
                parts = package.split('.')
                base = '.'.join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
            # ``from package import module`` imports that module, ``from module import name`` the module itself
            names = [base] + ['%s.%s' % (base, alias.name) for alias in node.names]
        else:
            continue
        out.update(n for n in names if n in modules)
    return out


def import_graph():
    modules = collection_modules()
    graph = {}
    for name, path in modules.items():
        with open(path, encoding='utf-8') as handle:
            graph[name] = imports_in(handle.read(), name, modules)
    return graph


def cycles(graph):
    """The cycles a depth-first search meets, each as the list of modules around it (first one repeated)."""
    found, state, stack = [], {}, []

    def visit(node):
        state[node] = 'open'
        stack.append(node)
        for child in sorted(graph.get(node, ())):
            if state.get(child) == 'open':
                found.append(stack[stack.index(child):] + [child])
            elif child not in state:
                visit(child)
        stack.pop()
        state[node] = 'done'

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return found


def test_given_the_plugins_then_their_imports_form_no_cycle():
    graph = import_graph()
    assert len(graph) > 20, 'the plugins were not found under %s' % PLUGINS
    assert sum(len(edges) for edges in graph.values()) > 20, 'no import between collection modules was seen'
    found = [' -> '.join(n[len(PACKAGE) + 1:] for n in cycle) for cycle in cycles(graph)]
    assert found == [], 'import cycles between collection modules:\n' + '\n'.join(found)


@pytest.mark.parametrize('graph, expected', [
    ({'a': {'b'}, 'b': {'c'}, 'c': set()}, []),
    ({'a': {'b', 'c'}, 'b': {'c'}, 'c': set()}, []),
    ({'a': {'b'}, 'b': {'a'}}, [['a', 'b', 'a']]),
    ({'a': {'b'}, 'b': {'c'}, 'c': {'a'}, 'd': {'a'}}, [['a', 'b', 'c', 'a']]),
    ({'a': {'a'}}, [['a', 'a']]),
])
def test_given_a_graph_then_cycles_finds_exactly_its_circles(graph, expected):
    assert cycles(graph) == expected


def test_given_a_module_then_every_import_of_a_collection_module_is_an_edge_wherever_it_is():
    utils = PACKAGE + '.plugins.module_utils'
    modules = set([utils + '._x', utils + '._y', utils + '._z', utils + '._w', PACKAGE + '.plugins.plugin_utils._v'])
    source = (
        'import os\n'
        'from ansible_collections.failsafe.deploy.plugins.module_utils import _x\n'
        'import ansible_collections.failsafe.deploy.plugins.plugin_utils._v\n'
        'def f():\n'
        '    from ansible_collections.failsafe.deploy.plugins.module_utils._y import thing\n'
        'try:\n'
        '    from ._z import other\n'
        'except ImportError:\n'
        '    from .. module_utils import _w\n'
    )
    assert imports_in(source, utils + '._probe', modules) == modules
    assert imports_in('import os\nfrom ansible.module_utils.basic import AnsibleModule\n', utils + '._probe',
                      modules) == set()
