# -*- coding: utf-8 -*-
# Private to this collection: not a public API.
# Copyright: Contributors to failsafe.deploy
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""What a rollback undid, in words: one phrase per undone layer (from the entry the engine reports for it), and the
one-line summary of a whole rollback, which names the release the host runs after it and sums up every stage.

Shared by the engine (the module's ``msg``) and the controller (the banner lines and the incident reports), so that
a host's summary reads the same everywhere."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type


def _listed(values):
    values = [str(v) for v in values or [] if v not in (None, '')]
    return ', '.join(values)


def _revision(value):
    """A recorded database revision: a tool's revision id, or the list of versions applied (the last one)."""
    if isinstance(value, (list, tuple)):
        return str(value[-1]) if value else 'no migration'
    return str(value) if value not in (None, '') else 'no migration'


def _database(entry):
    name = entry.get('database') or 'the database'
    method = entry.get('method')
    if method == 'nothing to undo':
        return 'database %s unchanged (nothing to undo)' % name
    if method == 'remove':
        words = 'database %s removed (this deploy created it)' % name
        if entry.get('data_loss'):
            words += ' (writes dropped in %s)' % (_listed(entry.get('dropped_writes_in')) or 'some tables')
        return words
    if method == 'kept':
        return 'database %s left as it is (another file took the place of the one this deploy created)' % name
    if method == 'restore':
        words = 'database %s restored from its backup' % name
        if entry.get('data_loss'):
            words += ' (writes dropped in %s)' % (_listed(entry.get('dropped_writes_in')) or 'some tables')
        return words
    reverted = _listed(entry.get('reverted'))
    if method == 'reverse migrations':
        return 'database %s migrated back%s to %s' % (
            name, (' (undid %s)' % reverted) if reverted else '', _revision(entry.get('revision')))
    return 'database %s restored' % name


def layer_words(entry):
    """What one undone layer did, in a few words; ``entry`` is a dict of the rollback report's ``layers``."""
    if not isinstance(entry, dict):
        return None
    if entry.get('undid'):
        return entry['undid']
    kind = entry.get('kind')
    if kind == 'files':
        paths = entry.get('paths')
        if paths is None:
            return 'files restored'
        return '%d path(s) restored' % paths if paths else '0 path(s) restored (none had changed)'
    if kind == 'release':
        target, was = entry.get('target'), entry.get('was')
        if target is None:
            words = 'no release to switch back to: %s taken out of service' % (was or 'the release')
        elif was is not None and was != target:
            words = 'release switched back from %s to %s' % (was, target)
        else:
            words = 'release left on %s' % target
        if entry.get('quarantined') and entry.get('failed'):
            words += ' (%s quarantined)' % entry['failed']
        return words
    if kind == 'service':
        action = entry.get('action')
        if action == 'unloaded':
            return 'service stopped and unloaded (no release to serve)'
        if action == 'started':
            return 'service started (it was not running)'
        return 'service restarted'
    if kind == 'database':
        return _database(entry)
    if kind == 'flags':
        flags = entry.get('flags')
        names = sorted(flags) if isinstance(flags, dict) else []
        return 'flag(s) %s restored' % _listed(names) if names else 'flags restored'
    if kind == 'traffic':
        return 'traffic restored (%s)' % entry['traffic'] if entry.get('traffic') else 'traffic restored'
    if kind == 'removed_release':
        return 'staged release %s removed' % entry.get('release')
    if kind == 'removed_partial':
        return 'half-staged copy of release %s removed' % entry.get('release')
    return '%s undone' % (entry.get('key') or kind or 'a layer')


def summary(txid, failed, running, stages, activated=True, nothing_deployed=False, has_release=True):
    """The last line of a rollback: the release the host runs now and what every stage undid.

    ``stages``: [(stage, [words...])] in the order they ran, earlier calls of a staged rollback included. ``running``:
    the release ``current`` names after the rollback (None: none). ``activated``: whether the failed release was ever
    switched to in this transaction."""
    if not has_release:
        head = 'rolled back transaction %s (layers only)' % txid
    elif nothing_deployed or running is None:
        head = 'rolled back transaction %s: %s -> nothing deployed (no release before it)' % (txid, failed)
    else:
        head = 'rolled back transaction %s: %s -> %s, the release this host runs now' % (txid, failed, running)
        if not activated:
            head += ' (%s was never activated: %s kept running)' % (failed, running)
    done = [(stage, words) for stage, words in stages if words]
    if len(done) > 1:
        undone = '; '.join('%s stage: %s' % (stage, ', '.join(words)) for stage, words in done)
    elif done:
        undone = ', '.join(done[0][1])
    else:
        undone = 'nothing'
    return '%s; undone: %s; restore proven' % (head, undone)
