# -*- coding: utf-8 -*-
# Private to this collection: not a public API.
# Copyright: Contributors to failsafe.deploy
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The ``terraform`` layer kind: a Terraform configuration applied as part of a deploy (stage ``infra``: applied
before the code, undone after the database, last of all).

Options (the ``layer`` dict): ``project_path`` (the directory Terraform runs in: the live configuration),
``source`` (a directory holding the new configuration: its ``*.tf``, ``*.tf.json``, ``*.tfvars`` and
``.terraform.lock.hcl`` files replace those of ``project_path``), ``binary_path`` (the ``terraform`` command,
found on ``PATH`` by default), ``backup_dir`` (where the recorded configuration and state are kept, by default
``.failsafe`` inside ``project_path``), ``variables`` (``-var`` values), ``protected`` (resource addresses a plan
may not destroy or replace), ``allow_destroy_protected``, ``lock_timeout`` (Terraform's own state lock, seconds),
``timeout`` (of each Terraform command, seconds) and ``environment`` (variables for Terraform and its providers,
such as cloud keys: a secret option, never written to the journal).

Capture records the live version: a content hash of the configuration files, a copy of them, and the state's
serial, lineage, resource addresses and a copy (``terraform state pull``). Apply puts the new configuration in
place, plans, refuses a plan that destroys a protected resource, applies that plan and proves it with a second plan
that shows no changes. Undo puts the recorded configuration back and applies it from the live state (which knows
what the new version created, so the re-apply removes it); a state that is gone is first pushed back from the
recorded copy. The undo never runs ``destroy`` on a configuration that existed before: only a project the deploy
created from nothing is destroyed. Verify: the configuration's hash is the recorded one, a plan shows no changes,
and every resource the recorded state held is still there.

The layer holds an exclusive lock (``backup_dir``/lock) while it applies or undoes, beside Terraform's own state
lock: two deploys never apply one state at once.
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import errno
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import time

from ansible_collections.failsafe.deploy.plugins.module_utils._atomic import atomic_write_bytes
from ansible_collections.failsafe.deploy.plugins.module_utils._layers import Layer, LayerError, register

CONFIG_SUFFIXES = ('.tf', '.tf.json', '.tfvars', '.tfvars.json')
CONFIG_NAMES = ('.terraform.lock.hcl',)
DEFAULT_TIMEOUT = 600


def _tail(text, lines=8):
    return ' | '.join(line.strip() for line in (text or '').strip().splitlines()[-lines:] if line.strip())


def config_files(path):
    """The names of the configuration files directly in ``path`` (Terraform reads no subdirectory), sorted."""
    try:
        names = os.listdir(path)
    except OSError:
        return []
    wanted = [n for n in names if n.endswith(CONFIG_SUFFIXES) or n in CONFIG_NAMES]
    return sorted(n for n in wanted if os.path.isfile(os.path.join(path, n)))


def config_hash(path):
    """The content hash of a configuration directory: sha256 over each file's name and content."""
    digest = hashlib.sha256()
    for name in config_files(path):
        with open(os.path.join(path, name), 'rb') as handle:
            data = handle.read()
        digest.update(name.encode('utf-8') + b'\0' + hashlib.sha256(data).hexdigest().encode('ascii') + b'\n')
    return digest.hexdigest()


def _put_config(src, dest):
    """Make the configuration files of ``dest`` those of ``src``: each written atomically, extra ones removed."""
    wanted = config_files(src)
    for name in wanted:
        with open(os.path.join(src, name), 'rb') as handle:
            atomic_write_bytes(os.path.join(dest, name), handle.read(), mode=0o644)
    for name in config_files(dest):
        if name not in wanted:
            os.unlink(os.path.join(dest, name))


def state_facts(text):
    """serial, lineage and resource addresses of a state document (text of ``terraform state pull``)."""
    try:
        doc = json.loads(text) if (text or '').strip() else {}
    except ValueError:
        raise LayerError('the Terraform state is not JSON: %s' % _tail(text, 2))
    resources = []
    for res in doc.get('resources') or []:
        base = '%s.%s' % (res.get('type'), res.get('name'))
        if res.get('mode') == 'data':
            continue
        if res.get('module'):
            base = '%s.%s' % (res['module'], base)
        for inst in res.get('instances') or [{}]:
            key = inst.get('index_key')
            resources.append(base if key is None else '%s[%s]' % (base, json.dumps(key)))
    return {'serial': doc.get('serial'), 'lineage': doc.get('lineage'), 'resources': sorted(resources)}


@register
class TerraformLayer(Layer):
    kind = 'terraform'
    stage = 'infra'
    secret_options = ('environment',)

    def __init__(self, options, run=None):
        self.o = dict(options or {})
        self.project = self.o.get('project_path')
        if not self.project:
            raise LayerError('the terraform layer needs project_path: the directory Terraform runs in')
        self.project = os.path.abspath(self.project)
        self.binary = self.o.get('binary_path') or 'terraform'
        self.backup_dir = os.path.abspath(self.o.get('backup_dir') or os.path.join(self.project, '.failsafe'))
        self.timeout = float(self.o.get('timeout') or DEFAULT_TIMEOUT)
        self.lock_timeout = int(self.o.get('lock_timeout') or 60)
        self._lock_fd = None

    # --- running Terraform ----------------------------------------------------------------------------------------

    def _env(self):
        env = dict(os.environ, LC_ALL='C', CHECKPOINT_DISABLE='1', TF_IN_AUTOMATION='1', TF_INPUT='0')
        for key, value in (self.o.get('environment') or {}).items():
            env[str(key)] = str(value)
        return env

    def tf(self, *args, **kw):
        argv = [self.binary, '-chdir=%s' % self.project] + list(args)
        try:
            proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                                    env=self._env())
        except OSError as e:
            raise LayerError('cannot run the terraform command %s: %s (set binary_path)' % (self.binary, e.strerror))
        try:
            out, err = proc.communicate(timeout=self.timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            raise LayerError('terraform %s did not finish within %d s' % (args[0], self.timeout))
        out, err = out.decode('utf-8', 'replace'), err.decode('utf-8', 'replace')
        if proc.returncode not in kw.get('ok', (0,)):
            raise LayerError('terraform %s failed in %s (rc %d): %s'
                             % (args[0], self.project, proc.returncode, _tail(err) or _tail(out)),
                             rc=proc.returncode, stderr=_tail(err, 20))
        return proc.returncode, out, err

    def _vars(self):
        return ['-var=%s=%s' % (k, v if isinstance(v, str) else json.dumps(v))
                for k, v in sorted((self.o.get('variables') or {}).items())]

    def _lock_arg(self):
        return '-lock-timeout=%ds' % self.lock_timeout

    def init(self):
        self.tf('init', '-input=false', '-no-color', self._lock_arg())

    def state(self):
        """The live state's facts and text (``terraform state pull``)."""
        dummy, out, dummy2 = self.tf('state', 'pull')
        return state_facts(out), out

    def plan_changes(self):
        """Whether a plan of the live configuration shows changes (``-detailed-exitcode``: 0 none, 2 some)."""
        rc, out, dummy = self.tf('plan', '-input=false', '-no-color', '-detailed-exitcode', self._lock_arg(),
                                 *self._vars(), ok=(0, 2))
        return rc == 2, out

    # --- the lock ---------------------------------------------------------------------------------------------------

    def _lock(self):
        if not os.path.isdir(self.backup_dir):
            os.makedirs(self.backup_dir, 0o700)
        fd = os.open(os.path.join(self.backup_dir, 'lock'), os.O_RDWR | os.O_CREAT, 0o600)
        deadline = time.time() + self.lock_timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except (IOError, OSError) as e:
                if e.errno not in (errno.EAGAIN, errno.EACCES) or time.time() >= deadline:
                    try:
                        holder = os.read(fd, 200).decode('utf-8', 'replace').strip()
                    finally:
                        os.close(fd)
                    raise LayerError('the Terraform project %s is being applied by another deploy (%s) for more '
                                     'than %d s: nothing was changed' % (self.project, holder or 'unknown holder',
                                                                         self.lock_timeout))
                time.sleep(0.2)
        os.ftruncate(fd, 0)
        os.write(fd, ('pid %d' % os.getpid()).encode('ascii'))
        self._lock_fd = fd

    def _unlock(self):
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    # --- the interface ----------------------------------------------------------------------------------------------

    def describe(self, options):
        return 'apply the Terraform configuration of %s in %s' % (options.get('source'), self.project)

    def plan(self, options):
        source = options.get('source')
        same = bool(source) and config_hash(source) == config_hash(self.project)
        return {'changed': not same,
                'msg': 'check mode: the Terraform configuration of %s is live in %s already' % (source, self.project)
                if same else 'check mode: would %s, then prove it with an empty plan' % self.describe(options)}

    def _source(self, options):
        source = options.get('source')
        if not source or not os.path.isdir(source):
            raise LayerError('the terraform layer needs source: a directory holding the new configuration (got %r)'
                             % (source,))
        if not config_files(source):
            raise LayerError('the configuration directory %s holds no Terraform files (*.tf): nothing was changed'
                             % source)
        return os.path.abspath(source)

    def capture(self, params):
        self._source(params)
        if not os.path.isdir(self.project):
            os.makedirs(self.project, 0o755)
        store = os.path.join(self.backup_dir, 'recorded-%d-%d' % (int(time.time() * 1000), os.getpid()))
        os.makedirs(os.path.join(store, 'config'), 0o700)
        files = config_files(self.project)
        for name in files:
            shutil.copy2(os.path.join(self.project, name), os.path.join(store, 'config', name))
        facts, text = {'serial': None, 'lineage': None, 'resources': []}, ''
        self._lock()
        try:
            if files:
                self.init()
                facts, text = self.state()
        finally:
            self._unlock()
        if text.strip():
            atomic_write_bytes(os.path.join(store, 'terraform.tfstate'), text.encode('utf-8'), mode=0o600)
        return {'project_path': self.project, 'store': store, 'config_hash': config_hash(self.project),
                'config_files': files, 'existed': bool(files), 'serial': facts['serial'],
                'lineage': facts['lineage'], 'resources': facts['resources'], 'state_saved': bool(text.strip())}

    def _check_plan(self, planfile, record):
        """Refuse a plan that destroys or replaces a protected resource; returns the planned changes."""
        dummy, out, dummy2 = self.tf('show', '-json', '-no-color', planfile)
        try:
            doc = json.loads(out)
        except ValueError:
            raise LayerError('terraform show -json gave no JSON: %s' % _tail(out, 2))
        changes = []
        for change in doc.get('resource_changes') or []:
            actions = (change.get('change') or {}).get('actions') or []
            if actions and actions != ['no-op'] and actions != ['read']:
                changes.append({'address': change.get('address'), 'actions': actions})
        protected = set(self.o.get('protected') or [])
        bad = [c['address'] for c in changes if 'delete' in c['actions'] and c['address'] in protected]
        if bad and not self.o.get('allow_destroy_protected'):
            raise LayerError('the plan would destroy protected resource(s) %s: refused, nothing was applied (set '
                             'allow_destroy_protected to allow it)' % ', '.join(sorted(bad)), planned=changes)
        return changes

    def apply(self, params, record):
        source = self._source(params)
        self._lock()
        try:
            changed = config_hash(source) != config_hash(self.project)
            if changed:
                _put_config(source, self.project)
            self.init()
            planfile = os.path.join(self.backup_dir, 'plan-%d' % os.getpid())
            rc, dummy, dummy2 = self.tf('plan', '-input=false', '-no-color', '-detailed-exitcode', self._lock_arg(),
                                        '-out=%s' % planfile, *self._vars(), ok=(0, 2))
            changes = []
            if rc == 2:
                try:
                    changes = self._check_plan(planfile, record)
                    self.tf('apply', '-input=false', '-no-color', '-auto-approve', self._lock_arg(), planfile)
                finally:
                    if os.path.exists(planfile):
                        os.unlink(planfile)
            left, out = self.plan_changes()
            if left:
                raise LayerError('the Terraform configuration of %s was applied but a plan still shows changes: %s'
                                 % (source, _tail(out, 4)))
            facts, dummy = self.state()
        finally:
            self._unlock()
        return {'changed': changed or rc == 2, 'planned': changes, 'serial': facts['serial'],
                'resources': facts['resources'],
                'msg': 'Terraform configuration applied in %s (%d change(s)), proven by an empty plan'
                       % (self.project, len(changes))}

    def undo(self, record):
        self._lock()
        try:
            config = os.path.join(record['store'], 'config')
            saved_state = os.path.join(record['store'], 'terraform.tfstate')
            if not record.get('existed'):
                # a project the deploy created from nothing: destroy what the new version made, then remove its files
                if config_files(self.project):
                    self.init()
                    self.tf('destroy', '-input=false', '-no-color', '-auto-approve', self._lock_arg(), *self._vars())
                    for name in config_files(self.project):
                        os.unlink(os.path.join(self.project, name))
                return {'report': {'undid': 'Terraform project %s destroyed (the deploy created it)' % self.project,
                                   'project_path': self.project}}
            _put_config(config, self.project)
            self.init()
            facts, dummy = self.state()
            pushed = False
            if facts['lineage'] is None and record.get('state_saved') and os.path.exists(saved_state):
                # the live state is gone (lost in a crash): start again from the recorded copy
                self.tf('state', 'push', saved_state)
                pushed = True
            elif record.get('lineage') and facts['lineage'] not in (None, record['lineage']):
                raise LayerError('the Terraform state of %s is another one now (lineage %s, recorded %s): not '
                                 're-applying over it' % (self.project, facts['lineage'], record['lineage']))
            self.tf('apply', '-input=false', '-no-color', '-auto-approve', self._lock_arg(), *self._vars())
            facts, dummy = self.state()
        finally:
            self._unlock()
        return {'report': {'undid': 'Terraform configuration of %s re-applied (serial %s%s)'
                                    % (self.project, facts['serial'], ', state pushed back' if pushed else ''),
                           'project_path': self.project, 'config_hash': record['config_hash']}}

    def verify(self, record):
        problems = []
        if not record.get('existed'):
            if config_files(self.project):
                problems.append('%s still holds a Terraform configuration the deploy created' % self.project)
            return problems
        live = config_hash(self.project)
        if live != record['config_hash']:
            problems.append('the configuration in %s is not the recorded one (hash %s, recorded %s)'
                            % (self.project, live[:12], record['config_hash'][:12]))
            return problems
        self._lock()
        try:
            left, out = self.plan_changes()
            facts, dummy = self.state()
        finally:
            self._unlock()
        if left:
            problems.append('a plan of the recorded configuration still shows changes: %s' % _tail(out, 4))
        gone = sorted(set(record.get('resources') or []) - set(facts['resources']))
        if gone:
            problems.append('resource(s) that existed before the deploy are gone: %s' % ', '.join(gone))
        return problems
