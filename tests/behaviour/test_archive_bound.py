"""The size bound of a release archive through real ansible-playbook runs on the local demo site (a real
supervisord, the real example app): an archive whose members declare more than failsafe_release_max_size is
refused by the preflight's open task, before the transaction opens and before the release role uploads anything,
naming the archive, what it would write, the limit and the releases directory, and nothing on the host changes;
a limit given with a unit that the release fits deploys it."""
import json
import os
import tarfile

import pytest

pytestmark = pytest.mark.slow


def _state(d):
    """What a refused deploy must leave as it was: captured paths, releases/, ledger, journal, lock, reports."""
    return {
        'digest': d.digest(),
        'releases': sorted(os.listdir(os.path.join(d.app_root, 'releases'))),
        'ledger': d.ledger(),
        'journal': d.journal(),
        'lock': os.path.exists(d.lock_path()),
        'reports': d.incident_reports(),
    }


def test_given_a_release_larger_than_failsafe_release_max_size_then_preflight_refuses_it_and_nothing_changes(
        module_deploy):
    d = module_deploy
    proc = d.deploy('1.0.0')
    assert proc.returncode == 0, proc.stdout[-4000:]
    archive = os.path.join(d.dir, 'dist', 'app-2.0.0.tar.gz')
    with tarfile.open(archive) as tf:
        size = sum(m.size for m in tf if m.isreg())
    before = _state(d)
    proc = d.deploy('2.0.0', '-e', 'failsafe_release_max_size=%d' % (size - 1))
    assert proc.returncode != 0
    section = proc.stdout.split('Open the deploy transaction]', 1)[1].split('TASK [', 1)[0]
    assert 'release archive %s would write' % archive in section, section
    assert '(%d bytes) into %s' % (size, os.path.join(d.app_root, 'releases')) in section, section
    assert 'failsafe_release_max_size is' in section and '(%d bytes)' % (size - 1) in section, section
    assert 'Upload and stage the release' not in proc.stdout
    after = _state(d)
    # the callback writes the refusal up (no rollback, no alert): one new report, outcome refused
    new = [r for r in after.pop('reports') if r not in before.pop('reports')]
    assert after == before
    assert len(new) == 1, new
    with open(new[0]) as handle:
        assert json.load(handle)['outcome'] == 'refused'
    # a limit with a unit that the release fits: deployed, and the role's argument spec takes the unit
    proc = d.deploy('2.0.0', '-e', 'failsafe_release_max_size=%dK' % (size // 1024 + 1))
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert d.http('/version') == (200, '2.0.0')
