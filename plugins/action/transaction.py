# -*- coding: utf-8 -*-
# Copyright: Contributors to failsafe.deploy
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Controller side of failsafe.deploy.transaction: the controller's identity for the lock, the judgement whether a
lock's holder died on this controller, the size the release archive's members declare for the open phase, and the
upload of the release archive for the stage phase, and the command that rolls a committed deploy back (the
run's inventory, limit and connection options are known here only), all in the same task as the module call (as
``unarchive`` pairs an action plugin with its module)."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import getpass
import os
import socket

from ansible.errors import AnsibleActionFail, AnsibleError
from ansible.module_utils.common.text.converters import to_native
from ansible.module_utils.parsing.convert_bool import boolean
from ansible.plugins.action import ActionBase
from ansible.template import trust_as_template

from ansible_collections.failsafe.deploy.plugins.module_utils._applied import fingerprint
from ansible_collections.failsafe.deploy.plugins.module_utils._release import ReleaseError, archive_size
from ansible_collections.failsafe.deploy.plugins.plugin_utils import _launcher, _settings
from ansible_collections.failsafe.deploy.plugins.plugin_utils._build import build_of, playbook_directory
from ansible_collections.failsafe.deploy.plugins.plugin_utils import _rehearsal

CONTROLLER_PID_ENV = 'FAILSAFE_CONTROLLER_PID'
# The activate role's templates (supervisor's files): found from the open phase too, which runs in another role.
ACTIVATE_TEMPLATES = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                                  'roles', 'activate', 'templates')


def controller_pid():
    """The ansible-playbook process this task runs under: exported by the auto_rollback callback, else the parent
    of this worker process."""
    value = os.environ.get(CONTROLLER_PID_ENV, '')
    return int(value) if value.isdigit() else os.getppid()


def process_gone(pid):
    """Whether no live process has this pid on this machine (a zombie counts as gone)."""
    try:
        with open('/proc/%d/status' % int(pid)) as handle:
            for line in handle:
                if line.startswith('State:'):
                    return line.split()[1] in ('Z', 'X')
    except (IOError, OSError, ValueError):
        return True
    return False


def process_started(pid):
    """When the process ``pid`` of this machine started (seconds since the epoch), or None when it cannot be read."""
    try:
        with open('/proc/%d/stat' % int(pid)) as handle:
            ticks = int(handle.read().rsplit(')', 1)[1].split()[19])  # field 22, starttime, in clock ticks
        with open('/proc/stat') as handle:
            boot = [int(line.split()[1]) for line in handle if line.startswith('btime ')][0]
        return boot + ticks / float(os.sysconf('SC_CLK_TCK'))
    except (IOError, OSError, ValueError, IndexError):
        return None


def reused_pid(pid, acquired):
    """Whether the process now at ``pid`` started after the lock was taken (``acquired``, seconds since the epoch):
    then it is another process that was given the holder's pid once the holder ended, not the holder."""
    started = process_started(pid)
    try:
        return started is not None and started > float(acquired) + 1.0
    except (TypeError, ValueError):
        return False


def holder_dead(holder, run_id, hostname, own_pid):
    """A lock of another run, taken from this controller, whose ansible-playbook process no longer runs here (its pid
    is free, or held by a process that started after the lock was taken), or is the process that started this run's
    parent (the callback's rollback of its own run). A lock from another
    controller cannot be judged from here: it stays until its TTL runs out."""
    if not isinstance(holder, dict) or holder.get('run_id') == run_id:
        return False
    if (holder.get('controller') or '') != hostname:
        return False
    pid = str(holder.get('pid') or '')
    if not pid.isdigit():
        return False
    if pid == os.environ.get(CONTROLLER_PID_ENV, ''):
        return True
    return process_gone(int(pid)) or reused_pid(int(pid), holder.get('acquired'))


def rollback_command(run_id, loader=None):
    """The command that rolls back the run ``run_id`` on the hosts of this run, as an operator runs it from the
    directory this run started in: its inventory, limit and connection options, never its other extra vars."""
    from ansible import context
    cliargs = context.CLIARGS
    extra = _launcher.location_vars(loader)
    extra['failsafe_rollback_run_id'] = run_id
    return _launcher.command_line(_launcher.operator_command(
        'failsafe.deploy.rollback', cliargs, extra_vars=extra, defaults=_launcher.config_defaults()))


def confirm_alert(value, host):
    """Where the host's own revert alerts (the module's confirm_alert): true takes this run's webhook (the
    auto_rollback callback's), a dict is kept (the host's inventory name added), false or no webhook: None."""
    if isinstance(value, dict):
        return dict(value, host=value.get('host') or host) if value.get('webhook_url') else None
    if value is None or not boolean(value, strict=False):
        return None
    url = _settings.run_webhook_url()
    return {'webhook_url': url, 'host': host} if url else None


def _user():
    try:
        return getpass.getuser()
    except (KeyError, OSError, ImportError):
        return 'root'


class ActionModule(ActionBase):

    TRANSFERS_FILES = True

    def _rendered(self, spec, task_vars):
        """A file given by ``src`` (a template on the controller, found as the template module finds it, or among
        the activate role's templates) becomes one given by ``content``, rendered here with the task's variables."""
        if not isinstance(spec, dict) or spec.get('content') is not None or not spec.get('src'):
            return spec
        try:
            source = self._find_needle('templates', spec['src'])
        except AnsibleError as e:
            source = os.path.join(ACTIVATE_TEMPLATES, spec['src'])
            if os.path.isabs(spec['src']) or not os.path.isfile(source):
                raise AnsibleActionFail('template %s for %s: %s' % (spec['src'], spec.get('dest'), to_native(e)))
        data = trust_as_template(self._loader.get_text_file_contents(source))
        searchpath = list(task_vars.get('ansible_search_path', [])) + [self._loader._basedir, os.path.dirname(source)]
        searchpath = [x for p in searchpath for x in (os.path.join(p, 'templates'), p)]
        available = dict(task_vars)
        available.setdefault('ansible_managed', 'Ansible managed: %s' % spec['src'])
        templar = self._templar.copy_with_new_env(searchpath=searchpath, available_variables=available)
        rendered = dict(spec)
        rendered.pop('src')
        rendered['content'] = templar.template(data, escape_backslashes=False) or ''
        return rendered

    def _applied(self, args, task_vars):
        """What the deploy applies besides the release, as checksums, for the open phase to compare with what the
        running release was committed with: the files rendered as the activation renders them, the directories,
        the service and the flag settings (only checksums go to the host)."""
        files = []
        for spec in args.pop('files', None) or []:
            try:
                files.append(self._rendered(spec, task_vars))
            except AnsibleError:
                # a template that needs what only the activation has (a fact of its before hook): known by its
                # source; the activation renders it, or fails on it, as before
                files.append(spec)
        return fingerprint(files, args.pop('directories', None), args.get('service'), args.pop('flags', None))

    def _declared_size(self, src):
        """The bytes the members of the release archive src (on the controller) declare, so that the open phase
        refuses one that would not fit before the transaction opens; None when src is not a file here yet (the
        stage phase bounds it on the host) or not an archive (the stage phase refuses it)."""
        try:
            local = self._find_needle('files', src)
        except AnsibleError:
            return None
        if not os.path.isfile(local):
            return None
        try:
            return archive_size(local)
        except (ReleaseError, OSError):
            return None

    def _build(self, args, task_vars):
        """The build this deploy runs, for the open phase to record in the journal: the sha256 of the release
        archive on the controller (the host hashes one already there, remote_src), this collection's version and
        the git commit of the directory of the playbook this run was started with."""
        local = None
        if args.get('src') and not args.get('remote_src'):
            try:
                local = self._find_needle('files', args['src'])
            except AnsibleError:
                local = None
        return build_of(archive=local, playbook_dir=playbook_directory(task_vars.get('playbook_dir')))

    def _promotion_gate(self, args):
        """The promotion gate (require_rehearsal): the release archive must have a passing rehearsal record in
        rehearsal_store. Returns the refusal's words, or None; the record found (or the gap a forced deploy passed)
        goes to the open phase as ``rehearsal``, which records it in the journal."""
        store = args.get('rehearsal_store') or ''
        sha = (args.get('build') or {}).get('archive_sha256')
        if not store:
            why = 'rehearsal_store (failsafe_rehearsal_store) is not set'
        elif not sha:
            why = ("the checksum of release %s's archive is not known on the controller (failsafe_release_archive "
                   'is not a file here), so no rehearsal of it can be found' % args['release'])
        else:
            record = _rehearsal.read_record(store, sha)
            why = _rehearsal.missing(record, store, sha, args['release'])
            if why is None:
                args['rehearsal'] = {'record': _rehearsal.record_path(store, sha), 'passed': True,
                                     'finished_iso': record.get('finished_iso'),
                                     'staging_hosts': record.get('staging_hosts')}
                return None
        if not boolean(args.get('force', False), strict=False):
            return ('Refusing to deploy %s: %s. Nothing was changed: no lock taken, no transaction opened. '
                    '(failsafe_force=true with failsafe_force_reason deploys it anyway, recorded as forced.)'
                    % (args['release'], why))
        if not (args.get('force_reason') or '').strip():
            return ('Refusing to force release %s past the promotion gate (%s) without a reason: set '
                    'failsafe_force_reason, which is recorded with who forced it. Nothing was changed.'
                    % (args['release'], why))
        args['rehearsal'] = {'passed': False, 'missing': why}
        return None

    def run(self, tmp=None, task_vars=None):
        if task_vars is None:
            task_vars = dict()
        result = super(ActionModule, self).run(tmp, task_vars)
        del tmp
        args = dict(self._task.args)
        phase = args.get('phase')
        hostname = socket.gethostname()
        if phase == 'open':
            args.setdefault('controller', hostname)
            args.setdefault('pid', controller_pid())
            if not args.get('owner'):
                args['owner'] = '%s@%s' % (os.environ.get('USER') or _user(), hostname)
            if args.get('src') and not args.get('remote_src') and args.get('src_size') is None:
                size = self._declared_size(args['src'])
                if size is not None:
                    args['src_size'] = size
            if args.get('release') and not args.get('applied'):
                args['applied'] = self._applied(args, task_vars)
            if args.get('release') and not args.get('build'):
                args['build'] = self._build(args, task_vars)
            if args.get('release') and boolean(args.get('require_rehearsal', False), strict=False):
                refusal = self._promotion_gate(args)
                if refusal:
                    result.update(failed=True, changed=False, msg=refusal, refused='rehearsal')
                    return result
            elif args.get('release') and args.get('rehearsal_store') and not args.get('rehearsal'):
                # not required here, but a passing rehearsal of a changed archive reopens the redeploy gate
                sha = (args.get('build') or {}).get('archive_sha256')
                record = _rehearsal.read_record(args['rehearsal_store'], sha) if sha else None
                if _rehearsal.passed(record):
                    args['rehearsal'] = {'record': _rehearsal.record_path(args['rehearsal_store'], sha),
                                         'passed': True, 'finished_iso': record.get('finished_iso'),
                                         'staging_hosts': record.get('staging_hosts')}
            args.pop('flags', None)
        cleanup = False
        if phase == 'activate':
            alert = confirm_alert(args.get('confirm_alert'), task_vars.get('inventory_hostname'))
            # the URL alone is the secret (confirm_alert_url, no_log): the host's name and the rest stay readable
            if alert:
                args['confirm_alert_url'] = alert['webhook_url']
                alert = dict((key, value) for key, value in alert.items() if key != 'webhook_url')
            args['confirm_alert'] = alert
        if phase == 'activate' and args.get('files'):
            args['files'] = [self._rendered(spec, task_vars) for spec in args['files']]
        try:
            if phase == 'stage' and args.get('src') and not args.get('remote_src'):
                try:
                    local = self._find_needle('files', args['src'])
                except AnsibleError as e:
                    raise AnsibleActionFail('release archive %s is not on the controller: %s. If it is already on '
                                            'the hosts, set remote_src (failsafe_release_archive_remote=true).'
                                            % (args['src'], to_native(e)))
                if os.path.isdir(local):
                    raise AnsibleActionFail('src %s is a directory on the controller: give a .tar.gz, .tgz or '
                                            '.tar archive, or a directory already on the hosts with remote_src'
                                            % local)
                tmpdir = self._connection._shell.tmpdir or self._make_tmp_path()
                remote = self._connection._shell.join_path(tmpdir, os.path.basename(local))
                self._transfer_file(local, remote)
                self._fixup_perms2((tmpdir, remote))
                args['src'] = remote
                args['remote_src'] = True
                cleanup = True
            res = self._execute_module(module_name='failsafe.deploy.transaction', module_args=args,
                                       task_vars=task_vars)
            holder = res.get('holder') if phase == 'open' and res.get('failed') else None
            if holder and holder_dead(holder, args.get('run_id'), hostname, args.get('pid')):
                args['takeover_pid'] = int(res['holder']['pid'])
                res = self._execute_module(module_name='failsafe.deploy.transaction', module_args=args,
                                           task_vars=task_vars)
                res['lock_taken_over'] = True
            if phase == 'commit' and not res.get('failed') and not self._task.check_mode and res.get('msg'):
                command = rollback_command(args.get('run_id'), self._loader)
                res['rollback_command'] = command
                if res.get('config_change'):
                    res['msg'] += ' To roll this configuration change back to the configuration before it: %s' % command
                else:
                    res['msg'] += ' To roll this deploy back to the release before it: %s' % command
            if phase == 'query' and not res.get('failed'):
                lock = res.get('lock')
                res['controller'] = hostname
                res['holder_gone'] = bool(lock) and holder_dead(lock, args.get('run_id'), hostname, None)
            result.update(res)
        finally:
            if cleanup:
                self._remove_tmp_path(self._connection._shell.tmpdir)
        return result
