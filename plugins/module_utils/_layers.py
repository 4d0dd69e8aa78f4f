# -*- coding: utf-8 -*-
# Private to this collection: not a public API.
# Copyright: Contributors to failsafe.deploy
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Layers: the kinds of state a transaction changes on a host, each behind one small interface.

A transaction is an ordered undo log of layers kept in the host's journal (``journal['layers']``). Each layer
kind implements:

- ``capture(params)``: before the change, record what its undo needs (a dict stored in the journal);
- ``apply(params, record)``: make the change (may be done in several calls: applying twice is harmless);
- ``undo(record)``: put back what ``capture`` recorded; idempotent, so a rollback cut short and run again finishes
  the job;
- ``verify(record)``: prove the undo took; returns a list of problems (empty: proven).

The kinds live one per module in ``kinds/`` beside this file: ``files`` (files and configuration, through the
snapshot store), ``release`` (the ``current`` pointer and the ledger) and ``service`` (supervisor or systemd), which
the engine undoes itself, and the kinds that register themselves (``kinds/__init__.py`` loads them). This module is
the interface they share (``Layer``, ``LayerError``, ``register``, ``STAGES``, the default command runner).

A rollback undoes the engine's own kinds in a fixed order: the snapshot restore (files, configuration and the
``current`` link as they were), then the release pointer (back to the last verified release), and a layer whose
``restarts`` is true (the service) last: a restart reads what the other layers restored.
Layers that live on other hosts (a load balancer, a database server, a flag service) are undone by their own plays.

More kinds plug in through ``register``: a class with ``kind``, ``stage`` (one of ``STAGES``, declared: a kind
without one, or with a stage the rollback does not run, is refused) and the four methods, built as
``cls(options, run)`` from the ``layer`` option of the transaction module's ``apply`` phase. Across a fleet, and on
one host, layers are undone stage by stage in the order of ``STAGES`` (flags, then traffic, then code and
configuration, then the database, then infrastructure), and within a stage in the reverse order of their
application. A registered kind
of the code stage is undone after the snapshot restore and the release pointer, before the service restarts.
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import os
import subprocess

from ansible_collections.failsafe.deploy.plugins.module_utils._errors import FailsafeError


class LayerError(FailsafeError):
    """A layer could not apply, undo or verify; ``details`` go into the module's failure result."""


# The order in which a rollback undoes layers, across the fleet and on each host: the kill switch first, traffic
# back next, then code and configuration (files, release pointer, service), then the database, and infrastructure
# (Terraform, CloudFormation) last: it was applied first, and the database and the code depend on it.
STAGES = ('flags', 'traffic', 'code', 'database', 'infra')

# kind -> class of the layers applied through the ``apply`` phase (filled by ``register``)
KINDS = {}

# The kinds the engine undoes itself in the code stage (files, release pointer, service); every other kind a journal
# holds is undone through ``KINDS``, or the rollback fails naming it.
BUILT_IN_KINDS = ('files', 'release', 'service')


def register(cls):
    """Class decorator: make a layer kind available to the ``apply`` phase and to the rollback. A kind declares its
    rollback stage; one that declares none, or a stage the rollback does not run (``STAGES``), is refused: the
    rollback would never undo it."""
    if not cls.kind or cls.kind in BUILT_IN_KINDS:
        raise ValueError('layer kind %r: a registered kind needs a name of its own (not empty, not one of %s)'
                         % (cls.kind, ', '.join(BUILT_IN_KINDS)))
    if cls.stage is None:
        raise ValueError('layer kind %s declares no rollback stage: set its stage to one of %s'
                         % (cls.kind, ', '.join(STAGES)))
    if cls.stage not in STAGES:
        raise ValueError('layer kind %s: stage %r is not one the rollback runs (%s)'
                         % (cls.kind, cls.stage, ', '.join(STAGES)))
    KINDS[cls.kind] = cls
    return cls


class Layer(object):
    """The interface every layer kind implements.

    Registered kinds are built as ``cls(options, run)``: ``options`` is the ``layer`` dict of the ``apply`` phase
    (its ``kind`` and ``id`` keys included), ``run`` a callable(argv) -> (rc, out, err). ``describe(options)`` says
    in words what ``apply`` would change (check mode); ``apply`` returns a dict with at least ``changed``.
    """

    kind = None
    # the rollback stage (one of STAGES): every kind declares its own
    stage = None
    restarts = False
    # options never written to the journal (passwords, tokens); the rollback gets them again in ``layer_secrets``
    secret_options = ()

    def describe(self, options):
        return 'apply the %s layer' % self.kind

    def plan(self, options):
        """Check mode: what ``apply`` would change, without changing it (``changed``, ``msg``, optional ``diff``)."""
        return {'changed': True, 'msg': 'check mode: would %s' % self.describe(options)}

    def capture(self, params):  # pragma: no cover - interface
        raise NotImplementedError

    def apply(self, params, record):  # pragma: no cover - interface
        raise NotImplementedError

    def undo(self, record):  # pragma: no cover - interface
        raise NotImplementedError

    def verify(self, record):  # pragma: no cover - interface
        raise NotImplementedError


def _run(argv):
    try:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=dict(os.environ, LC_ALL='C'))
        out, err = proc.communicate()
    except OSError as e:
        return 127, '', '%s: %s' % (argv[0], e.strerror)
    return proc.returncode, out.decode('utf-8', 'replace'), err.decode('utf-8', 'replace')
