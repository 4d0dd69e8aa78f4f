# -*- coding: utf-8 -*-
# Copyright: Contributors to failsafe.deploy
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""No import circle among the collection's own modules under plugins/.

Every ``.py`` under plugins/ is parsed (ast, never imported) and each import of another module of this collection is
an edge: imports at the top, inside functions or under conditions alike, and the imports of Python code the module
holds in a string (the commit-confirmed watchdog's entry point: a module that writes a script importing X depends on
X). An import of ``pkg.mod`` is an edge to ``pkg.mod`` (to ``pkg`` when ``mod`` is a name in it, not a module); the
parent packages Python runs on the way are not edges. A module importing itself (a script naming the module that
holds it) is not a circle."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PREFIX = 'ansible_collections.failsafe.deploy.'


def module_files():
    """module name -> path of every Python file under plugins/."""
    found = {}
    for base, dirs, files in os.walk(os.path.join(ROOT, 'plugins')):
        dirs.sort()
        for name in sorted(files):
            if not name.endswith('.py'):
                continue
            path = os.path.join(base, name)
            parts = os.path.relpath(path, ROOT)[:-len('.py')].split(os.sep)
            if parts[-1] == '__init__':
                parts = parts[:-1]
            found[PREFIX + '.'.join(parts)] = path
    return found


def _embedded_code(tree):
    """The parsed Python code held in string constants that import this collection (scripts a module writes)."""
    for node in ast.walk(tree):
        value = getattr(node, 'value', None) if isinstance(node, ast.Constant) else None
        if isinstance(value, bytes):
            value = value.decode('utf-8', 'replace')
        if not isinstance(value, str) or PREFIX not in value or 'import' not in value:
            continue
        try:
            yield ast.parse(value)
        except SyntaxError:
            continue


def _imported(tree, name, is_package, modules):
    """The modules of this collection an ast imports, at any depth."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name in modules)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                package = name.split('.') if is_package else name.split('.')[:-1]
                package = package[:len(package) - (node.level - 1)]
                source = '.'.join(package + ([node.module] if node.module else []))
            else:
                source = node.module or ''
            if not source.startswith(PREFIX):
                continue
            for alias in node.names:
                if source + '.' + alias.name in modules:
                    found.add(source + '.' + alias.name)
                elif source in modules:
                    found.add(source)
    return found


def import_graph(modules):
    """module -> set of the collection's modules it imports (itself left out)."""
    graph = {}
    for name, path in modules.items():
        with open(path, 'rb') as handle:
            tree = ast.parse(handle.read(), path)
        is_package = os.path.basename(path) == '__init__.py'
        edges = _imported(tree, name, is_package, modules)
        for code in _embedded_code(tree):
            edges |= _imported(code, name, is_package, modules)
        edges.discard(name)
        graph[name] = edges
    return graph


def cycles(graph):
    """One circle (a list of modules, the first repeated at the end) for each group of modules that import each
    other, in order (Tarjan's strongly connected components, iterative)."""
    index, low, on_stack, stack, groups = {}, {}, set(), [], []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                group = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.append(member)
                    if member == node:
                        break
                if len(group) > 1:
                    groups.append(set(group))
    return sorted(_circle_in(graph, group) for group in groups)


def _circle_in(graph, group):
    """A shortest circle through the first module of a group that import each other (breadth first)."""
    start = min(group)
    paths = {start: [start]}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for child in sorted(graph[node] & group):
            if child == start:
                return paths[node] + [start]
            if child not in paths:
                paths[child] = paths[node] + [child]
                queue.append(child)
    raise AssertionError('no circle through %s' % start)  # pragma: no cover - a group always holds one


def short(name):
    return name[len(PREFIX + 'plugins.'):]


def test_no_module_of_the_collection_imports_itself_through_others():
    graph = import_graph(module_files())
    found = [' -> '.join(short(m) for m in circle) for circle in cycles(graph)]
    assert found == [], 'import circles among the modules under plugins/:\n' + '\n'.join(found)


def test_the_graph_sees_imports_at_every_depth_and_in_embedded_scripts():
    # Given the collection's modules, the graph holds what the test relies on: a top-level import, an import written
    # inside a function (the lazy kind loaders), and the imports of the watchdog script the engine holds in a string.
    graph = import_graph(module_files())
    mu = PREFIX + 'plugins.module_utils.'
    assert mu + '_confirm' in graph[mu + '_engine']
    assert set(mu + 'kinds.' + kind for kind in ('database', 'traffic', 'flags')) <= graph[mu + 'kinds']
    assert mu + '_layers' in graph[mu + 'kinds.database']
    assert mu + '_engine' not in graph[mu + '_engine']          # the watchdog script names its own holder
    assert not any(mu + '_engine' in graph[name] for name in graph if name.startswith(mu + '_confirm'))


@pytest.mark.parametrize('graph, expected', [
    ({'a': {'b'}, 'b': {'a'}}, [['a', 'b', 'a']]),
    ({'a': {'b'}, 'b': {'c'}, 'c': {'a'}, 'd': {'a'}}, [['a', 'b', 'c', 'a']]),
    ({'a': {'b', 'c'}, 'b': {'c'}, 'c': set()}, []),
    ({'a': {'b'}, 'b': {'a'}, 'c': {'d'}, 'd': {'c'}}, [['a', 'b', 'a'], ['c', 'd', 'c']]),
])
def test_a_circle_is_found_and_named(graph, expected):
    assert cycles(graph) == expected


def test_a_function_level_import_that_closes_a_circle_is_found(tmp_path):
    # Given two modules where one imports the other inside a function, and the other imports the first at the top
    mu = PREFIX + 'plugins.module_utils.'
    (tmp_path / 'one.py').write_text(u'def late():\n    from %s import two\n' % mu.rstrip('.'))
    (tmp_path / 'two.py').write_text(u'from %sone import late\n' % mu)
    modules = {mu + 'one': str(tmp_path / 'one.py'), mu + 'two': str(tmp_path / 'two.py')}
    # When the graph is built, Then the circle is named
    assert cycles(import_graph(modules)) == [[mu + 'one', mu + 'two', mu + 'one']]
