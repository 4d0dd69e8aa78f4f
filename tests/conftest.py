# Makes this checkout importable as ansible_collections.failsafe.deploy for every test, through the
# throwaway link that scripts/setup.sh creates (the repository itself is never moved).
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COLLECTIONS = os.path.join(ROOT, '.build', 'collections')
LINK = os.path.join(COLLECTIONS, 'ansible_collections', 'failsafe', 'deploy')

if not os.path.islink(LINK) and not os.path.isdir(LINK):
    os.makedirs(os.path.dirname(LINK), exist_ok=True)
    os.symlink(ROOT, LINK)
if COLLECTIONS not in sys.path:
    sys.path.insert(0, COLLECTIONS)

# The fleet of namespace SSH hosts (tests/fleet) is a pytest plugin: the repository root must be importable.
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
pytest_plugins = ['tests.fleet.pytest_fleet']

# The module runs of the tests' local hosts (the demo sites: local connection, this virtualenv's python) compile
# ansible-core's module_utils from each AnsiballZ payload again, as the fleet's hosts would without their
# usercustomize.py (tests/fleet/fleet.py, module docstring). Every process the tests start gets the same stand-in as
# a sitecustomize.py on PYTHONPATH, with a cache directory of its own: it looks up nothing but ansible.module_utils.*
# read from a payload zip, keyed by a hash of each file's source, so the same code runs, compiled once.
# FAILSAFE_FLEET_BYTECODE=off turns it off with the fleet's.
if os.environ.get('FAILSAFE_FLEET_BYTECODE', 'on').lower() not in ('off', '0', 'false', 'no'):
    from tests.fleet.fleet import write_module_utils_cache  # noqa: E402  pylint: disable=wrong-import-position

    _SITE = os.path.join(ROOT, '.build', 'module-utils-site')
    write_module_utils_cache(_SITE, 'sitecustomize.py', os.path.join(ROOT, '.build', 'module-utils-cache'))
    if _SITE not in os.environ.get('PYTHONPATH', '').split(os.pathsep):
        os.environ['PYTHONPATH'] = os.pathsep.join(p for p in (_SITE, os.environ.get('PYTHONPATH', '')) if p)


# CPU seconds of each test, where scripts/test.sh runs this pytest in a cgroup of its own (FAILSAFE_CPU_USAGE names
# its usage file): the group's usage from the test's setup to its teardown, the hosts and servers it drives
# included, is recorded as the test's `cpu_seconds` property in the JUnit report (tests/output/durations.md sums it
# by file).
_CPU_USAGE = os.environ.get('FAILSAFE_CPU_USAGE', '')


def _cpu_usage():
    try:
        with open(_CPU_USAGE) as handle:
            text = handle.read()
    except OSError:
        return None
    if _CPU_USAGE.endswith('cpuacct.usage'):
        return int(text) / 1e9
    for line in text.splitlines():
        if line.startswith('usage_usec '):
            return int(line.split()[1]) / 1e6
    return None


if _CPU_USAGE:
    import pytest

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_setup(item):
        item._failsafe_cpu_start = _cpu_usage()
        yield

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_teardown(item):
        yield
        start, end = getattr(item, '_failsafe_cpu_start', None), _cpu_usage()
        if start is not None and end is not None:
            item.user_properties.append(('cpu_seconds', '%.2f' % (end - start)))
