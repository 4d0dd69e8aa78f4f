# -*- coding: utf-8 -*-
# Private to this collection: not a public API.
# Copyright: Contributors to failsafe.deploy
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The layer kinds of this collection, one module each in this folder, and their registry.

``files``, ``release`` and ``service`` are the kinds the engine undoes itself in the code stage (it imports them);
``database``, ``traffic``, ``flags``, ``terraform`` and ``cloudformation`` register themselves
(``_layers.register``) and are loaded when first needed.
Their import is written inside a function: AnsiballZ still bundles the module with every module that uses the engine
(it finds imports at any depth), but a host compiles it only when a transaction applies or holds that kind, not on
every call (a host has no bytecode cache for what AnsiballZ ships). A new kind is a new module here and one loader
below. The interface every kind implements, and ``register``, live in ``_layers`` beside this folder: a kind module
imports that, never this registry, so that the registry's loaders and the kinds never import each other.
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

from ansible_collections.failsafe.deploy.plugins.module_utils import _layers


def _load_database():
    from ansible_collections.failsafe.deploy.plugins.module_utils.kinds import database  # noqa: F401  # pylint: disable=unused-import


def _load_traffic():
    from ansible_collections.failsafe.deploy.plugins.module_utils.kinds import traffic  # noqa: F401  # pylint: disable=unused-import


def _load_flags():
    from ansible_collections.failsafe.deploy.plugins.module_utils.kinds import flags  # noqa: F401  # pylint: disable=unused-import


def _load_terraform():
    from ansible_collections.failsafe.deploy.plugins.module_utils.kinds import terraform  # noqa: F401  # pylint: disable=unused-import


def _load_cloudformation():
    from ansible_collections.failsafe.deploy.plugins.module_utils.kinds import cloudformation  # noqa: F401  # pylint: disable=unused-import


# kind -> the loader of the module that registers it
LOADERS = {
    'database': _load_database,
    'traffic': _load_traffic,
    'flags': _load_flags,
    'terraform': _load_terraform,
    'cloudformation': _load_cloudformation,
}


def kind_class(kind):
    """The class of a layer kind (None for a kind this version does not know), its module loaded on first use.
    A kind registered by other means (a test, a later import) is found as registered."""
    cls = _layers.KINDS.get(kind)
    if cls is None and kind in LOADERS:
        LOADERS[kind]()
        cls = _layers.KINDS.get(kind)
    return cls


def load_all():
    """Load every kind of this collection; returns ``_layers.KINDS`` (for the words that list the kinds)."""
    for loader in LOADERS.values():
        loader()
    return _layers.KINDS


def stage_of(kind):
    """The rollback stage of a layer kind: the built-in kinds are code, registered kinds say theirs. A kind this
    version does not know is undone in the code stage, where the rollback fails naming it."""
    cls = kind_class(kind)
    return cls.stage if cls is not None else 'code'
