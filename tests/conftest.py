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
