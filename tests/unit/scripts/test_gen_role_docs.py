# -*- coding: utf-8 -*-
# Copyright: Contributors to failsafe.deploy
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The role docs generator refuses what a reader would be misled by: options sharing one text, a documentation
macro broken by a template, and generated files that are out of date (the docs gate runs its --check)."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import importlib.util
import os

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def _generator():
    spec = importlib.util.spec_from_file_location('failsafe_gen_role_docs', os.path.join(ROOT, 'scripts',
                                                                                         'gen_role_docs.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _spec(**options):
    return {'argument_specs': {'main': {'options': dict(
        (key, {'description': [text], 'type': 'str'}) for key, text in options.items())}}}


def test_two_options_with_one_text_are_a_problem():
    found = _generator().problems('r', _spec(a_before_tasks='Task files run before and after this step.',
                                             a_after_tasks='Task files run before and after this step.'))
    assert found == ['r/main: a_before_tasks and a_after_tasks share one description']


def test_a_template_inside_a_macro_is_a_problem():
    found = _generator().problems('r', _spec(checks='Defaults to C({{ failsafe_verify_checks | default([]) }}).'))
    assert found and 'a macro breaks' in found[0]


def test_plain_texts_and_dict_notation_are_fine():
    assert _generator().problems('r', _spec(hosts='Per host {host: {state_dir, name}}; see O(other).',
                                            name='Name of this deployment.')) == []


def test_the_committed_role_docs_are_what_the_generator_writes_and_have_no_problem():
    generator = _generator()
    assert generator.main(['--check']) == 0
