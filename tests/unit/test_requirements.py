"""requirements.txt at the collection root says which Python packages the plugins import beside the standard library
and ansible: each third-party import of plugins/ is a requirement there or a documented optional one, and nothing
there is imported by no plugin."""
import ast
import os
import re
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OWN = {'ansible', 'ansible_collections', '__future__'}


def third_party_imports():
    """{top-level package: [file, ...]} of every import in plugins/ that is neither stdlib nor ansible."""
    found = {}
    for base, _dirs, files in os.walk(os.path.join(ROOT, 'plugins')):
        for name in files:
            if not name.endswith('.py'):
                continue
            path = os.path.join(base, name)
            with open(path, encoding='utf-8') as handle:
                tree = ast.parse(handle.read(), path)
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    tops = [alias.name.split('.')[0] for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    tops = [node.module.split('.')[0]]
                else:
                    continue
                for top in tops:
                    if top not in OWN and top not in sys.stdlib_module_names:
                        found.setdefault(top, []).append(os.path.relpath(path, ROOT))
    return found


def declared():
    """(required, optional): the package names requirements.txt installs, and those it documents as optional."""
    required, optional = set(), set()
    with open(os.path.join(ROOT, 'requirements.txt'), encoding='utf-8') as handle:
        for line in handle:
            comment = re.match(r'#\s*optional:\s*([A-Za-z0-9_.-]+)', line.strip())
            if comment:
                optional.add(comment.group(1).lower())
                continue
            spec = line.split('#', 1)[0].strip()
            if spec:
                required.add(re.split(r'[\s<>=!~;\[]', spec, 1)[0].lower())
    return required, optional


def test_the_scan_sees_the_imports_the_plugins_make():
    found = third_party_imports()
    # The scan itself is checked against imports known to be there, so an empty scan cannot pass.
    assert 'plugins/module_utils/_health.py' in found.get('jmespath', [])
    assert 'plugins/plugin_utils/_channels.py' in found.get('apprise', [])
    assert 'os' not in found and 'ansible' not in found


@pytest.mark.parametrize('package', sorted(third_party_imports()))
def test_every_third_party_import_is_a_requirement_or_documented_optional(package):
    required, optional = declared()
    assert package.lower() in required | optional, (
        '%s is imported by %s but requirements.txt neither requires it nor names it optional'
        % (package, ', '.join(third_party_imports()[package])))


def test_requirements_txt_requires_nothing_the_plugins_do_not_import():
    required, optional = declared()
    imported = {name.lower() for name in third_party_imports()}
    assert required, 'requirements.txt requires nothing'
    assert required <= imported, required - imported
    assert optional <= imported, optional - imported
    assert not required & optional


def test_the_execution_environment_reads_requirements_txt():
    with open(os.path.join(ROOT, 'meta', 'execution-environment.yml'), encoding='utf-8') as handle:
        text = handle.read()
    assert re.search(r'^\s+python:\s*requirements\.txt\s*$', text, re.M), text
