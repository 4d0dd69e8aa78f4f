"""Re-running a finished deploy changes nothing; --check changes nothing on the host."""
import os

import pytest

from support import recap_changed, tree_digest

pytestmark = pytest.mark.slow


def test_given_a_deployed_release_when_the_same_deploy_runs_again_then_nothing_changes(local_deploy):
    d = local_deploy
    first = d.deploy('2.0.0')
    assert first.returncode == 0, first.stdout[-6000:]
    assert recap_changed(first.stdout)['localhost'] > 0
    everything = [d.app_root, d.state_dir, os.path.dirname(d.program_conf)]
    before = tree_digest(everything)
    second = d.deploy('2.0.0')
    assert second.returncode == 0, second.stdout[-6000:]
    assert recap_changed(second.stdout) == {'localhost': 0}
    assert tree_digest(everything) == before
    assert d.http('/version') == (200, '2.0.0')


def test_given_a_deployed_release_when_another_is_deployed_in_check_mode_then_the_host_is_unchanged(local_deploy):
    d = local_deploy
    first = d.deploy('1.0.0')
    assert first.returncode == 0, first.stdout[-6000:]
    everything = [d.app_root, d.state_dir, os.path.dirname(d.program_conf)]
    before = tree_digest(everything)
    checked = d.deploy('2.0.0', '--check', '--diff')
    assert checked.returncode == 0, checked.stdout[-6000:]
    assert tree_digest(everything) == before
    assert d.http('/version') == (200, '1.0.0')
    assert d.receiver.events == []
