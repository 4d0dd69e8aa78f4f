# -*- coding: utf-8 -*-
# Private to this collection: not a public API.
# Copyright: Contributors to failsafe.deploy
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The ``flags`` layer kind: feature flags flipped as part of a deploy, put back by its rollback (stage ``flags``,
undone before anything else: the kill switch is the fastest way back).

Backends:

- ``flagd_file`` (default): a flag file in the flagd format (``{"flags": {"<key>": {"state": "ENABLED",
  "variants": {"on": true, "off": false}, "defaultVariant": "off", "targeting": {}}}}``), which the OpenFeature
  flagd provider evaluates in-process. The file is rewritten atomically (a reader sees the old file or the new one),
  keeping its mode and owner; only the keys the layer sets are touched, the others stay as they are.
- ``unleash``: a feature of an Unleash server, switched on or off in one environment through the admin API. The
  API token is a secret option: never written to the journal.

Options (the ``layer`` dict): ``backend``, ``flags`` (key -> what to set: ``state`` ENABLED or DISABLED,
``default_variant``, or ``enabled`` true/false, which for a flagd file picks the variant whose value is true or
false and sets ``state`` ENABLED, so that flagd answers that variant), ``create`` (create a key that does not
exist; flagd files then need ``variants`` and ``default_variant``),
``path`` (flagd) or ``url``, ``project``, ``environment``, ``token``, ``timeout`` (Unleash).

The capture is the previous value of every key set (or that it did not exist); undo puts it back; verify reads it
back. A key that does not exist, a variant the flag does not have, a file that is not a flag file: a clear error
before anything changes.
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import json
import os
import stat


from ansible_collections.failsafe.deploy.plugins.module_utils._atomic import atomic_write_bytes
from ansible_collections.failsafe.deploy.plugins.module_utils._layers import Layer, LayerError, register

from urllib.error import HTTPError, URLError
from urllib.parse import quote

BACKENDS = ('flagd_file', 'unleash')
STATES = ('ENABLED', 'DISABLED')
SETTINGS = ('state', 'default_variant', 'enabled', 'variants')


def _settings(options):
    """The ``flags`` option, checked: key -> dict of settings."""
    flags = options.get('flags')
    if not isinstance(flags, dict) or not flags:
        raise LayerError('the flags layer needs flags: a dict of flag key -> what to set (state, default_variant or '
                         'enabled)')
    out = {}
    for key, want in flags.items():
        if isinstance(want, bool):
            want = {'enabled': want}
        if not isinstance(want, dict) or not want:
            raise LayerError('flag %r: expected a dict of state, default_variant or enabled, got %r' % (key, want))
        unknown = sorted(set(want) - set(SETTINGS))
        if unknown:
            raise LayerError('flag %r: unknown setting(s) %s; the settings are %s'
                             % (key, ', '.join(unknown), ', '.join(SETTINGS)))
        if want.get('state') is not None and want['state'] not in STATES:
            raise LayerError('flag %r: state must be ENABLED or DISABLED, got %r' % (key, want['state']))
        if 'enabled' in want and not isinstance(want['enabled'], bool):
            raise LayerError('flag %r: enabled must be true or false, got %r' % (key, want['enabled']))
        if 'enabled' in want and want.get('default_variant') is not None:
            raise LayerError('flag %r: set either enabled or default_variant, not both' % key)
        if 'enabled' in want and want.get('state') == 'DISABLED':
            raise LayerError('flag %r: enabled: %s and state: DISABLED contradict each other (a DISABLED flag '
                             "answers the application's coded default); enabled sets state ENABLED itself"
                             % (key, str(want['enabled']).lower()))
        out[str(key)] = dict((k, v) for k, v in want.items() if v is not None)
    return out


def flag_layer_id(options):
    """A stable id for the layer of one flag store: the file's path, or the server, project and environment."""
    if options.get('backend', 'flagd_file') == 'unleash':
        return '%s/%s/%s' % ((options.get('url') or '').rstrip('/'), options.get('project') or 'default',
                             options.get('environment') or '')
    return options.get('path') or ''


# --- flagd flag file ----------------------------------------------------------------------------------------------

class FlagdFile(object):
    """Reads and writes a flagd flag file."""

    def __init__(self, path):
        if not path:
            raise LayerError('the flagd_file backend needs path: the flag file')
        self.path = path

    def read(self, missing_ok=False):
        try:
            with open(self.path, 'rb') as handle:
                text = handle.read().decode('utf-8')
        except (IOError, OSError) as e:
            if missing_ok and not os.path.exists(self.path):
                return None
            raise LayerError('cannot read the flag file %s: %s' % (self.path, getattr(e, 'strerror', None) or e))
        try:
            doc = json.loads(text)
        except ValueError as e:
            raise LayerError('the flag file %s is not valid JSON (%s): nothing was changed' % (self.path, e))
        if not isinstance(doc, dict) or not isinstance(doc.get('flags'), dict):
            raise LayerError('%s is not a flagd flag file: no "flags" object at the top' % self.path)
        return doc

    def write(self, doc):
        try:
            st = os.stat(self.path)
            mode, uid, gid = stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid
        except OSError:
            mode, uid, gid = 0o644, -1, -1
        data = (json.dumps(doc, indent=2) + '\n').encode('utf-8')
        atomic_write_bytes(self.path, data, mode=mode)
        if uid != -1 and os.geteuid() == 0:
            os.chown(self.path, uid, gid)


def _flagd_state(flag):
    """What the layer records of a flag: its state and default variant (None: the key does not exist)."""
    if flag is None:
        return None
    return {'state': flag.get('state'), 'defaultVariant': flag.get('defaultVariant')}


def _flagd_target(key, flag, want, create):
    """The flag as it should be after applying ``want``; raises on a setting the flag cannot take."""
    if flag is None:
        if not create:
            raise LayerError("flag key %r does not exist in the flag file: nothing was changed (set create: true to "
                             'create it, with variants and default_variant)' % key)
        variants = want.get('variants')
        if not isinstance(variants, dict) or not variants:
            raise LayerError('flag %r does not exist: creating it needs variants (name -> value)' % key)
        flag = {'state': 'ENABLED', 'variants': variants, 'defaultVariant': None, 'targeting': {}}
        if 'default_variant' not in want and 'enabled' not in want:
            raise LayerError('flag %r does not exist: creating it needs default_variant or enabled' % key)
    new = dict(flag)
    variants = new.get('variants') or {}
    if want.get('variants') is not None and want['variants'] != variants and flag is not None and 'variants' in flag:
        raise LayerError('flag %r: variants can only be given to create a flag; the flag file already defines them'
                         % key)
    if 'state' in want:
        new['state'] = want['state']
    if 'enabled' in want:
        matches = [name for name, value in variants.items() if value is want['enabled']]
        if len(matches) != 1:
            raise LayerError('flag %r: enabled: %s needs exactly one variant whose value is %s; its variants are %s'
                             % (key, str(want['enabled']).lower(), str(want['enabled']).lower(),
                                json.dumps(variants, sort_keys=True)))
        new['defaultVariant'] = matches[0]
        # flagd answers the defaultVariant of an ENABLED flag only: a DISABLED one gives the application's coded
        # default, so a flag said enabled (or disabled) is switched on as well
        new['state'] = 'ENABLED'
    if want.get('default_variant') is not None:
        if want['default_variant'] not in variants:
            raise LayerError('flag %r has no variant %r; its variants are %s'
                             % (key, want['default_variant'], ', '.join(sorted(variants)) or 'none'))
        new['defaultVariant'] = want['default_variant']
    return new


def _put_back(flags, key, before):
    if before is None:
        flags.pop(key, None)
    elif key in flags:
        flag = dict(flags[key])
        for field in ('state', 'defaultVariant'):
            if before.get(field) is None:
                flag.pop(field, None)
            else:
                flag[field] = before[field]
        flags[key] = flag


# --- Unleash ------------------------------------------------------------------------------------------------------

class UnleashAPI(object):
    """The few calls of the Unleash admin API the layer needs."""

    def __init__(self, options):
        self.url = (options.get('url') or '').rstrip('/')
        if not self.url:
            raise LayerError('the unleash backend needs url: the Unleash server, for example http://unleash:4242')
        self.project = options.get('project') or 'default'
        self.environment = options.get('environment')
        if not self.environment:
            raise LayerError('the unleash backend needs environment: the Unleash environment to switch the flags in')
        self.token = options.get('token')
        self.timeout = float(options.get('timeout') or 10)

    def _call(self, method, path, body=None, missing_ok=False):
        # imported here: only an Unleash store talks HTTP, and ansible.module_utils.urls is a tenth of a second
        # of every transaction call that imports the flags kind
        from ansible.module_utils.urls import open_url  # pylint: disable=import-outside-toplevel
        url = self.url + path
        headers = {'Accept': 'application/json'}
        data = None
        if body is not None:
            data = json.dumps(body).encode('utf-8')
            headers['Content-Type'] = 'application/json'
        if self.token:
            headers['Authorization'] = self.token
        try:
            resp = open_url(url, data=data, headers=headers, method=method, timeout=self.timeout)
            raw = resp.read()
        except HTTPError as e:
            if missing_ok and e.code == 404:
                return None
            detail = e.read().decode('utf-8', 'replace')[:300]
            hint = ' (check the API token)' if e.code in (401, 403) else ''
            raise LayerError('Unleash %s %s answered %s%s: %s' % (method, path, e.code, hint, detail))
        except (URLError, IOError, OSError) as e:
            raise LayerError('cannot reach the Unleash server at %s: %s' % (self.url, getattr(e, 'reason', e)))
        return json.loads(raw.decode('utf-8')) if raw.strip() else {}

    def _feature_path(self, key):
        return '/api/admin/projects/%s/features/%s' % (quote(self.project, safe=''), quote(key, safe=''))

    def enabled(self, key):
        """True or False in the environment, None when the feature does not exist."""
        feature = self._call('GET', self._feature_path(key), missing_ok=True)
        if feature is None:
            return None
        for env in feature.get('environments') or []:
            if env.get('name') == self.environment:
                return bool(env.get('enabled'))
        raise LayerError('Unleash feature %r has no environment %r in project %r'
                         % (key, self.environment, self.project))

    def create(self, key):
        self._call('POST', '/api/admin/projects/%s/features' % quote(self.project, safe=''), {'name': key})

    def switch(self, key, on):
        where = (self._feature_path(key), quote(self.environment, safe=''), 'on' if on else 'off')
        self._call('POST', '%s/environments/%s/%s' % where)

    def archive(self, key):
        self._call('DELETE', self._feature_path(key), missing_ok=True)


# --- the layer ----------------------------------------------------------------------------------------------------

@register
class FlagsLayer(Layer):
    """Feature flags of one flag store (a flagd file, or one Unleash project and environment), several keys."""

    kind = 'flags'
    stage = 'flags'
    secret_options = ('token',)

    def __init__(self, options, run=None):
        self.o = dict(options or {})
        self.backend = self.o.get('backend') or 'flagd_file'
        if self.backend not in BACKENDS:
            raise LayerError('flags backend %r is unknown: the backends are %s' % (self.backend, ', '.join(BACKENDS)))

    # -- helpers
    def _store(self):
        return FlagdFile(self.o.get('path')) if self.backend == 'flagd_file' else UnleashAPI(self.o)

    def _target_doc(self, options, doc):
        """The flag file after applying ``options`` (a new dict; raises before anything changes)."""
        want = _settings(options)
        new = dict(doc)
        flags = dict(doc['flags'])
        for key, settings in want.items():
            flags[key] = _flagd_target(key, flags.get(key), settings, bool(options.get('create')))
        new['flags'] = flags
        return new

    def _unleash_want(self, options, api):
        want = _settings(options)
        out = {}
        for key, settings in want.items():
            if set(settings) - set(['enabled']):
                raise LayerError('flag %r: the unleash backend sets enabled (true or false) only' % key)
            if 'enabled' not in settings:
                raise LayerError('flag %r: the unleash backend needs enabled: true or false' % key)
            now = api.enabled(key)
            if now is None and not options.get('create'):
                raise LayerError('Unleash has no feature %r in project %r: nothing was changed (set create: true to '
                                 'create it)' % (key, api.project))
            out[key] = (now, settings['enabled'])
        return out

    def describe(self, options):
        keys = ', '.join(sorted(_settings(options)))
        where = options.get('path') if self.backend == 'flagd_file' else 'Unleash %s' % flag_layer_id(options)
        return 'set flag(s) %s in %s' % (keys, where)

    # -- the interface
    def plan(self, options):
        if self.backend == 'unleash':
            api = self._store()
            want = self._unleash_want(options, api)
            changes = dict((k, {'before': now, 'after': on}) for k, (now, on) in want.items() if now != on)
            return {'changed': bool(changes), 'flags': changes,
                    'msg': 'check mode: would %s' % self.describe(options) if changes else
                    'check mode: the flags are already as asked', 'diff': {
                        'before': json.dumps(dict((k, v['before']) for k, v in changes.items()), indent=2) + '\n',
                        'after': json.dumps(dict((k, v['after']) for k, v in changes.items()), indent=2) + '\n',
                        'before_header': flag_layer_id(options), 'after_header': flag_layer_id(options)}}
        store = self._store()
        doc = store.read(missing_ok=bool(options.get('create')))
        if doc is None:
            doc = {'flags': {}}
        new = self._target_doc(options, doc)
        changed = new != doc
        return {'changed': changed,
                'msg': ('check mode: would %s' % self.describe(options)) if changed else
                'check mode: the flags are already as asked',
                'diff': {'before': json.dumps(doc, indent=2) + '\n', 'after': json.dumps(new, indent=2) + '\n',
                         'before_header': store.path, 'after_header': store.path}}

    def capture(self, params, only=None):
        """The previous value of every key the layer sets (or that it does not exist), validated first: a bad key
        or setting raises here, before the layer is recorded or anything changes. ``only``: these keys."""
        if self.backend == 'unleash':
            want = self._unleash_want(params, self._store())
            return {'backend': 'unleash', 'flags': dict((k, {'enabled': now}) if now is not None else (k, None)
                                                        for k, (now, on) in want.items()
                                                        if only is None or k in only)}
        store = self._store()
        doc = store.read(missing_ok=bool(params.get('create')))
        existed = doc is not None
        doc = doc if existed else {'flags': {}}
        self._target_doc(params, doc)
        return {'backend': 'flagd_file', 'path': store.path, 'file_existed': existed,
                'flags': dict((k, _flagd_state(doc['flags'].get(k))) for k in _settings(params)
                              if only is None or k in only)}

    def recapture(self, options, record):
        """A later apply of the same layer (the kill switch) that sets keys the first capture did not see: record
        their previous value too, so that the rollback puts every key back as it was before the deploy."""
        new_keys = [k for k in _settings(options) if k not in (record.get('flags') or {})]
        if not new_keys:
            self.capture(options)           # validate all the same
            return record
        more = self.capture(options, only=new_keys)
        out = dict(record)
        out['flags'] = dict(record.get('flags') or {})
        out['flags'].update(more['flags'])
        return out

    def apply(self, params, record):
        if self.backend == 'unleash':
            api = self._store()
            want = self._unleash_want(params, api)
            changed = {}
            for key, (now, on) in want.items():
                if now is None:
                    api.create(key)
                if now != on:
                    api.switch(key, on)
                    changed[key] = {'before': now, 'after': on}
            return {'changed': bool(changed), 'flags': changed}
        store = self._store()
        doc = store.read(missing_ok=bool(params.get('create')))
        doc = doc if doc is not None else {'flags': {}}
        new = self._target_doc(params, doc)
        if new == doc:
            return {'changed': False, 'flags': {}}
        store.write(new)
        changed = dict((k, {'before': _flagd_state(doc['flags'].get(k)), 'after': _flagd_state(new['flags'][k])})
                       for k in _settings(params) if doc['flags'].get(k) != new['flags'][k])
        return {'changed': True, 'flags': changed}

    def undo(self, record):
        flags = record.get('flags') or {}
        if record.get('backend') == 'unleash':
            api = self._store()
            for key, before in flags.items():
                now = api.enabled(key)
                if before is None:
                    if now is not None:
                        api.archive(key)
                elif now != before['enabled']:
                    api.switch(key, before['enabled'])
            return {'changed': True, 'report': {'flags': flags}}
        store = FlagdFile(record.get('path') or self.o.get('path'))
        doc = store.read(missing_ok=True)
        if doc is None:
            if not record.get('file_existed', True):
                return {'changed': False, 'report': {'flags': flags}}
            raise LayerError('the flag file %s is gone: its flags cannot be put back' % store.path)
        new = dict(doc)
        new['flags'] = dict(doc['flags'])
        for key, before in flags.items():
            _put_back(new['flags'], key, before)
        if not record.get('file_existed', True) and not new['flags']:
            os.unlink(store.path)
            return {'changed': True, 'report': {'flags': flags}}
        if new != doc:
            store.write(new)
        return {'changed': new != doc, 'report': {'flags': flags}}

    def verify(self, record):
        flags = record.get('flags') or {}
        problems = []
        if record.get('backend') == 'unleash':
            api = self._store()
            for key, before in flags.items():
                now = api.enabled(key)
                want = None if before is None else before['enabled']
                if now != want:
                    problems.append('Unleash feature %s is %s, not %s' % (key, _word(now), _word(want)))
            return problems
        store = FlagdFile(record.get('path') or self.o.get('path'))
        doc = store.read(missing_ok=True)
        if doc is None:
            return [] if not record.get('file_existed', True) else ['the flag file %s is gone' % store.path]
        for key, before in flags.items():
            now = _flagd_state(doc['flags'].get(key))
            if now != before:
                problems.append('flag %s in %s is %s, not %s' % (key, store.path, json.dumps(now), json.dumps(before)))
        return problems


def _word(value):
    return {None: 'absent', True: 'on', False: 'off'}[value]
