# -*- coding: utf-8 -*-
# Copyright: Contributors to failsafe.deploy
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Offline stand-in for ansible-test's get-pip bootstrap script.

ansible-test downloads get-pip-<version>.py from a host that may be unreachable; it caches the script as
~/.ansible/test/cache/get_pip_<version>.py and runs it with pip-install arguments. This stand-in seeds pip
with ``ensurepip`` and then installs the requested packages with that pip, so the indexes configured in
~/.config/pip/pip.conf (mirrors, local wheel folders) are used instead of the network.
"""

import subprocess
import sys

# get-pip.py options that ``pip install`` does not understand.
DROPPED = ('--no-setuptools', '--no-wheel')


def main():
    """Seed pip, then pip-install the arguments ansible-test passed."""
    args = [arg for arg in sys.argv[1:] if arg not in DROPPED]
    subprocess.check_call([sys.executable, '-m', 'ensurepip', '--default-pip'], stdout=subprocess.DEVNULL)
    if args:
        subprocess.check_call([sys.executable, '-m', 'pip', 'install'] + args)


if __name__ == '__main__':
    main()
