#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Contributors to failsafe.deploy
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

DOCUMENTATION = r'''
---
module: transaction
short_description: Run one phase of a fail-safe deploy on a host, in one call
version_added: 0.2.0
description:
  - The host-side transaction engine. A deploy is a transaction recorded in the host's journal as an ordered undo
    log of layers (files and configuration, the release pointer, the service). Each phase is one call of this
    module, whatever layers it touches, so a deploy costs one round trip per phase and a rollback one per host.
  - V(open) finishes a transaction a dead run left open (or whose rollback failed), takes the deploy lock, decides
    whether the release still needs deploying (releasing the lock if not), refuses a quarantined release, too little
    disk, a release archive too large for the disk or for O(max_release_size), malformed checks and checks that fail
    on the running verified release, then opens the transaction and snapshots O(snapshot_paths). Nothing changes
    before every refusal has had its say.
  - V(snapshot) snapshots O(snapshot_paths) into the open transaction (V(open) already does).
  - V(stage) puts the release in C(releases/<id>) from O(src). The action plugin uploads O(src) from the controller
    in the same task unless O(remote_src=true). An archive is refused before anything is written when the sizes its
    members declare add up to more than O(max_release_size), or to more than the free space of the file system of
    C(releases/) less O(min_free_mb).
  - V(activate) writes O(files), switches C(current) and restarts the service when anything it picks up changed,
    or when this run's activation was cut short before its restart. It records O(service) in the journal with the
    service layer; V(commit) records it in the ledger entry of the verified release.
  - V(apply) applies one more layer kind (O(layer)) in the open transaction. It records what the layer is about
    to change in the undo log first, then changes it. The kinds include C(database) (a backup, then the release's
    migrations; see docs/database.md). A host whose part of a deploy is only such layers (a load
    balancer, a database or flag host) opens its transaction with V(open) and no O(release).
  - V(verify) runs O(checks); a failure names each failed check, what it expected and what came back.
  - V(commit) confirms the transaction (disarms the host's revert timer), marks the release verified, closes the
    transaction, releases the lock and prunes old releases and snapshots. A confirmation that comes after the host
    reverted, or after the deadline, fails loudly (C(host reverted before confirmation)) and commits nothing.
  - Commit confirmed. Before it changes anything, V(activate) arms the host's revert timer (O(confirm_timeout)).
    Unless V(commit) confirms the transaction within O(confirm_timeout) seconds, the host rolls it back by itself,
    with the same single-call undo as V(rollback), even if the controller died or lost its network.
  - V(query) reads the journal, the lock, the revert timer (C(confirm)) and the facts of the last time the host
    reverted a transaction by itself (C(self_revert)); the action plugin adds whether the lock's holder is a run that died
    on this controller (C(holder_gone)).
  - V(rollback) undoes the transaction in the journal (the open one, one whose rollback failed, or the committed one
    of O(rollback_run_id)). It restores the snapshot, switches back to the last verified release (quarantining the
    failed one only if it was activated on this host), removes a release directory the transaction staged and never
    made current, restarts the service (or stops and unloads it when there is no release to go back to), runs
    O(checks), proves the restore byte for byte and closes the journal. The service is restarted with the settings
    V(activate) recorded in the journal (O(service) only for a journal that recorded none). When the transaction never
    changed the service and it is not running (a crash or a reboot during the deploy), it is started with the
    settings the ledger recorded for the restored release at its commit; with no such record no service is
    touched. A first deploy (the journal records no previous release) has no release to go back to, so nothing is
    checked, and the host ends with nothing deployed. A failure
    closes it as C(rollback_failed) and fails loudly; a rollback cut short anywhere finishes the job when run again.
    It disarms the host's revert timer first; a rollback, a commit and the timer's own revert exclude each other on
    the host (an fcntl lock in O(state_dir)), so exactly one of them wins.
extends_documentation_fragment:
  - failsafe.deploy.common
  - failsafe.deploy.common.action
  - failsafe.deploy.state
  - failsafe.deploy.health_check.checks
attributes:
  action:
    details: The action plugin adds the controller's host name and process id and the build (O(build)) to V(open),
      takes over the lock of a run that died on this controller, and uploads O(src) for V(stage).
  check_mode:
    details: Every phase plans and reports what it would do. V(verify) reports which checks a real run would make.
  diff_mode:
    support: partial
    details: V(open) shows the journal it would open, V(activate) the C(current) switch.
options:
  phase:
    description: The phase to run.
    type: str
    required: true
    choices: [open, snapshot, stage, activate, apply, verify, commit, rollback, query]
  app_root:
    description: Application root (C(releases/), C(current), C(shared/), the ledger).
    type: path
  release:
    description: Release id being deployed. Required by every phase but V(rollback).
    type: str
  run_id:
    description: The run that owns the lock and the transaction. Required by every phase but V(rollback).
    type: str
  owner:
    description: Who takes the lock (C(user@host)), recorded in the lock and the journal.
    type: str
  controller:
    description: Host name of the controller; set by the action plugin.
    type: str
  pid:
    description: Process id of the controller's C(ansible-playbook); set by the action plugin.
    type: int
  takeover_pid:
    description:
      - Set by the action plugin when the lock's holder is a run on this controller whose process is gone. A lock
        held by that pid from O(controller) is taken over, and its open transaction finished first.
    type: int
  ttl:
    description: Seconds until the lock expires unless renewed.
    type: int
    default: 1800
  recover:
    description: V(open) finishes a transaction a dead run left open, or whose rollback failed, before it opens.
    type: bool
    default: true
  force:
    description:
      - Deploy even when the release is active and verified, or quarantined, or refused by the promotion gate
        (O(require_rehearsal)); restart on V(activate).
      - V(open) records in the journal (C(forced)) who forced the deploy (O(owner)), why (O(force_reason)) and
        which refusals the force overrode; the history and the incident report show it.
    type: bool
    default: false
  force_reason:
    description:
      - Why the deploy is forced, recorded with O(force). Required to force a release past the promotion gate.
    type: str
    version_added: 0.1.0
  rca:
    description:
      - A root-cause note of the failure of this release before (a path or URL). It lets a release that failed on
        this host (quarantined) deploy again without O(force) (the redeploy gate), and is recorded in the journal
        (C(rca)), so the history and the incident report show it.
      - Without it, a quarantined release deploys again only as a different archive (sha256) that passed a
        rehearsal (O(rehearsal)), or with O(force).
    type: str
    version_added: 0.1.0
  require_rehearsal:
    description:
      - The promotion gate. The action plugin refuses V(open), before anything changes, when the release archive
        (its sha256, O(build)) has no passing rehearsal record in O(rehearsal_store), naming what is missing. With
        O(force) and O(force_reason) the deploy goes on, recorded as forced.
    type: bool
    default: false
    version_added: 0.1.0
  rehearsal_store:
    description:
      - The directory on the controller that holds the rehearsal records (C(<sha256>.json)), written by the
        playbook C(failsafe.deploy.rehearse).
    type: path
    version_added: 0.1.0
  rehearsal:
    description:
      - Set by the action plugin for V(open) under O(require_rehearsal) - the rehearsal record found (C(record),
        C(passed), C(finished_iso), C(staging_hosts)), or what was missing (C(missing)) in a forced deploy. Recorded
        in the journal.
    type: dict
    version_added: 0.1.0
  min_free_mb:
    description:
      - V(open) refuses when the application root has less free space (MiB).
      - V(open) and V(stage) refuse a release archive whose files would leave less than this free on the file
        system of C(releases/).
    type: int
    default: 100
  max_release_size:
    description:
      - The largest release V(open) and V(stage) accept, as the sum of the sizes the members of its archive declare
        (what extracting it writes). Bytes, or a number with a unit (V(500M), V(2G); a unit is a power of 1024).
      - Unset or V(0), no limit beyond the free space (O(min_free_mb)).
    type: bytes
    version_added: 0.1.0
  check_running:
    description: V(open) runs O(checks) against the running verified release first and refuses a check that fails.
    type: bool
    default: true
  running_check_retries:
    description: Retries of each check in the V(open) probe of the running release.
    type: int
    default: 1
  snapshot_paths:
    description: Paths V(open) and V(snapshot) capture before anything changes.
    type: list
    elements: path
    default: []
  snapshot_exclude:
    description: Glob patterns, relative to each path, left out of the snapshot (and untouched by a restore).
    type: list
    elements: str
    default: []
  src:
    description:
      - The release archive (C(.tar.gz), C(.tgz), C(.tar)) or directory for V(stage).
      - Given to V(open) too, the archive's size is checked before the transaction opens (O(max_release_size),
        O(min_free_mb)).
    type: path
  remote_src:
    description: O(src) is already on the host; otherwise the action plugin uploads it from the controller.
    type: bool
    default: false
  src_size:
    description:
      - The sum of the sizes the members of the archive O(src) declare; set by the action plugin for V(open), read
        from the archive on the controller. With O(remote_src=true), V(open) reads it from the archive on the host.
    type: int
    version_added: 0.1.0
  shared:
    description: Paths under C(shared/) linked into the release by V(stage).
    type: list
    elements: str
    default: []
  files:
    description:
      - Files V(activate) writes before the switch, each C(dest), C(content), and optional C(mode) (default
        V(0644)), C(owner) and C(group). Written atomically; an unchanged file is left alone.
    type: list
    elements: dict
    default: []
  applied:
    description:
      - What the deploy applies besides the release, as checksums (C(files), C(directories), C(service),
        C(flags)). V(open) compares them with those the running verified release was committed with; the same
        release with another configuration is deployed as a configuration change (C(config_change)), never skipped.
        V(commit) records them in the ledger entry of the release.
      - The action plugin computes them at V(open) from O(files) (rendered on the controller, supervisor's
        templates included), O(directories), O(service) and the task's C(flags) (the feature flag settings), and
        sends only the checksums. Computed on the host from O(files), O(directories) and O(service) when not given.
    type: dict
    version_added: 0.1.0
  build:
    description:
      - Which build this deploy runs, recorded by V(open) in the journal (C(build)) and by V(commit) in the ledger
        entry of the verified release; the history, the reports and the alerts show it. Keys C(archive_sha256)
        (the sha256 of the release archive), C(collection_version) (of failsafe.deploy), C(playbook_commit) (the git
        commit of the checkout that holds the playbook the run was started with, or, for a collection playbook run
        by name, the directory it was started in) and C(playbook_dirty) (tracked files differ from
        that commit).
      - The action plugin computes it at V(open) on the controller. With O(remote_src=true), V(open) hashes the
        archive O(src) on the host.
    type: dict
    version_added: 0.1.0
  directories:
    description: Directories V(activate) creates (mode 0755) when missing.
    type: list
    elements: path
    default: []
  service:
    description:
      - The service that serves the release. Keys C(manager) (V(supervisor), V(systemd) or V(none)), C(name),
        C(supervisorctl), C(supervisord), C(conf) (supervisord's configuration), C(start) (start supervisord when
        it is not running) and C(log) (the program's log, named when it does not start).
    type: dict
    default: {}
  restart:
    description:
      - V(rollback) restarts the service on the restored release, or starts it when it is not running. V(false)
        leaves the service as it is.
    type: bool
    default: true
  confirm_timeout:
    description:
      - Commit confirmed. Seconds V(activate) gives the commit to confirm the transaction; at that deadline the host
        rolls back by itself (restore, switch back to the last verified release, restart, O(checks), proof of the
        restore), records in its journal that it reverted itself and why, releases the lock and keeps the facts
        for the next run to report. Size it to cover the verify phase with room to spare.
      - V(0) turns it off.
      - With V(activate), O(checks) and O(check_defaults) are the checks the host runs after it reverts itself.
    type: int
    default: 300
  confirm_mechanism:
    description:
      - How V(activate) arms the revert timer. V(systemd) starts a transient systemd timer (C(systemd-run)),
        V(process) a watchdog process detached from the SSH session, V(auto) the first where systemd runs the host,
        else the second.
    type: str
    choices: [auto, systemd, process]
    default: auto
  confirm_alert:
    description:
      - Where the host's own revert alerts, with no controller alive. A dict with C(webhook_url) (the alert is a
        JSON POST of event C(self_reverted) with an incident id of its own, retried on connection errors, 429 and
        5xx), C(host) (the name the alert gives the host) and C(timeout) (seconds per attempt, 5 by default).
      - V(true) (the activate role's default) takes the auto_rollback callback's webhook (its C(webhook_url), or
        E(FAILSAFE_WEBHOOK_URL)) and the inventory name of the host; V(false) or null, no alert (the revert is
        then only in the next run's report).
      - The settings are kept on the host (mode 0600) only while the revert timer is armed, and removed at the
        commit, a rollback or the revert. The revert's facts (C(self_reverted)) say the incident id and whether the
        alert was delivered, so that the next run's report names the same incident and pages no one again.
      - The action plugin moves C(webhook_url) to O(confirm_alert_url), the one part kept out of every output.
    type: raw
  confirm_alert_url:
    description:
      - The webhook URL of O(confirm_alert), set by the action plugin from it; the only part of the setting that is a
        secret (masked in every output). Not to be set by hand.
    type: str
  keep_releases:
    description: Releases V(commit) keeps (never removing current or the last verified).
    type: int
    default: 5
  keep_snapshots:
    description: Snapshots V(commit) keeps.
    type: int
    default: 5
  rollback_run_id:
    description: V(rollback) also undoes the committed transaction of this run.
    type: str
  rollback_to:
    description:
      - V(rollback) goes back to this build, named as V(last_verified) (the verified release before the last
        committed deploy in the journal), a release id, or the start (12 or more hex digits) of its archive's sha256
        as the ledger recorded it at its commit. The committed transaction whose undo goes back to that build is
        rolled back (as with its O(rollback_run_id)); a host that already runs it changes nothing; any other name is
        refused before anything changes, naming the build the host could go back to.
      - An open transaction (or one whose rollback failed) is rolled back to the last verified build whatever this
        says.
    type: str
    version_added: 0.1.0
  reason:
    description: Why V(rollback) runs; recorded in the ledger and the journal.
    type: str
  quarantine:
    description:
      - Which failed release V(rollback) quarantines (the ledger marks it failed, so it is not deployed again
        without O(force)).
      - V(activated) (a rollback after a failure the run saw) quarantines a release that was activated on the host.
      - V(shown_bad) (C(failsafe.deploy.recover), and the recovery of a dead run's transaction at V(open))
        quarantines it only when the journal shows it bad on the host after its activation (a failed verify). A
        release activated just before the controller died was never shown bad, and deploys again. A transaction
        whose rollback failed after a failure the run saw is quarantined as with V(activated).
    type: str
    choices: [activated, shown_bad]
    default: activated
  layer:
    description:
      - For V(apply), the layer to apply. C(kind) names a registered layer kind; C(id) tells apart several layers of
        one kind in a transaction; the other keys are the kind's options, recorded in the journal with the undo
        record (except the kind's secret options, which are also masked in the output) so that a rollback can undo
        the layer.
      - "Kind C(traffic) (rollback stage C(traffic)): which servers of a load balancer take traffic. C(driver) is
        C(haproxy) (the runtime API on the admin socket C(socket), backend C(backend); C(state_file) is rewritten
        after every change so a reload keeps the state; C(config) is checked with C(haproxy -c) first) or C(nginx)
        (the upstream C(upstream) written whole to the include file C(path), checked with C(nginx -t) using C(conf)
        and C(prefix), then a graceful reload; C(pid_file) to wait for the new workers). C(servers) lists
        C({name, state, weight, address}) with C(state) one of C(ready), C(drain), C(maint); C(total) asks the
        weights of the ready servers to add up to it. See docs/traffic.md."
      - "Kind V(flags) (rollback stage C(flags)): feature flags in flagd flag files or an Unleash server; see the
        failsafe.deploy.flags role and docs/flags.md."
      - "Kind V(terraform) (rollback stage C(infra), undone last): a Terraform configuration. C(project_path) is
        the directory Terraform runs in, C(source) the directory of the new configuration; C(binary_path),
        C(backup_dir), C(variables), C(protected), C(allow_destroy_protected), C(lock_timeout), C(timeout) and
        C(environment) (secret: never written to the journal). See the failsafe.deploy.infra role and
        docs/infrastructure.md."
      - "Kind V(cloudformation) (rollback stage C(infra), undone last): an AWS CloudFormation stack, changed through a
        change set and, on undo, updated back to the recorded template and parameters or deleted when the deploy
        created it. C(stack_name), C(template) (a file of the new template), C(parameters), C(tags),
        C(capabilities), C(region), C(endpoint_url), C(profile), C(protected), C(allow_destroy_protected),
        C(timeout), C(poll_interval), and the secret C(aws_access_key), C(aws_secret_key) and C(session_token)
        (never written to the journal; by default boto3 takes the credentials from its own chain). Needs boto3 on
        the host that runs it. See docs/infrastructure.md."
    type: dict
  stages:
    description:
      - For V(rollback), undo only the layers of these stages. A fleet rolls back stage by stage in this order
        (flags, then traffic, then code and configuration, then the database, then infrastructure), each stage on
        every host before the next. The transaction closes when no stage with layers is left. Default is every
        stage, in that order.
    type: list
    elements: str
    choices: [flags, traffic, code, database, infra]
  layer_secrets:
    description:
      - For V(rollback), the secret options of layers (never written to the journal), keyed by layer (C(kind) or
        C(kind:id)).
    type: dict
  inventory_host:
    description:
      - The inventory name of the host this call changes, when the task is delegated to it (C(delegate_to), for
        example a load balancer's traffic layer from the app hosts' play). Returned in C(failsafe_transaction), so
        that the failsafe.deploy.auto_rollback callback rolls back that host's transaction, not the task's host's.
    type: str
notes:
  - Crash points for the crash-consistency tests (C(FAILSAFE_CRASH_AT)) sit between the layers of a rollback
    (C(engine.files-undone), C(engine.release-undone), C(engine.staged-removed), C(engine.service-undone),
    C(engine.checked)). The commit-confirmed watchdog takes its own from C(FAILSAFE_WATCHDOG_CRASH_AT) (and
    C(FAILSAFE_WATCHDOG_CRASH_HOLD)) in the environment of the activation that arms it.
seealso:
  - module: failsafe.deploy.deploy_state
  - module: failsafe.deploy.release
  - module: failsafe.deploy.snapshot
  - module: failsafe.deploy.health_check
'''

EXAMPLES = r'''
- name: Open the deploy
  failsafe.deploy.transaction:
    phase: open
    app_root: /srv/app
    release: "1.4.2"
    run_id: "{{ failsafe_run_id }}"
    snapshot_paths: [/srv/app/current, /srv/app/shared]
    checks:
      - url: http://127.0.0.1:8080/health

- name: Roll back this host in one call
  failsafe.deploy.transaction:
    phase: rollback
    service:
      manager: supervisor
      name: app
      conf: /etc/supervisor/supervisord.conf
    checks:
      - url: http://127.0.0.1:8080/health
'''

RETURN = r'''
needed:
  description: Whether the release still needs deploying (V(open)).
  returned: phase is open
  type: bool
previous_release:
  description: The release that was current before (V(open)).
  returned: phase is open
  type: str
recovered:
  description: What V(open) rolled back of a dead run's transaction, or null.
  returned: phase is open
  type: dict
snapshot:
  description: The snapshot taken (C(snapshot) id, C(entries), C(reused)).
  returned: phase is open or snapshot
  type: dict
config_change:
  description:
    - V(open) - what differs from the configuration the running release was committed with (a file, the
      directories, the service or the feature flag settings), when the release is the same and only that changed.
    - V(commit) - whether the transaction committed a configuration change of the running release.
  returned: phase is open and the configuration of the running release changed, or phase is commit
  type: raw
  version_added: 0.1.0
release_size:
  description:
    - The bytes the release archive's members declare, checked by V(open) against O(max_release_size) and the free
      space; null when V(open) does not know the archive, or the release is already staged on the host.
  returned: phase is open and the release still needs deploying
  type: int
  version_added: 0.1.0
running_checks:
  description: Results of the probe of the running release.
  returned: phase is open and the probe ran
  type: list
  elements: dict
checks:
  description:
    - One dict per check, C(name), C(ok), C(attempts), C(elapsed), C(expected), C(observed), C(error), C(status),
      C(body), C(json), C(rc).
  returned: phase is verify
  type: list
  elements: dict
written:
  description: Files V(activate) wrote.
  returned: phase is activate
  type: list
  elements: str
restarted:
  description: Whether V(activate) restarted the service.
  returned: phase is activate
  type: bool
confirm:
  description:
    - The host's revert timer. V(activate) returns what it armed (C(state), C(seconds), C(deadline_iso),
      C(mechanism), C(pid) or C(unit)) or, in check mode, what it would arm (C(would_arm)); V(commit) the timer it
      disarmed; V(query) the journal's record.
  returned: phase is activate, commit or query
  type: dict
self_reverted:
  description:
    - The facts of a transaction this host reverted by itself because nobody confirmed it in time, not reported by
      any run before this one (C(txid), C(run_id), C(release), C(cause), C(reason), C(outcome), C(timeline),
      C(rollback), and C(alert) when the host alerted by itself, with C(incident_id), C(channels), C(status)
      delivered or failed, C(attempts), C(error) and C(sent_iso)); null when there is none. V(open) reports it
      once. V(query) returns it while the transaction in the journal is the one the host reverted; with O(run_id)
      (recover.yml), only when no other run reported it, and it is then reported by that run (not in check mode).
  returned: phase is open or query
  type: dict
self_revert:
  description: The facts of the last transaction this host reverted by itself (V(query); V(rollback) when that is
    the transaction in the journal), with C(reported_by), the run that first reported it.
  returned: phase is query, or rollback with nothing to undo
  type: dict
failsafe_transaction:
  description: The transaction after the phase.
  returned: success
  type: dict
failsafe_rollback:
  description:
    - What V(rollback) did, C(txid), C(run_id), C(failed_release), C(quarantined), C(target_release), C(restored),
      C(verified), C(layers) and C(checks); C(nothing_deployed) (no release before the transaction, none checked),
      C(removed_release) (the release directory it staged, removed), C(removed_partial) (the release whose
      half-unpacked copy, left by a staging cut short, it removed) and C(service_started) (the service of the
      restored release, started because it was not running). Also returned when the rollback fails.
    - C(running_release) is the release the host runs after the rollback, read from its C(current) link (null when
      none runs); C(target_release) is that release too when no release layer was undone (a deploy that failed
      before its activation). Each entry of C(layers) says in C(undid) what its undo did, in words.
  returned: phase is rollback and there was a transaction to undo
  type: dict
journal:
  description: The journal (V(query)).
  returned: phase is query
  type: dict
lock:
  description: The lock, or null (V(query)).
  returned: phase is query
  type: dict
lock_expired:
  description: Whether the lock has expired (V(query)).
  returned: phase is query
  type: bool
holder_gone:
  description: Whether the lock's holder is a run whose process is gone from this controller (V(query)).
  returned: phase is query
  type: bool
controller:
  description: This controller's host name (V(query)).
  returned: phase is query
  type: str
failed_step:
  description: Where a rollback failed.
  returned: failure of phase rollback
  type: str
rollback_command:
  description:
    - The command that rolls this deploy back (V(commit), not in check mode), as an operator runs it from the
      directory the deploy ran in. It repeats the run's inventory sources, C(--limit), connection, privilege and vault
      options and, of its extra vars, only C(failsafe_hosts), C(failsafe_name) and C(failsafe_state_dir) (the others
      may hold secrets). Added by the action plugin on the controller; the message says it too.
  returned: phase is commit, not in check mode
  type: str
  sample: ansible-playbook failsafe.deploy.rollback -i inventory.yml --limit web -e failsafe_rollback_run_id=20250101T000000-ab12
'''

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.common.text.converters import to_native

# first: this collection's module_utils below load from the host's bytecode cache (module_utils/_bytecode.py)
from ansible_collections.failsafe.deploy.plugins.module_utils import _bytecode  # noqa: F401 pylint: disable=unused-import
from ansible_collections.failsafe.deploy.plugins.module_utils._argspec import check_lists_argument_spec, state_argument_spec
from ansible_collections.failsafe.deploy.plugins.module_utils._engine import (
    activate_phase, apply_phase, confirmed_commit, guarded_rollback, open_phase, snapshot_phase, stage_phase,
    verify_phase,
)
from ansible_collections.failsafe.deploy.plugins.module_utils._confirm import facts_of, read_facts, report_once
from ansible_collections.failsafe.deploy.plugins.module_utils._errors import FailsafeError
from ansible_collections.failsafe.deploy.plugins.module_utils.kinds import kind_class
from ansible_collections.failsafe.deploy.plugins.module_utils._journal import DeployState, ensure_query

NEEDS_RELEASE = ('open', 'snapshot', 'stage', 'activate', 'verify', 'commit')
# phases that also run in a transaction without a release (a host with only layers of other kinds)
LAYERS_ONLY = ('open', 'commit')


def main():
    module = AnsibleModule(
        argument_spec=dict(
            state_argument_spec(),
            **check_lists_argument_spec(),
            phase=dict(type='str', required=True,
                       choices=['open', 'snapshot', 'stage', 'activate', 'apply', 'verify', 'commit', 'rollback', 'query']),
            app_root=dict(type='path'),
            release=dict(type='str'),
            run_id=dict(type='str'),
            owner=dict(type='str'),
            controller=dict(type='str'),
            pid=dict(type='int'),
            takeover_pid=dict(type='int'),
            ttl=dict(type='int', default=1800),
            recover=dict(type='bool', default=True),
            force=dict(type='bool', default=False),
            force_reason=dict(type='str'),
            rca=dict(type='str'),
            require_rehearsal=dict(type='bool', default=False),
            rehearsal_store=dict(type='path'),
            rehearsal=dict(type='dict'),
            min_free_mb=dict(type='int', default=100),
            max_release_size=dict(type='bytes'),
            check_running=dict(type='bool', default=True),
            running_check_retries=dict(type='int', default=1),
            snapshot_paths=dict(type='list', elements='path', default=[]),
            snapshot_exclude=dict(type='list', elements='str', default=[]),
            src=dict(type='path'),
            remote_src=dict(type='bool', default=False),
            src_size=dict(type='int'),
            shared=dict(type='list', elements='str', default=[]),
            files=dict(type='list', elements='dict', default=[]),
            applied=dict(type='dict'),
            build=dict(type='dict'),
            directories=dict(type='list', elements='path', default=[]),
            service=dict(type='dict', default={}),
            restart=dict(type='bool', default=True),
            confirm_timeout=dict(type='int', default=300),
            confirm_mechanism=dict(type='str', default='auto', choices=['auto', 'systemd', 'process']),
            confirm_alert=dict(type='raw'),
            confirm_alert_url=dict(type='str', no_log=True),
            keep_releases=dict(type='int', default=5),
            keep_snapshots=dict(type='int', default=5),
            rollback_run_id=dict(type='str'),
            rollback_to=dict(type='str'),
            reason=dict(type='str'),
            quarantine=dict(type='str', default='activated', choices=['activated', 'shown_bad']),
            layer=dict(type='dict'),
            stages=dict(type='list', elements='str', choices=['flags', 'traffic', 'code', 'database', 'infra']),
            layer_secrets=dict(type='dict', no_log=True),
            inventory_host=dict(type='str'),
        ),
        required_if=[
            ('phase', 'stage', ('src',)),
            ('phase', 'apply', ('layer', 'run_id')),
        ],
        supports_check_mode=True,
    )
    p = dict(module.params)
    phase = p['phase']
    layer_cls = kind_class((p.get('layer') or {}).get('kind'))
    for option in (layer_cls.secret_options if layer_cls is not None else ()):
        # a layer's secret options (an API token) are masked in every output, as no_log options are
        value = (p.get('layer') or {}).get(option)
        # a dict of them (the environment of a Terraform layer: cloud keys) is masked value by value
        for secret in (value.values() if isinstance(value, dict) else [value]):
            if secret:
                module.no_log_values.add(str(secret))
    layers_only = phase in LAYERS_ONLY and not p.get('release') and not p.get('app_root')
    if layers_only and not p.get('run_id'):
        module.fail_json(msg='phase=%s needs run_id' % phase)
    if phase in NEEDS_RELEASE and not layers_only:
        missing = [k for k in ('release', 'run_id', 'app_root') if not p.get(k)]
        if phase == 'verify':
            missing = [k for k in missing if k != 'app_root']
        if missing:
            module.fail_json(msg='phase=%s needs %s' % (phase, ', '.join(missing)))
    if p.get('confirm_alert') in (True, False, 'true', 'false', 'True', 'False'):
        p['confirm_alert'] = None  # the action plugin turns true into the callback's webhook; none here
    elif isinstance(p.get('confirm_alert'), dict) and (p['confirm_alert'].get('webhook_url') or p['confirm_alert_url']):
        # Only the URL is a secret (confirm_alert_url, no_log): were the whole dict no_log, its other values (the
        # host's inventory name) would be masked wherever they appear in the output, paths included.
        url = p['confirm_alert_url'] or p['confirm_alert']['webhook_url']
        module.no_log_values.add(str(url))
        p['confirm_alert'] = dict(p['confirm_alert'], webhook_url=url)
    elif p.get('confirm_alert') is not None:
        module.fail_json(msg='confirm_alert must be true, false or a dict with webhook_url')
    if p['confirm_timeout'] < 0:
        module.fail_json(msg='confirm_timeout must be 0 (off) or a number of seconds, not %s' % p['confirm_timeout'])
    for spec in p['files']:
        if not isinstance(spec, dict) or not spec.get('dest') or spec.get('content') is None:
            module.fail_json(msg='every entry of files needs dest and content, got %r' % (spec,))

    def run(argv):
        return module.run_command(argv)

    check = module.check_mode
    try:
        if phase == 'open':
            result = open_phase(p, run, check, module.warn)
        elif phase == 'snapshot':
            result = snapshot_phase(p, check)
        elif phase == 'stage':
            result = stage_phase(p, check)
        elif phase == 'activate':
            result = activate_phase(p, run, check)
        elif phase == 'verify':
            result = verify_phase(p, check)
        elif phase == 'apply':
            result = apply_phase(p, run, check)
        elif phase == 'commit':
            result = confirmed_commit(p, check)
        elif phase == 'query':
            ds = DeployState(p['state_dir'], p['name'])
            result = ensure_query(ds)
            result['confirm'] = (result['journal'] or {}).get('confirm')
            result['self_revert'] = read_facts(ds)
            result['self_reverted'] = facts_of(ds, result['journal'])
            if result['self_reverted'] and p.get('run_id'):
                # a run that reports what it finds (recover.yml) reports it once, as the open phase does
                result['self_reverted'] = report_once(ds, result['self_reverted'], p['run_id'], check_mode=check)
        else:
            result = guarded_rollback(p, run, check)
    except FailsafeError as e:
        details = dict((k, v) for k, v in (e.details or {}).items() if k not in ('msg', 'failed', 'changed'))
        module.fail_json(msg=e.msg, **_owned(details, p.get('inventory_host')))
    except (OSError, IOError) as e:
        where = getattr(e, 'filename', None) or p['state_dir']
        module.fail_json(msg='%s: %s' % (where, to_native(e.strerror or e)), path=where)
    if not module._diff:
        result.pop('diff', None)
    elif result.get('diff') is None:
        result.pop('diff', None)
    module.exit_json(**_owned(result, p.get('inventory_host')))


def _owned(result, inventory_host):
    """Names the host whose transaction this is in ``failsafe_transaction`` (a delegated call's target)."""
    if inventory_host and isinstance(result.get('failsafe_transaction'), dict):
        result['failsafe_transaction'] = dict(result['failsafe_transaction'], inventory_host=inventory_host)
    return result


if __name__ == '__main__':
    main()
