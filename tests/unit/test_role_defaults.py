# -*- coding: utf-8 -*-
# Copyright: Contributors to failsafe.deploy
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Every role setting has one home: a variable is defined in exactly one roles/*/defaults or roles/*/vars file. The
settings several roles read live in the common role, which every other role depends on."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import collections
import glob
import os

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ROLES = os.path.join(ROOT, 'roles')


def definitions(roles=ROLES):
    """{variable: [file, ...]} over every roles/*/defaults/*.yml and roles/*/vars/*.yml (and their main/ folders)."""
    found = collections.defaultdict(list)
    for kind in ('defaults', 'vars'):
        for pattern in ('*.yml', '*.yaml', 'main/*.yml', 'main/*.yaml'):
            for path in sorted(glob.glob(os.path.join(roles, '*', kind, pattern))):
                with open(path, encoding='utf-8') as handle:
                    data = yaml.safe_load(handle) or {}
                for variable in data:
                    found[variable].append(os.path.relpath(path, os.path.dirname(roles)))
    return found


def defined_twice(roles=ROLES):
    return sorted('%s is defined in %d files: %s' % (variable, len(files), ', '.join(files))
                  for variable, files in definitions(roles).items() if len(files) > 1)


def test_no_role_variable_is_defined_in_more_than_one_defaults_or_vars_file():
    assert defined_twice() == [], '\n'.join(
        ['Each setting has one home; move a setting several roles read to roles/common/defaults/main.yml '
         '(internal values to roles/common/vars/main.yml):'] + defined_twice())


def test_the_check_names_the_variable_and_both_files(tmp_path):
    for role, kind in (('a', 'defaults'), ('b', 'vars')):
        folder = tmp_path / 'roles' / role / kind
        folder.mkdir(parents=True)
        (folder / 'main.yml').write_text('---\nfailsafe_x: 1\nfailsafe_%s_only: 2\n' % role)
    assert defined_twice(str(tmp_path / 'roles')) == [
        'failsafe_x is defined in 2 files: roles/a/defaults/main.yml, roles/b/vars/main.yml']


def test_every_role_that_reads_a_shared_setting_depends_on_the_common_role():
    shared = set(definitions()) & set(yaml.safe_load(open(os.path.join(ROLES, 'common', 'defaults', 'main.yml'))))
    assert {'failsafe_name', 'failsafe_state_dir', 'failsafe_verify_checks', 'failsafe_service_manager'} <= shared
    for role in sorted(os.listdir(ROLES)):
        if role == 'common':
            continue
        with open(os.path.join(ROLES, role, 'meta', 'main.yml'), encoding='utf-8') as handle:
            meta = yaml.safe_load(handle)
        assert {'role': 'failsafe.deploy.common'} in (meta.get('dependencies') or []), role
