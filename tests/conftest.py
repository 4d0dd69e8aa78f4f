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
