"""The molecule scenarios of extensions/molecule, run as an operator would: `molecule test -s <scenario>`.

Each scenario builds its own namespace SSH fleet (tests/fleet, named by $FAILSAFE_MOLECULE_FLEET, default `fsm`) in
create.yml and tears it down in destroy.yml, so they run one after the other. Needs root (the fleet does).
"""
import os
import shutil
import subprocess
import tempfile
import time

import pytest

from support import assert_no_ignored_callback_errors
from tests.requires import require_root

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VENV_BIN = os.path.join(os.environ.get('FAILSAFE_VENV', os.path.join(ROOT, '.venv')), 'bin')

pytestmark = [pytest.mark.slow, pytest.mark.fleet]


@pytest.mark.parametrize('scenario', ['default', 'rollback'])
def test_molecule_scenario_passes(scenario, tmp_path):
    require_root('the namespace fleet needs root')
    # molecule keeps its ephemeral directory (and the ssh control sockets) under ANSIBLE_HOME: a short one keeps
    # the socket paths under the 108-byte limit of unix sockets.
    home = tempfile.mkdtemp(prefix='fsm-')
    try:
        _run(scenario, home, tmp_path)
    finally:
        shutil.rmtree(home, ignore_errors=True)


def _run(scenario, home, tmp_path):
    env = dict(os.environ)
    for key in ('ANSIBLE_STDOUT_CALLBACK', 'ANSIBLE_CALLBACKS_ENABLED', 'ANSIBLE_CONFIG',
                'MOLECULE_EPHEMERAL_DIRECTORY'):
        env.pop(key, None)
    env.update({
        'PATH': VENV_BIN + os.pathsep + os.environ.get('PATH', ''),
        'ANSIBLE_COLLECTIONS_PATH': os.path.join(ROOT, '.build', 'collections'),
        'ANSIBLE_COLLECTIONS_SCAN_SYS_PATH': 'false',
        'ANSIBLE_HOME': home,
        'ANSIBLE_LOCAL_TEMP': os.path.join(home, 'tmp'),
        'ANSIBLE_NOCOLOR': '1',
        'NO_COLOR': '1',
        'FAILSAFE_MOLECULE_FLEET': os.environ.get('FAILSAFE_MOLECULE_FLEET', 'fsm'),
    })
    started = time.monotonic()
    proc = subprocess.run([os.path.join(VENV_BIN, 'molecule'), 'test', '-s', scenario], cwd=ROOT, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=900, check=False)
    elapsed = time.monotonic() - started
    (tmp_path / 'molecule.log').write_text(proc.stdout)
    print('molecule test -s %s: rc=%d in %.1f s' % (scenario, proc.returncode, elapsed))
    assert proc.returncode == 0, proc.stdout[-8000:]
    assert 'verify' in proc.stdout and 'failed=0' in proc.stdout.split('SCENARIO RECAP')[-1], proc.stdout[-3000:]
    assert_no_ignored_callback_errors(proc.stdout, where='molecule test -s %s' % scenario)
