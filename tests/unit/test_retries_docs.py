"""A health check's ``retries`` counts further attempts after a failed first one (as wait_for and uri count them):
run_probe makes 1 + retries attempts, and every role setting that passes ``retries`` on says so, never "attempts"."""
import os
import re

import pytest

from ansible_collections.failsafe.deploy.plugins.module_utils._health import Outcome, run_probe

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ROLES = os.path.join(ROOT, 'roles')


def retries_settings():
    """(role, variable, the comment above it) of every *_retries variable in the roles' defaults."""
    found = []
    for role in sorted(os.listdir(ROLES)):
        path = os.path.join(ROLES, role, 'defaults', 'main.yml')
        if not os.path.exists(path):
            continue
        with open(path, encoding='utf-8') as handle:
            text = handle.read()
        for match in re.finditer(r'((?:^#.*\n)+)^(failsafe_\w*retries):', text, re.M):
            comment = ' '.join(line.lstrip('# ') for line in match.group(1).splitlines())
            found.append((role, match.group(2), comment))
    return found


@pytest.mark.parametrize('retries', [0, 1, 10])
def test_a_failing_check_is_tried_one_time_more_than_its_retries(retries):
    calls = []

    def probe():
        calls.append(1)
        return Outcome(False, 0.0, error='down')

    result = run_probe(probe, retries=retries, sleep=0, sleeper=lambda s: None)
    assert len(calls) == len(result['attempts']) == 1 + retries and not result['ok']


def test_the_scan_finds_the_health_check_retries_settings():
    names = set(name for dummy, name, dummy in retries_settings())
    assert {'failsafe_verify_retries', 'failsafe_rollback_check_retries', 'failsafe_confirm_check_retries',
            'failsafe_preflight_check_retries'} <= names


@pytest.mark.parametrize('role, name, comment', retries_settings())
def test_a_retries_setting_is_described_as_further_attempts(role, name, comment):
    assert re.search(r'\bfurther attempts\b', comment, re.I), '%s/%s: %s' % (role, name, comment)
    assert not re.match(r'attempts\b', comment, re.I), '%s/%s: %s' % (role, name, comment)
