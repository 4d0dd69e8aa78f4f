# -*- coding: utf-8 -*-
# Private to this collection: not a public API.
# Copyright: Contributors to failsafe.deploy
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The host-side transaction engine: each phase of a deploy is one call, whatever layers it touches.

Phases: ``open`` (dead-run recovery, lock, ledger and quarantine checks, disk check, the release archive's size
when it is known, a probe of the running release's checks, open, snapshot), ``stage`` (unpack the release beside
the others, once its archive's declared size is known to fit), ``activate`` (write the configuration and program
files, switch ``current``, restart when something changed), ``verify`` (the health checks), ``commit`` (ledger
verified, close, unlock, prune) and ``rollback`` (undo every applied layer in reverse order, restart, check
health, prove the restore, close). Each records in the journal what it applied, so that a rollback, run by this run,
a later one or by hand, knows what to undo; every phase is safe to run again, and a rollback cut short anywhere
finishes the job when run again.
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import copy
import grp
import os
import pwd
import time

from ansible_collections.failsafe.deploy.plugins.module_utils._applied import differences, fingerprint
from ansible_collections.failsafe.deploy.plugins.module_utils._atomic import _crash_point, atomic_write_bytes
from ansible_collections.failsafe.deploy.plugins.module_utils import _confirm
from ansible_collections.failsafe.deploy.plugins.module_utils._errors import EngineError, FailsafeError
from ansible_collections.failsafe.deploy.plugins.module_utils._health import CheckError, normalize_checks, run_checks
from ansible_collections.failsafe.deploy.plugins.module_utils._journal import (
    DeployState, JournalError, ensure_closed, ensure_locked, ensure_open, ensure_step, ensure_unlocked, iso,
    lock_expired,
)
from ansible_collections.failsafe.deploy.plugins.module_utils._layers import BUILT_IN_KINDS, STAGES, LayerError
from ansible_collections.failsafe.deploy.plugins.module_utils.kinds import kind_class, load_all, stage_of
from ansible_collections.failsafe.deploy.plugins.module_utils.kinds.files import FilesLayer
from ansible_collections.failsafe.deploy.plugins.module_utils.kinds.release import ReleaseLayer
from ansible_collections.failsafe.deploy.plugins.module_utils.kinds.service import ServiceLayer
from ansible_collections.failsafe.deploy.plugins.module_utils._release import (
    ReleaseError, ReleaseRoot, archive_size, check_archive_size, ensure_absent, ensure_active, ensure_pruned,
    ensure_query as release_query, ensure_staged, ensure_verified, sha256_file, validate_release_id,
)
from ansible_collections.failsafe.deploy.plugins.module_utils._snapshot import SnapshotStore
from ansible_collections.failsafe.deploy.plugins.module_utils._undone import layer_words, summary


# The commit-confirmed watchdog's entry point, written to the host by _confirm.arm: it finds the collection's code
# named in its parameters file, then waits and reverts with this engine's rollback. It lives here, with the engine
# that imports _confirm, so that _confirm never imports (nor names) the engine.
WATCHDOG_RUNNER = b'''# failsafe.deploy commit-confirmed watchdog: reverts a transaction unless its commit confirms it in time.
# Written by failsafe.deploy.transaction (phase activate); started detached, one per armed transaction.
import json
import sys

with open(sys.argv[1]) as handle:
    payload = json.load(handle)['payload']
sys.path.insert(0, payload)
from ansible_collections.failsafe.deploy.plugins.module_utils._confirm import watch  # noqa: E402
from ansible_collections.failsafe.deploy.plugins.module_utils._engine import guarded_rollback  # noqa: E402

sys.exit(watch(sys.argv[1], guarded_rollback))
'''


def _ds(p):
    return DeployState(p['state_dir'], p['name'])


def _store_dir(p):
    return os.path.join(p['state_dir'], 'snapshots')


def layer_key(entry):
    """A layer's identity in the undo log: its kind, or kind:id when a transaction holds several of one kind."""
    return entry.get('key') or entry['kind']


def record_layer(ds, run_id, kind, record, key=None, options=None):
    """Append (or replace) the undo record of a layer (kind, or key for one of several of a kind) in the open
    transaction of run_id."""
    journal = ds.read_journal()
    if not journal or journal.get('status') != 'open' or journal.get('run_id') != run_id:
        raise JournalError("no open transaction of run %s for '%s' to record the %s layer in"
                           % (run_id, ds.name, key or kind), journal=journal)
    layers = [dict(entry) for entry in journal.get('layers') or []]
    for entry in layers:
        if layer_key(entry) == (key or kind):
            if entry.get('record') == record and (options is None or entry.get('options') == options):
                return journal, False
            entry['record'] = record
            if options is not None:
                entry['options'] = options
            break
    else:
        entry = {'kind': kind, 'record': record, 'time': time.time(), 'iso': iso(time.time())}
        if key and key != kind:
            entry['key'] = key
        if options is not None:
            entry['options'] = options
        layers.append(entry)
    new = copy.deepcopy(journal)
    new['layers'] = layers
    if kind == 'files':
        new.setdefault('snapshots', {})['files'] = record['snapshot']
    ds.write_journal(new)
    return new, True


def layers_of(txn):
    """The transaction's undo log: exactly the layers that were applied (a layer never applied is never undone).

    A journal without an undo log (opened with the deploy_state module by a playbook of the operator's own, or by an
    older version) is read for what it recorded: the snapshot of its ``files`` and the release it deployed. It
    recorded no service, and so none is undone: the journal is the only source of a rollback."""
    if 'layers' in txn:
        return list(txn.get('layers') or [])
    layers = []
    files = (txn.get('snapshots') or {}).get('files')
    if files:
        layers.append({'kind': 'files', 'record': {'snapshot': files}})
    if txn.get('release'):
        layers.append({'kind': 'release', 'record': {'release': txn.get('release'),
                                                     'previous': txn.get('previous_release')}})
    return layers


# The order a host's layers are undone in: the snapshot restore first (files and configuration, and the current
# link as it was), then the release pointer (back to the last verified release, quarantining the failed one), and
# the service last, restarted on what the other layers restored.
UNDO_ORDER = {'files': 0, 'release': 1}


def is_config_change(txn, release=None):
    """Whether the transaction deploys a configuration change of the release that was already running."""
    return bool((txn.get('data') or {}).get('config_change')) and is_running_release(txn, release)


def is_running_release(txn, release=None):
    """Whether the transaction deploys the release that was already running (a configuration change of it, or a
    forced redeploy): it switches no release, so its rollback puts back the state before it, that release included,
    and quarantines nothing."""
    return bool(txn.get('release')) and txn.get('release') == txn.get('previous_release') \
        and (release is None or release == txn.get('release'))


def _ledger_state(app_root, release):
    """The ledger's state of ``release`` on this host (``unknown`` when it has no entry)."""
    return (ReleaseRoot(app_root).load_ledger()['releases'].get(release) or {}).get('state') or 'unknown'


def _activated(txn):
    return any(s.get('step') == 'activate' for s in txn.get('steps') or [])


def _shown_bad(txn):
    """Whether the journal records that the release was shown bad on this host after its activation (a failed
    verify): what quarantines it when the host reverts an activation nobody confirmed."""
    return _activated(txn) and any(s.get('step') == 'verify' and s.get('status') == 'failed'
                                   for s in txn.get('steps') or [])


# --- rollback -----------------------------------------------------------------------------------------------------

def pick_transaction(journal, rollback_run_id=None):
    """The transaction a rollback undoes: an open one or one whose rollback failed, or the committed transaction
    of ``rollback_run_id`` (a rollback of a finished deploy)."""
    if not journal:
        return None
    status = journal.get('status')
    if status in ('open', 'rollback_failed'):
        return journal
    if rollback_run_id and journal.get('run_id') == rollback_run_id and status == 'committed':
        return journal
    return None


def _progress(ds, txn, kind, field='undone', value=None):
    """Note in the journal that a layer's undo finished (for the report; a re-run undoes every layer again); with
    ``value``, what ``kind`` (a stage) undid, in words, under ``field``."""
    journal = ds.read_journal()
    if not journal or journal.get('txid') != txn.get('txid'):
        return
    new = copy.deepcopy(journal)
    rb = new.setdefault('rollback', {})
    if value is not None:
        rb.setdefault(field, {})[kind] = value
        ds.write_journal(new)
        return
    undone = rb.setdefault(field, [])
    if kind not in undone:
        undone.append(kind)
    ds.write_journal(new)


def _generic_layer(entry, p, run):
    """Build the registered layer kind of an undo-log entry, with the options recorded at apply time and the secret
    ones (never written to the journal) given again to the rollback in ``layer_secrets``."""
    cls = kind_class(entry['kind'])
    if cls is None:
        raise LayerError('layer kind %r is not known to this version of failsafe.deploy: it cannot be undone here'
                         % entry['kind'])
    options = dict(entry.get('options') or {})
    options.update((p.get('layer_secrets') or {}).get(layer_key(entry)) or {})
    return cls(options, run)


def _undo_registered(entry, p, run, txn, ds, report, stage):
    """Undo a layer of a registered kind (``KINDS``) and verify the undo before anything else is undone; returns the
    layer. A kind this version does not know fails here, naming the layer: no recorded layer is passed over."""
    key = layer_key(entry)
    report['step'] = 'undo the %s layer' % key
    layer = _generic_layer(entry, p, run)
    res = layer.undo(entry['record'])
    report['step'] = 'verify the undo of the %s layer' % key
    problems = layer.verify(entry['record'])
    if problems:
        raise LayerError('the %s layer was undone but does not check out: %s'
                         % (key, '; '.join(problems)), layer=key)
    done = {'kind': entry['kind'], 'undone': True, 'stage': stage}
    if key != entry['kind']:
        done['key'] = key
    done.update(res.get('report') or {})
    done['undid'] = layer_words(done)
    report['layers'].append(done)
    _progress(ds, txn, key)
    _crash_point('engine.%s-undone' % entry['kind'])
    return layer


def recorded_service(layers):
    """The service settings the transaction recorded with its service layer, or None when it recorded none."""
    for entry in layers:
        if entry['kind'] == 'service' and entry.get('options'):
            return dict(entry['options'])
    return None


def release_service(app_root, release):
    """The service settings the ledger recorded for a release when it was verified, or None."""
    if not release:
        return None
    service = (ReleaseRoot(app_root).load_ledger()['releases'].get(release) or {}).get('service')
    return dict(service) if isinstance(service, dict) and service else None


def _remember(rr, release, **fields):
    """Record in the ledger, in one write, what a verified release runs with besides its code: ``service`` (the
    settings a later rollback to it starts its service with when it is not running), ``applied`` (checksums of
    its configuration, service and flag settings, which a later run of the same release compares its own with) and
    ``build`` (the archive checksum, collection version and playbook commit the journal recorded).
    Fields given as None are left alone."""
    fields = dict((key, value) for key, value in fields.items() if value)
    ledger = rr.load_ledger()
    entry = ledger['releases'].get(release)
    if entry is None or all(entry.get(key) == value for key, value in fields.items()):
        return False
    entry.update(fields)
    rr.save_ledger(ledger)
    return True


def _nothing_deployed(txn, app_root):
    """Whether the journal records that no release was deployed before this transaction and no ``current`` link is
    there now: then a rollback has no release to go back to, and none to check."""
    return bool(txn.get('release')) and txn.get('previous_release') is None \
        and ReleaseRoot(app_root).current_target() is None


def _remove_staged(txn, app_root, report):
    """Remove the release directory this transaction staged (the journal says it was not there before), unless the
    release became current or went beyond staged (a release shown bad stays, quarantined, for investigation; one that
    ran and was reverted unconfirmed stays, for the next deploy)."""
    staged = txn.get('staged_release')
    if not staged or staged != txn.get('release') or _activated(txn):
        return None
    rr = ReleaseRoot(app_root)
    # a staging of it cut short (the host crashed while unpacking) left a half-unpacked copy beside the releases:
    # never a release, never the only copy of anything
    if rr.half_staged(staged):
        report['step'] = 'remove the half-staged copy of release %s' % staged
        rr.remove_half_staged(staged)
        report['removed_partial'] = staged
    state = (rr.load_ledger()['releases'].get(staged) or {}).get('state')
    if rr.read_current() == staged or state not in (None, 'staged'):
        return None
    report['step'] = 'remove release %s, staged by this transaction' % staged
    if not ensure_absent(rr, staged)['changed']:
        return None
    report['removed_release'] = staged
    _crash_point('engine.staged-removed')
    return staged


def _code_stage(p, run, txn, layers, ds, report, reason, quarantine):
    """Undo files and release pointer, then every other layer of the code stage through the registry (in the reverse
    order of its application, each undo verified), remove the release this transaction staged and never ran, restart
    the service on what they restored (or start it when it is not running), check health, prove the restore."""
    kinds = [entry['kind'] for entry in layers]
    app_root = txn.get('app_root') or p.get('app_root')
    state_layers = sorted((e for e in layers if e['kind'] in UNDO_ORDER), key=lambda e: UNDO_ORDER[e['kind']])
    # the release that ran when the rollback began, for the words of the release layer
    was = ReleaseRoot(app_root).read_current() if 'release' in kinds else None
    for entry in state_layers:
        kind = entry['kind']
        report['step'] = 'undo the %s layer' % kind
        if kind == 'files':
            res = FilesLayer(_store_dir(p)).undo(entry['record'])
            report['restored'] = res['restored']
            done = {'kind': kind, 'undone': True, 'paths': len(res['restored'])}
            _progress(ds, txn, kind)
            _crash_point('engine.files-undone')
        else:
            res = ReleaseLayer(app_root).undo(entry['record'], reason=reason, quarantine=quarantine,
                                              event='reverted' if p.get('unconfirmed') else 'rolled back')
            report['target_release'] = res['target']
            report['quarantined'] = res['quarantined']
            if res['quarantined'] and (txn.get('build') or {}).get('archive_sha256'):
                # the build shown bad: the redeploy gate refuses it unchanged (same archive checksum)
                _remember(ReleaseRoot(app_root), entry['record'].get('release'), failed_build=txn['build'])
            done = {'kind': kind, 'undone': True, 'target': res['target'], 'was': was,
                    'failed': entry['record'].get('release'), 'quarantined': res['quarantined']}
            _progress(ds, txn, kind)
            _crash_point('engine.release-undone')
        done['undid'] = layer_words(done)
        report['layers'].append(done)
    # every other kind of the code stage (registered ones; one this version does not know fails, naming its layer)
    registered = [e for e in layers if e['kind'] not in BUILT_IN_KINDS]
    undone = [(entry, _undo_registered(entry, p, run, txn, ds, report, 'code')) for entry in reversed(registered)]
    removed = _remove_staged(txn, app_root, report)
    # Without a release layer nothing switched: what runs is what ran before, and it keeps serving; unless the
    # journal records that nothing was deployed before (a first deploy): then there is no release to serve.
    if 'release' in kinds:
        serving = report['target_release'] is not None
    else:
        serving = not _nothing_deployed(txn, app_root)
    report['nothing_deployed'] = not serving and bool(txn.get('release'))
    # The service as the transaction recorded it (a journal of an older version recorded none: the rollback's own).
    settings = recorded_service(layers) if 'service' in kinds else None
    if 'service' in kinds and settings is None:
        settings = dict(p.get('service') or {})
    restart = p.get('restart', True)
    if 'service' in kinds and restart and settings.get('manager', 'supervisor') != 'none':
        service = ServiceLayer(settings, run)
        report['step'] = 'restart the service' if serving else 'stop and unload the service of a first release'
        service.undo({}, serving=serving)
        problems = service.verify({}, serving=serving)
        if problems:
            raise LayerError('; '.join(problems))
        done = {'kind': 'service', 'undone': True, 'action': 'restarted' if serving else 'unloaded'}
        done['undid'] = layer_words(done)
        report['layers'].append(done)
        _progress(ds, txn, 'service')
    elif 'service' not in kinds and restart and serving and txn.get('release'):
        # The transaction never changed the service, but the release restored may not be running (the host crashed
        # or rebooted during the deploy): start it with the settings the ledger recorded for it when it was
        # verified. A release with no such record has no service this rollback knows of, and none is touched.
        settings = release_service(app_root, ReleaseRoot(app_root).read_current())
        if settings and settings.get('manager', 'supervisor') != 'none':
            service = ServiceLayer(settings, run)
            if not service.running():
                report['step'] = 'start the service of the restored release'
                service.apply({}, {}, restart=False)
                problems = service.verify({})
                if problems:
                    raise LayerError('; '.join(problems))
                report['service_started'] = settings.get('name') or True
    _crash_point('engine.service-undone')
    undone_at = time.time()
    if serving and p.get('checks'):
        report['step'] = 'check the health of the restored release'
        specs = normalize_checks(p['checks'], p.get('check_defaults'))
        # the host's own revert waits no delay before the first attempt (check_delay 0): its retries cover the start
        ok, results, msg = run_checks(specs, delay=p.get('check_delay'))
        report['checks'] = results
        if not ok:
            raise LayerError(msg, checks=results)
    _crash_point('engine.checked')
    checked_at = time.time()
    report['step'] = 'prove the restore'
    problems = []
    for entry in state_layers:
        if entry['kind'] == 'files':
            problems += FilesLayer(_store_dir(p)).verify(entry['record'])
        else:
            problems += ReleaseLayer(app_root).verify({'target': report['target_release']})
    for entry, layer in undone:
        # proven again once the service restarted: the restore proven is every layer the code stage undid
        problems += ['the %s layer: %s' % (layer_key(entry), problem) for problem in layer.verify(entry['record'])]
    if removed and ReleaseRoot(app_root).has_release_dir(removed):
        problems.append('release %s, staged by this transaction, is still in %s'
                        % (removed, ReleaseRoot(app_root).releases_dir))
    if report.get('removed_partial') and ReleaseRoot(app_root).half_staged(report['removed_partial']):
        problems.append('the half-staged copy of release %s is still in %s'
                        % (report['removed_partial'], ReleaseRoot(app_root).releases_dir))
    if problems:
        raise LayerError('the restored state does not match the snapshot: %s' % '; '.join(problems))
    return undone_at, checked_at


def rollback(p, run, check_mode=False):
    """Undo the transaction in the journal, in one process, stage by stage (``STAGES``: flags, traffic, code,
    database; ``stages`` limits a call to some of them, for a fleet that undoes one stage everywhere before the next):
    registered layers in the reverse order of their application, each verified before the next; the code stage
    restores the snapshot, the release pointer and the service last (UNDO_ORDER), then checks health and proves the
    restore. The transaction closes once no layer is left to undo. Returns the module result."""
    ds = _ds(p)
    journal = ds.read_journal()
    txn = pick_transaction(journal, p.get('rollback_run_id'))
    if txn is None:
        status = journal.get('status') if journal else 'none'
        lock = ds.read_lock()
        lock_run = (lock or {}).get('run_id')
        closed_here = bool(journal) and status in ('rolled_back', 'committed') and lock_run == journal.get('run_id')
        taken_by_run = bool(p.get('rollback_run_id')) and lock_run == p.get('rollback_run_id')
        if not check_mode and lock and (closed_here or taken_by_run):
            # closed, then cut short before the lock was given back; or the run being rolled back took the lock
            # and died before it opened its transaction: give the lock back
            ensure_unlocked(ds, lock.get('run_id'))
        msg = ("No open transaction for '%s' on this host (journal status: %s): nothing to roll back."
               % (p['name'], status))
        if status == 'committed':
            msg += (' The last deploy (release %s, run %s) committed; to roll it back to the release before it, run '
                    'failsafe.deploy.rollback again with -e failsafe_rollback_run_id=%s'
                    % (journal.get('release'), journal.get('run_id'), journal.get('run_id')))
        return {'changed': False, 'msg': msg, 'nothing_to_undo': True, 'journal': journal}
    app_root = txn.get('app_root') or p.get('app_root')
    layers = layers_of(txn)
    kinds = [entry['kind'] for entry in layers]
    stages = [s for s in STAGES if s in (p.get('stages') or STAGES)]
    done_before = set((txn.get('rollback') or {}).get('stages_done') or []) if p.get('stages') else set()
    before = ReleaseRoot(app_root).read_current() if 'release' in kinds else None
    quarantine = _activated(txn) or (before is not None and before == txn.get('release'))
    if p.get('unconfirmed') or (p.get('quarantine') == 'shown_bad' and txn.get('status') != 'rollback_failed'):
        # the host reverts an activation nobody confirmed, or a recovery undoes what a run that died left (not a
        # rollback that failed after a failure was seen): the release is quarantined only when it was shown bad
        # after its activation
        quarantine = _shown_bad(txn)
    reason = p.get('reason') or 'rollback requested'
    report = {'txid': txn.get('txid'), 'run_id': txn.get('run_id'), 'failed_release': txn.get('release'),
              'quarantined': False, 'target_release': None, 'restored': [], 'verified': False, 'layers': [],
              'stages': stages}
    by_stage = dict((s, []) for s in STAGES)
    for entry in layers:
        by_stage[stage_of(entry['kind'])].append(entry)
    if check_mode:
        for entry in layers:
            if entry['kind'] == 'files':
                res = SnapshotStore(_store_dir(p)).restore(entry['record']['snapshot'], check_mode=True)
                report['restored'] = res['restored']
        report['would_undo'] = [layer_key(e) for s in stages for e in
                                (by_stage[s] if s == 'code' else list(reversed(by_stage[s])))]
        return {'changed': True, 'failsafe_rollback': report, 'msg': 'check mode: would undo %s of transaction %s'
                % (', '.join(report['would_undo']) or 'nothing', txn.get('txid'))}
    report['step'] = 'read the journal'
    started = time.time()
    undone_at = checked_at = None
    # what each stage undid, in words: the stages an earlier call of this staged rollback undid, then this call's
    undid = [(s, list(((txn.get('rollback') or {}).get('undid') or {}).get(s) or [])) for s in STAGES
             if s in done_before and s not in stages]
    try:
        for stage in stages:
            mark = len(report['layers'])
            # a deploy's code stage runs even with no layer recorded: a staged release to remove, a service to start
            if stage == 'code' and (by_stage['code'] or txn.get('release')):
                undone_at, checked_at = _code_stage(p, run, txn, by_stage['code'], ds, report, reason, quarantine)
            for entry in reversed(by_stage[stage] if stage != 'code' else []):
                _undo_registered(entry, p, run, txn, ds, report, stage)
            words = _stage_words(report, stage, mark)
            undid.append((stage, words))
            if p.get('stages') and words:
                # a staged rollback sums up every stage in its last call: what this one undid stays in the journal
                _progress(ds, txn, stage, field='undid', value=words)
            if by_stage[stage]:
                _progress(ds, txn, stage, field='stages_done')
        # a stage with layers, not undone in this call nor by an earlier call of this rollback, is still pending
        pending = [s for s in STAGES if s not in stages and by_stage[s] and s not in done_before]
        has_release = bool(txn.get('release')) or 'release' in kinds
        # the release the host runs now, read from its current link (not from what the layers returned): a
        # rollback that never switched the release (it failed before the activation) leaves the one before running
        running = ReleaseRoot(app_root).read_current() if has_release and app_root else None
        report['running_release'] = running
        if report['target_release'] is None:
            report['target_release'] = running
        report['verified'] = True
        finished = time.time()
        # seconds spent undoing the layers (restart included), on the health checks, and proving the restore
        report['timings'] = {'undo': round((undone_at or finished) - started, 3),
                             'checks': round((checked_at or finished) - (undone_at or finished), 3),
                             'prove': round(finished - (checked_at or finished), 3)}
        if pending:
            report['pending'] = pending
            report.pop('step', None)
            now = ('; the host runs release %s' % running) if running is not None else ''
            return {'changed': True, 'failsafe_rollback': report,
                    'msg': 'undid the %s stage(s) of transaction %s (%s)%s; still to undo: the %s stage(s)'
                           % (', '.join(stages), txn.get('txid'),
                              '; '.join(', '.join(w) for s, w in undid if s in stages and w) or 'nothing to undo',
                              now, ', '.join(pending))}
        report['step'] = 'close the transaction'
        ensure_closed(ds, 'rolled_back', txn['run_id'],
                      data={'reason': reason, 'target': report['target_release'], 'restored': report['restored'],
                            'verified': True, 'layers': [layer_key(e) for e in layers],
                            'quarantined': report['quarantined']})
    except (FailsafeError, OSError, IOError) as exc:
        raise _rollback_failed(ds, txn, reason, report, getattr(exc, 'msg', None) or str(exc),
                               dict(getattr(exc, 'details', {}) or {}))
    except Exception as exc:  # any other error from a layer must still leave the journal saying so
        raise _rollback_failed(ds, txn, reason, report, '%s: %s' % (type(exc).__name__, exc), {})
    report.pop('step', None)
    if is_running_release(txn) and not is_config_change(txn) and 'release' not in kinds:
        return {'changed': True, 'failsafe_rollback': report,
                'msg': 'rolled back transaction %s, the redeploy of release %s, which the host ran before it: the '
                       'state before it is restored, %d path(s), restore proven; the host runs release %s again as '
                       'before the redeploy, and it stays %s (not quarantined)'
                       % (txn.get('txid'), txn.get('release'), len(report['restored']), running,
                          _ledger_state(app_root, txn.get('release')))}
    if is_config_change(txn) and 'release' not in kinds:
        report['config_change'] = list(txn['data']['config_change'])
        return {'changed': True, 'failsafe_rollback': report,
                'msg': 'rolled back transaction %s, the configuration change of release %s (%s): the configuration '
                       'before it is restored, %d path(s), restore proven; release %s stays verified (the '
                       'configuration change failed, not the release)'
                       % (txn.get('txid'), txn.get('release'), ', '.join(txn['data']['config_change']),
                          len(report['restored']), txn.get('release'))}
    return {'changed': True, 'failsafe_rollback': report,
            'msg': summary(txn.get('txid'), txn.get('release'), running, undid, activated='release' in kinds,
                           nothing_deployed=bool(report.get('nothing_deployed')), has_release=has_release)}


def _stage_words(report, stage, mark):
    """What the stage just undone did, in words: its layers (from ``mark`` in the report's list on), and in the code
    stage the release it removed and the service it started."""
    words = [layer['undid'] for layer in report['layers'][mark:] if layer.get('undid')]
    if stage == 'code' and report.get('removed_partial'):
        words.append(layer_words({'kind': 'removed_partial', 'release': report['removed_partial']}))
    if stage == 'code' and report.get('removed_release'):
        words.append(layer_words({'kind': 'removed_release', 'release': report['removed_release']}))
    if stage == 'code' and report.get('service_started'):
        words.append(layer_words({'kind': 'service', 'action': 'started'}))
    return words


def _rollback_failed(ds, txn, reason, report, msg, details):
    """Close the journal as rollback_failed (naming the step, and so the layer) and build the module's error."""
    step = report.pop('step', 'read the journal')
    try:
        ensure_closed(ds, 'rollback_failed', txn['run_id'], data={'reason': reason, 'failed_step': step, 'error': msg})
    except (JournalError, OSError, IOError):
        pass
    details.pop('msg', None)
    details.pop('failsafe_rollback', None)
    return EngineError('ROLLBACK FAILED at %s: %s' % (step, msg), failed_step=step, failsafe_rollback=report, **details)


# --- open ---------------------------------------------------------------------------------------------------------

def _deploy_needed(p, ledger, current):
    entry = ledger['releases'].get(p['release']) or {}
    return bool(p.get('force')) or current != p['release'] or entry.get('state') != 'verified'


def redeploy_gate(p, entry):
    """What lets a release that failed before (``entry``, its ledger entry, state failed) deploy again without
    force: a root-cause note (``rca``), or a different archive of it (sha256) that passed a rehearsal. None when
    neither: the same archive, unchanged, or a changed one nobody rehearsed."""
    if p.get('rca'):
        return {'by': 'rca', 'rca': p['rca']}
    failed_sha = (entry.get('failed_build') or {}).get('archive_sha256')
    sha = (build_of(p) or {}).get('archive_sha256')
    rehearsal = p.get('rehearsal') or {}
    if rehearsal.get('passed') is True and sha and failed_sha and sha != failed_sha:
        return {'by': 'rehearsal', 'record': rehearsal.get('record'), 'failed_archive_sha256': failed_sha,
                'archive_sha256': sha}
    return None


def forced_of(p, entry):
    """Who forced this deploy and why (``force`` with ``force_reason``), with the refusals the force overrode
    (the quarantine of the release, the promotion gate); None when the deploy is not forced."""
    if not p.get('force'):
        return None
    overrode = []
    if (entry or {}).get('state') == 'failed':
        why = entry.get('reason') or 'no reason recorded'
        overrode.append('quarantine: release %s failed before (%s)' % (p.get('release'), why))
    rehearsal = p.get('rehearsal') or {}
    if rehearsal.get('passed') is False:
        overrode.append('promotion gate: %s' % rehearsal.get('missing'))
    now = time.time()
    return {'by': p.get('owner'), 'reason': p.get('force_reason'), 'overrode': overrode, 'time': now, 'iso': iso(now)}


def build_of(p):
    """Which build this run deploys (``build``, from the action plugin), with the sha256 of an archive that is
    already on this host (``remote_src``) when the controller could not hash it; None when nothing is known."""
    build = dict(p.get('build') or {})
    src = p.get('src')
    if not build.get('archive_sha256') and p.get('remote_src') and src and os.path.isfile(src):
        build['archive_sha256'] = sha256_file(src)
    return build if any(v is not None for v in build.values()) else None


def applied_of(p):
    """What this run applies besides the release (checksums, see _applied): ``applied`` as the action plugin
    computed it from the rendered files, else computed from ``files``, ``directories``, ``service`` and ``flags``."""
    if p.get('applied'):
        return p['applied']
    return fingerprint(p.get('files'), p.get('directories'), p.get('service'), p.get('flags'))


def config_changes(p, ledger, current):
    """What differs between this run's configuration and the one the running verified release ``current`` was
    committed with (empty: nothing, or nothing recorded to compare with). Only for a run of that same release."""
    if current != p.get('release'):
        return []
    entry = ledger['releases'].get(current) or {}
    if entry.get('state') != 'verified':
        return []
    return differences(entry.get('applied'), applied_of(p))


# The settings a refused release archive names: the largest release, and the space the disk check keeps free.
SIZE_SETTINGS = {'max_size': 'failsafe_release_max_size', 'keep_free': 'failsafe_preflight_min_free_mb'}


def _size_bound(p):
    return dict(max_size=p.get('max_release_size') or None, keep_free=(p.get('min_free_mb') or 0) * 1048576,
                names=SIZE_SETTINGS)


def _bound_release(p, rr):
    """Bound the release archive at ``open`` when it is known there: the size its members declare, read on the
    controller by the action plugin (``src_size``), or from the archive already on the host (``remote_src``),
    against the free space of the releases directory's file system and ``max_release_size``. A release whose
    directory is already here is not extracted again: the stage phase bounds whatever it does extract."""
    if rr.has_release_dir(p['release']):
        return None
    size = p.get('src_size')
    if size is None and p.get('src') and p.get('remote_src') and os.path.isfile(p['src']):
        size = archive_size(p['src'])
    if size is None:
        return None
    return check_archive_size(p.get('src') or 'of release %s' % p['release'], size, rr.releases_dir,
                              rr.free_bytes(rr.releases_dir), **_size_bound(p))


def _refuse_input(evidence, exc):
    return EngineError('Refusing to deploy: %s. Nothing was changed: no lock taken, no transaction opened.'
                       % (getattr(exc, 'msg', None) or str(exc)), refused='input', input_error=evidence,
                       **dict(getattr(exc, 'details', None) or {}))


def check_input(p):
    """Refuse what the deploy was given, before the open phase changes anything (before a dead run's recovery, the
    lock, the snapshot): a release id that is not a plain directory name, a release archive on the host (remote_src)
    that is not there or cannot be read, malformed health checks. The refusal says ``refused: input``."""
    if p.get('release') is not None:
        try:
            validate_release_id(p['release'], 'release')
        except ReleaseError as exc:
            raise _refuse_input('invalid release id', exc)
    src = p.get('src')
    if src and p.get('remote_src') and not (os.path.isfile(src) or os.path.isdir(src)):
        raise EngineError('Refusing to deploy: release archive %s does not exist on this host (remote_src). Nothing '
                          'was changed: no lock taken, no transaction opened.' % src, refused='input',
                          input_error='release archive not found', path=src)
    if src and p.get('remote_src') and not os.access(src, os.R_OK):
        raise EngineError('Refusing to deploy: release archive %s is not readable on this host. Nothing was changed: '
                          'no lock taken, no transaction opened.' % src, refused='input',
                          input_error='release archive not readable', path=src)
    for key, defaults in (('checks', 'check_defaults'), ('rollback_checks', 'rollback_check_defaults')):
        if p.get(key):
            try:
                normalize_checks(p[key], p.get(defaults))
            except CheckError as exc:
                raise _refuse_input('malformed health checks', exc)


def open_phase(p, run, check_mode=False, warn=None):
    """Open a deploy on this host: finish a dead run's transaction, take the lock, decide whether the release
    still needs deploying, check the ledger, the disk and the running release's checks, open the transaction and
    snapshot what the deploy may change. Everything that can refuse runs before anything changes; what the deploy
    was given is checked first of all, before a dead run's recovery and the lock."""
    check_input(p)
    ds = _ds(p)
    run_id = p['run_id']
    journal = ds.read_journal()
    lock = ds.read_lock()
    status = (journal or {}).get('status')
    result = {'changed': False, 'recovered': None}
    # A transaction the host reverted by itself, not reported by any run yet: this run reports it.
    result['self_reverted'] = _confirm.unreported(ds, run_id, check_mode=check_mode)
    takeover = p.get('takeover_pid')
    same_pid = str((lock or {}).get('pid')) == str(takeover)
    same_controller = (lock or {}).get('controller') == p.get('controller')
    holder_gone = bool(lock) and takeover is not None and lock.get('run_id') != run_id and same_pid and same_controller
    if status == 'rollback_failed' and not p.get('recover', True):
        raise EngineError(
            'The rollback of transaction %s (run %s, release %s) failed on this host and was never finished: run '
            'failsafe.deploy.recover first, or deploy with failsafe_preflight_recover=true.'
            % (journal.get('txid'), journal.get('run_id'), journal.get('release')), journal=journal)
    unfinished = status in ('open', 'rollback_failed') and journal.get('run_id') != run_id
    lock_free = lock is None or lock_expired(lock) or holder_gone
    if p.get('recover', True) and unfinished and lock_free:
        if check_mode:
            result['would_recover'] = journal.get('txid')
        else:
            rp = dict(p, reason='recovered: transaction %s was left %s by run %s'
                      % (journal.get('txid'), status, journal.get('run_id')), rollback_run_id=None,
                      quarantine='shown_bad')
            rp['checks'] = p.get('rollback_checks', p.get('checks'))
            rp['check_defaults'] = p.get('rollback_check_defaults', p.get('check_defaults'))
            # a rollback still running on this host (its controller died) finishes first, under the host lock:
            # then there is nothing left to undo here
            result['recovered'] = guarded_rollback(rp, run).get('failsafe_rollback')
            result['changed'] = True
            lock = ds.read_lock()
    locked = ensure_locked(ds, run_id, p.get('owner'), p.get('controller'), p.get('pid'), p.get('ttl') or 1800,
                           force=holder_gone, check_mode=check_mode, warn=warn)
    result['lock'] = locked.get('lock')
    try:
        if not p.get('release'):
            return _open_layers_only(p, ds, run_id, result, check_mode, warn)
        rr = ReleaseRoot(p['app_root'])
        ledger_view = release_query(rr)
        current = ledger_view['current']
        needed = _deploy_needed(p, ledger_view['ledger'], current)
        changes = [] if needed else config_changes(p, ledger_view['ledger'], current)
        if changes:
            # the same release with another configuration: deployed as a transaction, never skipped
            needed = True
            result['config_change'] = changes
        result.update(needed=needed, previous_release=current)
        if not needed:
            if not check_mode:
                ensure_unlocked(ds, run_id)
            result['msg'] = 'Release %s is already active and verified on this host: nothing to deploy.' % p['release']
            return result
        free = ledger_view['free_bytes']
        if free < (p.get('min_free_mb') or 0) * 1048576:
            raise EngineError('Only %.1f MiB free under %s; failsafe_preflight_min_free_mb is %s.'
                              % (free / 1048576.0, p['app_root'], p['min_free_mb']), free_bytes=free)
        result['release_size'] = _bound_release(p, rr)
        entry = ledger_view['ledger']['releases'].get(p['release']) or {}
        redeploy = redeploy_gate(p, entry) if entry.get('state') == 'failed' else None
        if entry.get('state') == 'failed' and not p.get('force') and redeploy is None:
            failed_sha = (entry.get('failed_build') or {}).get('archive_sha256')
            raise EngineError(
                'Release %s is quarantined: it failed before on this host (%s)%s. Deploy a fixed release: a changed '
                'archive of it that passed a rehearsal (failsafe.deploy.rehearse), or attach a root-cause note '
                '(failsafe_rca, a path or URL); or set failsafe_force=true to deploy it anyway. Nothing was changed.'
                % (p['release'], entry.get('reason') or 'no reason recorded',
                   (', archive sha256 %s%s' % (failed_sha, ', the same archive as this deploy'
                                               if failed_sha == (build_of(p) or {}).get('archive_sha256') else ''))
                   if failed_sha else ''), quarantined=p['release'], failed_build=entry.get('failed_build'))
        running = (ledger_view['ledger']['releases'].get(current) or {}).get('state') if current else None
        if p.get('check_running', True) and p.get('checks') and running == 'verified':
            specs = normalize_checks(p['checks'], p.get('check_defaults'))
            ok, results, msg = run_checks(specs, retries=p.get('running_check_retries', 1), delay=0)
            result['running_checks'] = results
            if not ok:
                names = ', '.join("'%s'" % r['name'] for r in results if not r['ok'])
                raise EngineError(
                    'Refusing to deploy %s: failsafe_verify_checks %s fail(s) on release %s, which is running and '
                    'verified (%s). A check that fails on the known-good release is broken: fix it, or it fails '
                    'this deploy and then the rollback. Nothing was changed. (failsafe_preflight_check_running=false '
                    'skips this check.)' % (p['release'], names, current, msg), running_checks=results)
        # The snapshot comes before the open: it changes nothing the deploy touches, and a crash while it is taken
        # leaves no transaction to undo (the lock, this run's, is given back by the rollback or taken over later).
        record = None
        if p.get('snapshot_paths') and not check_mode:
            record = FilesLayer(_store_dir(p)).capture(
                {'paths': p['snapshot_paths'], 'exclude': p.get('snapshot_exclude') or [],
                 'labels': {'name': p['name'], 'release': p['release'], 'run_id': run_id}})
            result['snapshot'] = record
        elif p.get('snapshot_paths'):
            result['snapshot'] = {'would_capture': list(p['snapshot_paths'])}
        layers = [{'kind': 'files', 'record': {'snapshot': record['snapshot']}, 'time': time.time(),
                   'iso': iso(time.time())}] if record else []
        # what this run applies besides the release, recorded in the ledger at commit; a configuration change
        # (the same release) says so, and its rollback restores the configuration without quarantining the release
        data = {'applied': applied_of(p)}
        if changes:
            data['config_change'] = changes
        if p.get('rehearsal'):
            # the rehearsal record the promotion gate found (or the gap a forced deploy went past)
            data['rehearsal'] = p['rehearsal']
        if redeploy:
            # what let a release that failed before through the redeploy gate
            data['redeploy'] = redeploy
        opened = ensure_open(ds, run_id, p['release'], current, p['app_root'],
                             snapshots={'files': record['snapshot']} if record else None, owner=p.get('owner'),
                             controller=p.get('controller'), pid=p.get('pid'), check_mode=check_mode, warn=warn,
                             layers=layers, data=data, build=build_of(p), forced=forced_of(p, entry),
                             rca=p.get('rca'))
        if changes:
            result['msg'] = ('%sRelease %s is active and verified on this host, but its configuration changed '
                             '(%s): %s the configuration change of release %s as a transaction.'
                             % ('Check mode: ' if check_mode else '', p['release'], ', '.join(changes),
                                'would deploy' if check_mode else 'deploying', p['release']))
        if record and not check_mode:
            ensure_step(ds, run_id, 'snapshot', snapshots={'files': record['snapshot']},
                        data={'entries': record['entries']}, release=p['release'])
        result['changed'] = result['changed'] or opened['changed']
        result['failsafe_transaction'] = ds.transaction(ds.read_journal()) if not check_mode \
            else opened.get('failsafe_transaction')
        result['diff'] = opened.get('diff')
    except Exception:
        if not check_mode:
            journal_now = ds.read_journal()
            if not (journal_now and journal_now.get('status') == 'open' and journal_now.get('run_id') == run_id):
                ensure_unlocked(ds, run_id)
        raise
    result['journal'] = ds.read_journal() if not check_mode else None
    return result


def _open_layers_only(p, ds, run_id, result, check_mode, warn):
    """A transaction with no release: a host whose part of the deploy is layers applied by the ``apply`` phase (a
    load balancer, a database or flag host), or configuration files snapshotted with ``snapshot_paths``."""
    record = None
    if p.get('snapshot_paths') and not check_mode:
        record = FilesLayer(_store_dir(p)).capture(
            {'paths': p['snapshot_paths'], 'exclude': p.get('snapshot_exclude') or [],
             'labels': {'name': p['name'], 'run_id': run_id}})
        result['snapshot'] = record
    layers = [{'kind': 'files', 'record': {'snapshot': record['snapshot']}, 'time': time.time(),
               'iso': iso(time.time())}] if record else []
    opened = ensure_open(ds, run_id, None, None, p.get('app_root'),
                         snapshots={'files': record['snapshot']} if record else None, owner=p.get('owner'),
                         controller=p.get('controller'), pid=p.get('pid'), check_mode=check_mode, warn=warn,
                         layers=layers)
    result.update(needed=True, previous_release=None)
    result['changed'] = result['changed'] or opened['changed']
    result['failsafe_transaction'] = ds.transaction(ds.read_journal()) if not check_mode \
        else opened.get('failsafe_transaction')
    result['diff'] = opened.get('diff')
    result['journal'] = ds.read_journal() if not check_mode else None
    return result


def layer_stages(journal):
    """The rollback stages the transaction's layers need, in order (for the callback: which rollback plays a host
    takes part in)."""
    kinds = set(entry['kind'] for entry in layers_of(journal or {})) if journal else set()
    return [s for s in STAGES if any(stage_of(k) == s for k in kinds)]


def apply_phase(p, run, check_mode=False):
    """Apply one registered layer (``layer``: its ``kind``, an optional ``id`` and the kind's options) in the open
    transaction: capture what it is about to change (once: a re-run keeps the first capture), record it in the undo
    log, then apply. Check mode says what would change and changes nothing."""
    spec = dict(p.get('layer') or {})
    kind = spec.get('kind')
    cls = kind_class(kind)
    if cls is None:
        raise EngineError('layer kind %r is unknown: the kinds are %s' % (kind, ', '.join(sorted(load_all())) or 'none'))
    key = '%s:%s' % (kind, spec['id']) if spec.get('id') else kind
    ds = _ds(p)
    journal = ds.read_journal()
    is_open = bool(journal) and journal.get('status') == 'open' and journal.get('run_id') == p['run_id']
    layer = cls(spec, run)
    if check_mode:
        plan = layer.plan(spec)
        plan.setdefault('msg', 'check mode: would %s' % layer.describe(spec))
        return dict(plan, layer=key)
    if not is_open:
        raise EngineError("no open transaction of run %s for '%s' on this host: open one first (phase=open) before "
                          'applying the %s layer' % (p['run_id'], p['name'], key), journal=journal)
    existing = [e for e in journal.get('layers') or [] if layer_key(e) == key]
    if existing:
        # applied again in this transaction (a re-run, or the kill switch): the first capture stays the undo; a kind
        # that can say what the first capture did not see yet (``recapture``) adds it
        record = existing[0]['record']
        if hasattr(layer, 'recapture'):
            record = layer.recapture(spec, record)
    else:
        record = layer.capture(spec)
    stored = dict((k, v) for k, v in spec.items() if k not in (cls.secret_options or ()))
    journal, dummy = record_layer(ds, p['run_id'], kind, record, key=key, options=stored)
    res = dict(layer.apply(spec, record) or {})
    res.setdefault('changed', False)
    res['layer'] = key
    res['record'] = record
    res['failsafe_layer_stages'] = layer_stages(journal)
    res['failsafe_transaction'] = ds.transaction(journal)
    return res


def snapshot_phase(p, check_mode=False):
    """Snapshot paths into the open transaction (the snapshot role on its own; ``open`` already does this)."""
    ds = _ds(p)
    files = FilesLayer(_store_dir(p))
    if check_mode:
        return {'changed': True, 'msg': 'check mode: would snapshot %s' % ', '.join(p['snapshot_paths'])}
    record = files.capture({'paths': p['snapshot_paths'], 'exclude': p.get('snapshot_exclude') or [],
                            'labels': {'name': p['name'], 'release': p['release'], 'run_id': p['run_id']}})
    dummy, wrote = record_layer(ds, p['run_id'], 'files', {'snapshot': record['snapshot']})
    step = ensure_step(ds, p['run_id'], 'snapshot', snapshots={'files': record['snapshot']},
                       data={'entries': record['entries']}, release=p['release'])
    return {'changed': wrote or step['changed'] or not record['reused'], 'snapshot': record, 'id': record['snapshot']}


# --- stage, activate, verify, commit --------------------------------------------------------------------------

def _note_staged(ds, run_id, release):
    """Record in the open transaction, before its directory is made, that it stages ``release`` (None: forget
    it again); a rollback removes a release its transaction staged and never ran, and nothing else. Returns
    whether the journal changed."""
    journal = ds.read_journal()
    if not journal or journal.get('status') != 'open' or journal.get('run_id') != run_id \
            or journal.get('staged_release') == release:
        return False
    new = copy.deepcopy(journal)
    if release is None:
        new.pop('staged_release', None)
    else:
        new['staged_release'] = release
    ds.write_journal(new)
    return True


def gate_opened(journal, p):
    """Whether this run's open transaction went through the redeploy gate (``data.redeploy``): a release that failed
    before, let through by a passing rehearsal of a changed archive or a root-cause note, stages and activates as a
    forced one would."""
    journal = journal or {}
    ours = journal.get('status') == 'open' and journal.get('run_id') == p.get('run_id')
    return ours and journal.get('release') == p.get('release') and bool((journal.get('data') or {}).get('redeploy'))


def stage_phase(p, check_mode=False):
    rr = ReleaseRoot(p['app_root'])
    path = rr.release_path(p['release'])
    noted = not check_mode and not os.path.lexists(path) and _note_staged(_ds(p), p['run_id'], p['release'])
    force = bool(p.get('force')) or gate_opened(_ds(p).read_journal(), p)
    try:
        res = ensure_staged(rr, p['release'], p['src'], shared=p.get('shared') or [], force=force,
                            check_mode=check_mode, **_size_bound(p))
    except Exception:
        if noted and not os.path.lexists(path):
            _note_staged(_ds(p), p['run_id'], None)  # refused before anything was written: the journal as it was
        raise
    step = ensure_step(_ds(p), p['run_id'], 'release', check_mode=check_mode, release=p['release'])
    out = dict(res)
    out['failsafe_transaction'] = step.get('failsafe_transaction')
    return out


def _write_file(spec, check_mode):
    """Write one file given by content; returns whether it changed. Owner, group and mode as given."""
    dest = spec['dest']
    data = spec['content'].encode('utf-8') if not isinstance(spec['content'], bytes) else spec['content']
    mode = int(str(spec.get('mode') or '0644'), 8)
    uid = pwd.getpwnam(spec['owner']).pw_uid if spec.get('owner') else -1
    gid = grp.getgrnam(spec['group']).gr_gid if spec.get('group') else -1
    try:
        with open(dest, 'rb') as handle:
            same = handle.read() == data
        st = os.stat(dest)
        same_owner = (uid == -1 or st.st_uid == uid) and (gid == -1 or st.st_gid == gid)
        meta_same = (st.st_mode & 0o7777) == mode and same_owner
    except (IOError, OSError):
        same = meta_same = False
    if same and meta_same:
        return False
    if check_mode:
        return True
    parent = os.path.dirname(dest)
    if not os.path.isdir(parent):
        os.makedirs(parent, 0o755)
    if same:
        if uid != -1 or gid != -1:
            os.chown(dest, uid, gid)
        os.chmod(dest, mode)
        return True
    atomic_write_bytes(dest, data, mode=mode)
    if uid != -1 or gid != -1:
        os.chown(dest, uid, gid)
        os.chmod(dest, mode)
    return True


def activate_phase(p, run, check_mode=False):
    """Write the files, switch current, restart the service when anything it picks up changed (or when this run's
    activation was cut short before its restart), and record the activation."""
    ds = _ds(p)
    journal = ds.read_journal() or {}
    ours = journal.get('status') == 'open' and journal.get('run_id') == p['run_id']
    # The watchdog's code is ready (or refused) before anything changes.
    payload = _confirm.prepare(ds, p, journal, check_mode) if ours else None
    written = []
    for directory in p.get('directories') or []:
        if not os.path.isdir(directory) and not check_mode:
            os.makedirs(directory, 0o755)
    for spec in p.get('files') or []:
        if _write_file(spec, check_mode):
            written.append(spec['dest'])
    release = ReleaseLayer(p['app_root'])
    # Armed before anything serves traffic differently: a run that dies from here on leaves a host that reverts.
    confirm = _confirm.arm(ds, p, journal, WATCHDOG_RUNNER, check_mode=check_mode,
                           payload=payload) if ours or check_mode else {'armed': False}
    # a configuration change or a forced redeploy of the running release switches nothing: no release layer, so
    # that its rollback restores the state before it and keeps that release where it is (the snapshot, the current
    # link included, holds it running; a switch to the release before it would leave the restore unprovable)
    if ours and not check_mode and not is_running_release(journal, p['release']):
        record_layer(ds, p['run_id'], 'release', {'release': p['release'], 'previous': journal.get('previous_release')})
    service = ServiceLayer(p.get('service') or {}, run)
    if ours and not check_mode:
        # The settings go into the journal before the switch: the rollback restarts (or unloads) the service as it
        # was applied. Recorded only at the restart, a host that died between the switch and the restart (a reboot,
        # whose init starts the program from the new current) was switched back by its recovery with the program
        # left running the abandoned release.
        record_layer(ds, p['run_id'], 'service', {'manager': service.s['manager']}, options=dict(service.s))
    switch = ensure_active(release.root, p['release'], force=bool(p.get('force')) or gate_opened(journal, p),
                           check_mode=check_mode)
    finished = journal.get('run_id') == p['run_id'] and any(
        s.get('step') == 'activate' and s.get('status') == 'ok' for s in journal.get('steps') or [])
    restart = bool(p.get('force')) or switch['changed'] or bool(written) or not finished
    svc = {'changed': False}
    if not check_mode:
        svc = service.apply({}, {}, restart=restart)
        with _confirm.host_lock(ds):
            _confirm.refuse_reverted(ds, p['run_id'], 'activate')
            step = ensure_step(ds, p['run_id'], 'activate', release=p['release'])
    else:
        step = ensure_step(ds, p['run_id'], 'activate', check_mode=True, release=p['release'])
    changed = bool(written) or switch['changed'] or svc['changed']
    return {'changed': changed, 'written': written, 'current': switch['current'], 'previous': switch['previous'],
            'restarted': bool(svc.get('changed')) and restart, 'diff': switch.get('diff'),
            'failsafe_transaction': step.get('failsafe_transaction'), 'confirm': confirm}


def verify_phase(p, check_mode=False):
    specs = normalize_checks(p.get('checks') or [], p.get('check_defaults'))
    ds = _ds(p)
    if check_mode:
        return {'changed': False, 'checks': [], 'msg': "Check mode: the new release's %d health check(s) were not "
                'run (%s).' % (len(specs), ', '.join(s['label'] for s in specs) or 'none')}
    _confirm.refuse_reverted(ds, p['run_id'], 'verify')  # the host reverts (or reverted): nothing left to check
    ok, results, msg = run_checks(specs)
    # the result is recorded under the host lock, and only in a transaction the host has not begun to revert
    with _confirm.host_lock(ds):
        _confirm.refuse_reverted(ds, p['run_id'], 'verify', checks=results)
        if not ok:
            journal = ds.read_journal() or {}
            if journal.get('status') == 'open' and journal.get('run_id') == p['run_id']:
                # shown bad on this host after its activation: what a revert at the deadline quarantines
                ensure_step(ds, p['run_id'], 'verify', status='failed', data={'checks': len(specs), 'error': msg},
                            release=p['release'])
            raise EngineError('health check failed: %s' % msg, checks=results)
        step = ensure_step(ds, p['run_id'], 'verify', data={'checks': len(specs)}, release=p['release'])
    # the checks change nothing; recording the verification in the journal does, the first time
    return {'changed': step['changed'], 'checks': results, 'failsafe_transaction': step.get('failsafe_transaction')}


def commit_phase(p, check_mode=False):
    ds = _ds(p)
    if not p.get('release'):
        # a transaction of layers only: nothing to mark verified, no releases to prune
        closed = ensure_closed(ds, 'committed', p['run_id'], check_mode=check_mode)
        return {'changed': closed['changed'], 'failsafe_transaction': closed.get('failsafe_transaction'),
                'lock_released': closed.get('lock_released'),
                'msg': ('Check mode: this run (%s) would close its transaction on this host; nothing was '
                        'changed.' % p['run_id'] if check_mode else
                        'Transaction of run %s committed on this host.' % p['run_id'])}
    rr = ReleaseRoot(p['app_root'])
    verified = ensure_verified(rr, p['release'], check_mode=check_mode)
    journal = ds.read_journal() or {}
    ours = journal.get('run_id') == p['run_id']
    if ours and not check_mode:
        _remember(rr, p['release'], service=recorded_service(layers_of(journal)),
                  applied=(journal.get('data') or {}).get('applied'), build=journal.get('build'))
    config_change = ours and is_config_change(journal, p['release'])
    closed = ensure_closed(ds, 'committed', p['run_id'], check_mode=check_mode, release=p['release'])
    pruned = ensure_pruned(rr, keep=p.get('keep_releases', 5), check_mode=check_mode)
    store = SnapshotStore(_store_dir(p))
    snaps = {'removed': []}
    if store.exists():
        snaps = store.prune(p.get('keep_snapshots', 5), check_mode=check_mode)
    return {'changed': verified['changed'] or closed['changed'] or pruned['changed'] or bool(snaps['removed']),
            'pruned_releases': pruned.get('removed', []), 'pruned_snapshots': snaps['removed'],
            'failsafe_transaction': closed.get('failsafe_transaction'), 'lock_released': closed.get('lock_released'),
            'msg': commit_message(p['release'], p['run_id'], check_mode, config_change=config_change),
            'config_change': config_change}


def commit_message(release, run_id, check_mode=False, config_change=False):
    """What the commit says on this host. The command that rolls the deploy back is added on the controller (the
    action plugin knows the run's inventory and options); a check run committed nothing and says so."""
    if config_change and not check_mode:
        return 'The configuration change of release %s is verified and committed (run %s).' % (release, run_id)
    if check_mode:
        return ('Check mode: this run (%s) would make release %s the last known good on this host; nothing was '
                'changed, so there is nothing to roll back.' % (run_id, release))
    return 'Release %s is verified and committed (run %s).' % (release, run_id)


# --- commit confirmed ---------------------------------------------------------------------------------------------
# The commit, every rollback and the host's own revert at its deadline exclude each other on the host
# (_confirm.host_lock): exactly one of them decides how a transaction ends.

LAST_VERIFIED = 'last_verified'


def _build_words(release, build):
    words = ['release %s' % release]
    if isinstance(build, dict) and build.get('archive_sha256'):
        words.append('archive sha256 %s' % build['archive_sha256'])
    return ', '.join(words)


def resolve_rollback_to(p, ds):
    """A rollback to a build named by ``rollback_to`` (V(last_verified), a release id or the start of an archive
    sha256): the committed transaction in the journal whose undo goes back to that build becomes the one to undo
    (as with its ``rollback_run_id``). Returns (params, None), or (params, result) when the host already runs that
    build. Refuses, before anything changes, a name that is not the build before the last committed deploy."""
    wanted = p.get('rollback_to')
    if not wanted:
        return p, None
    journal = ds.read_journal() or {}
    status = journal.get('status')
    if status in ('open', 'rollback_failed'):
        # an unfinished transaction: its rollback goes back to the last verified build anyway
        return p, None
    app_root = journal.get('app_root') or p.get('app_root')
    ledger = ReleaseRoot(app_root).load_ledger() if app_root else {'releases': {}}

    def matches(release):
        if not release:
            return False
        entry = ledger['releases'].get(release) or {}
        if wanted == LAST_VERIFIED:
            return entry.get('state') == 'verified'
        sha = str((entry.get('build') or {}).get('archive_sha256') or '')
        return wanted == release or (len(wanted) >= 12 and sha.startswith(wanted.lower()))

    current = ReleaseRoot(app_root).read_current() if app_root else None
    if status == 'committed':
        target = journal.get('previous_release')
        if matches(target) and target != journal.get('release'):
            return dict(p, rollback_run_id=journal.get('run_id')), None
    if (wanted != LAST_VERIFIED and matches(current)) or (
            wanted == LAST_VERIFIED and status != 'committed' and current and ledger.get('last_verified') == current):
        return p, {'changed': False, 'nothing_to_undo': True, 'journal': journal,
                   'msg': 'This host already runs the build %s asked for (%s): nothing to roll back.'
                          % (wanted, _build_words(current, (ledger['releases'].get(current) or {}).get('build')))}
    target = journal.get('previous_release') if status == 'committed' else None
    raise EngineError(
        'Cannot roll back to %s on this host: the last deploy in its journal (release %s, run %s, %s) %s. Nothing '
        'was changed.' % (
            'the last verified build' if wanted == LAST_VERIFIED else 'build %s' % wanted, journal.get('release'),
            journal.get('run_id'), status or 'no journal',
            ('goes back to %s' % _build_words(target, (ledger['releases'].get(target) or {}).get('build')))
            if target else 'has no verified build before it to go back to'),
        journal=journal or None, current_release=current)


def guarded_rollback(p, run, check_mode=False):
    """rollback() with the host's revert timer disarmed first, under the host lock. With nothing to undo because
    the host reverted the transaction by itself, the result says so (``self_revert``)."""
    ds = _ds(p)
    p, done = resolve_rollback_to(p, ds)
    if done is not None:
        return done
    if check_mode:
        return rollback(p, run, check_mode)
    with _confirm.host_lock(ds):
        txn = pick_transaction(ds.read_journal(), p.get('rollback_run_id'))
        if txn is not None:
            _confirm.disarm(ds, txn, 'disarmed', 'rolled back: %s' % (p.get('reason') or 'rollback requested'))
            if not p.get('unconfirmed'):
                # not the watchdog's own revert (which runs this with unconfirmed): one it left half done
                _confirm.take_over_revert(ds, txn, 'the revert was interrupted part-way; finished by a rollback: %s'
                                          % (p.get('reason') or 'rollback requested'))
        result = rollback(p, run, check_mode)
    facts = _confirm.facts_of(ds, result.get('journal')) if result.get('nothing_to_undo') else None
    if facts:
        result['msg'] += (' The host reverted transaction %s by itself at %s: %s (%s).'
                          % (facts['txid'], facts.get('finished_iso'), facts['cause'], facts['outcome']))
        result['self_revert'] = facts
    return result


def confirmed_commit(p, check_mode=False):
    """commit_phase() as the confirmation of the transaction: under the host lock, the revert timer is disarmed, or,
    when the host reverted (or the deadline passed), the commit fails loudly and nothing is committed."""
    ds = _ds(p)
    if check_mode:
        confirm = (ds.read_journal() or {}).get('confirm') or {}
        result = commit_phase(p, check_mode)
        if confirm.get('state') == 'armed':
            result['confirm'] = dict(confirm, would_disarm=True)
        return result
    with _confirm.host_lock(ds):
        journal = ds.read_journal()
        _confirm.check_confirmation(ds, journal, p['run_id'], guarded_rollback)
        confirm = _confirm.disarm(ds, journal, 'confirmed', 'committed by run %s' % p['run_id'])
        result = commit_phase(p, check_mode)
        result['confirm'] = confirm
        return result
