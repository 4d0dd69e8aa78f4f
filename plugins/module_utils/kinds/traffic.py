# -*- coding: utf-8 -*-
# Private to this collection: not a public API.
# Copyright: Contributors to failsafe.deploy
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The ``traffic`` layer kind: which servers of a load balancer take traffic, and how much.

Two load balancers, as ops teams run them on servers:

- ``haproxy``: through the runtime API on the admin socket (``set server <backend>/<server> weight N`` and
  ``state ready|drain|maint``), applied at once, no reload. Capture reads the named servers' weights and states
  (``show servers state``), undo sets them back, verify reads them back. After every change the layer writes
  ``show servers state`` to ``state_file`` (HAProxy's ``server-state-file``, loaded with
  ``load-server-state-from-file``): a drained or restored server keeps its state across an HAProxy reload.
- ``nginx``: the upstream's servers, weights and ``backup``/``down`` flags rendered into an include file, checked
  with ``nginx -t`` and applied by a graceful reload. A failed check puts the previous file back before anything
  reloads, so the running configuration is untouched. Capture keeps the previous file content; undo puts it back,
  checks and reloads.

Every change is validated before anything changes: a server name the backend does not have, weights out of range
or that do not add up (no server would take traffic, or not the ``total`` asked for), an admin socket that refuses,
a configuration that fails ``haproxy -c`` or ``nginx -t``: a clear error, nothing changed.
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import os
import socket
import tempfile
import time

from ansible_collections.failsafe.deploy.plugins.module_utils._atomic import atomic_write_bytes
from ansible_collections.failsafe.deploy.plugins.module_utils._layers import Layer, LayerError, register

STATES = ('ready', 'drain', 'maint')
DRIVERS = ('haproxy', 'nginx')
HAPROXY_MAX_WEIGHT = 256
# srv_admin_state bits of `show servers state` (HAProxy's SRV_ADMF_*): forced, inherited, configured, resolver
# and hostname maintenance; forced and inherited drain
ADMIN_MAINT = 0x01 | 0x02 | 0x04 | 0x20 | 0x40
ADMIN_DRAIN = 0x08 | 0x10


def _tail(text, lines=6):
    return ' | '.join((text or '').strip().splitlines()[-lines:])


def _servers(options):
    """The ``servers`` option as a list of dicts with name, weight (int or None), state and address."""
    raw = options.get('servers')
    if not isinstance(raw, list) or not raw:
        raise LayerError('traffic layer: servers must be a non-empty list of {name, weight, state}, got %r' % (raw,))
    out = []
    seen = set()
    for item in raw:
        if not isinstance(item, dict) or not item.get('name'):
            raise LayerError('traffic layer: every entry of servers needs a name, got %r' % (item,))
        name = str(item['name'])
        if name in seen:
            raise LayerError('traffic layer: server %s is named twice in servers' % name)
        seen.add(name)
        state = item.get('state', 'ready')
        if state not in STATES:
            raise LayerError('traffic layer: server %s: state must be one of %s, got %r'
                             % (name, ', '.join(STATES), state))
        weight = item.get('weight')
        if weight is not None:
            try:
                weight = int(weight)
            except (TypeError, ValueError):
                raise LayerError('traffic layer: server %s: weight must be an integer, got %r' % (name, weight))
        out.append({'name': name, 'weight': weight, 'state': state, 'address': item.get('address')})
    return out


def _check_sum(ready_weights, total, where):
    """Weights of the servers left ready: traffic must go somewhere, and add up to ``total`` when one is asked."""
    names = sorted(ready_weights)
    got = sum(ready_weights.values())
    if got <= 0:
        raise LayerError('traffic layer: the weights of the ready servers of %s add up to %d (%s): no server would '
                         'take traffic; nothing was changed'
                         % (where, got, ', '.join('%s=%d' % (n, ready_weights[n]) for n in names) or 'none ready'))
    if total is not None and got != int(total):
        raise LayerError('traffic layer: the weights of the ready servers of %s add up to %d (%s), not the total %s '
                         'asked for; nothing was changed'
                         % (where, got, ', '.join('%s=%d' % (n, ready_weights[n]) for n in names), total))


# --- HAProxy ------------------------------------------------------------------------------------------------------

class HAProxy(object):
    """The runtime API on HAProxy's admin socket (``stats socket PATH level admin``)."""

    def __init__(self, path, timeout=5.0):
        self.path = path
        self.timeout = float(timeout)

    def command(self, line):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            try:
                sock.connect(self.path)
            except (OSError, IOError) as e:
                raise LayerError('the HAProxy admin socket %s refused the connection (%s): is HAProxy running with '
                                 '"stats socket %s level admin"? Nothing was changed.'
                                 % (self.path, e.strerror or e, self.path), socket=self.path)
            sock.sendall(line.encode('utf-8') + b'\n')
            chunks = []
            while True:
                try:
                    data = sock.recv(65536)
                except socket.timeout:
                    raise LayerError('the HAProxy admin socket %s did not answer %r within %s s'
                                     % (self.path, line, self.timeout), socket=self.path)
                if not data:
                    break
                chunks.append(data)
        finally:
            sock.close()
        answer = b''.join(chunks).decode('utf-8', 'replace')
        if 'Permission denied' in answer:
            raise LayerError('the HAProxy socket %s is not at level admin (it answered %r to %r): add "level admin" '
                             'to its stats socket line' % (self.path, answer.strip(), line), socket=self.path)
        return answer

    def servers_state(self, backend):
        """{server name: {weight, state, op_state}} of a backend, from ``show servers state``."""
        answer = self.command('show servers state %s' % backend)
        lines = [ln for ln in answer.splitlines() if ln.strip()]
        header = None
        found = {}
        for line in lines:
            if line.startswith('#'):
                header = line.lstrip('# ').split()
                continue
            fields = line.split()
            if header is None or len(fields) < len(header) or not fields[0].isdigit():
                if 'backend' in line.lower() and ('no such' in line.lower() or "can't find" in line.lower()):
                    raise LayerError("HAProxy has no backend '%s' (its admin socket answered: %s); nothing was "
                                     'changed' % (backend, line.strip()), backend=backend)
                continue
            row = dict(zip(header, fields))
            if row.get('be_name') != backend:
                continue
            admin = int(row.get('srv_admin_state', '0'))
            if admin & ADMIN_MAINT:
                state = 'maint'
            elif admin & ADMIN_DRAIN:
                state = 'drain'
            else:
                state = 'ready'
            found[row['srv_name']] = {'weight': int(row.get('srv_uweight', '0')), 'state': state,
                                      'op_state': int(row.get('srv_op_state', '0'))}
        if not found:
            raise LayerError("HAProxy has no backend '%s' with servers (its admin socket answered: %s); nothing was "
                             'changed' % (backend, _tail(answer, 2) or 'nothing'), backend=backend)
        return found

    def set_server(self, backend, name, weight=None, state=None):
        for line in (['set server %s/%s weight %d' % (backend, name, weight)] if weight is not None else []) + \
                (['set server %s/%s state %s' % (backend, name, state)] if state is not None else []):
            answer = self.command(line).strip()
            if answer:
                raise LayerError('HAProxy refused %r: %s' % (line, answer), backend=backend, server=name)

    def save_state(self, state_file):
        """``show servers state`` of every backend into HAProxy's server-state-file, written atomically."""
        answer = self.command('show servers state')
        if not answer.lstrip().startswith('1'):
            raise LayerError('HAProxy answered %r to "show servers state": not a server state file; %s not written'
                             % (_tail(answer, 2), state_file))
        atomic_write_bytes(state_file, answer.encode('utf-8'), mode=0o644)


# --- nginx --------------------------------------------------------------------------------------------------------

def render_upstream(upstream, servers, extra=None):
    """The include file of an nginx upstream: ready servers with their weight, drained ones as ``backup`` (they
    take traffic only when every ready server is down), servers in maintenance as ``down``."""
    lines = ['# Managed by failsafe.deploy (the traffic layer): changes here are overwritten.',
             'upstream %s {' % upstream]
    for line in extra or []:
        lines.append('    %s;' % str(line).rstrip(';'))
    for s in servers:
        if s['state'] == 'ready':
            flags = ' weight=%d' % (s['weight'] if s['weight'] is not None else 1)
        elif s['state'] == 'drain':
            flags = ' backup'
        else:
            flags = ' down'
        lines.append('    server %s%s;  # %s %s' % (s['address'], flags, s['name'], s['state']))
    lines.append('}')
    return '\n'.join(lines) + '\n'


def _read(path):
    try:
        with open(path, 'rb') as handle:
            return handle.read().decode('utf-8')
    except (IOError, OSError):
        return None


def _children(pid):
    """Process ids whose parent is ``pid`` (nginx's workers), from /proc."""
    out = set()
    for entry in os.listdir('/proc'):
        if not entry.isdigit():
            continue
        try:
            with open('/proc/%s/stat' % entry) as handle:
                stat = handle.read()
        except (IOError, OSError):
            continue
        fields = stat[stat.rfind(')') + 2:].split()
        if len(fields) > 1 and fields[1] == str(pid):
            out.add(int(entry))
    return out


# --- the layer ----------------------------------------------------------------------------------------------------

@register
class TrafficLayer(Layer):
    """Load balancer traffic (stage ``traffic``: a rollback puts traffic back before it touches code).

    Options: ``driver`` (haproxy or nginx), ``servers`` (a list of {name, weight, state, address}), ``total`` (the
    weights of the ready servers must add up to it). HAProxy: ``socket``, ``backend``, ``state_file``, ``config``
    (checked with ``haproxy -c`` first), ``haproxy`` (the executable), ``timeout``, ``up_timeout`` (seconds a server
    made ready may take to pass HAProxy's health check before the others leave). nginx: ``path`` (the include
    file), ``upstream``, ``upstream_lines`` (extra lines inside the upstream block), ``nginx`` (the executable),
    ``conf`` and ``prefix`` (nginx's -c and -p), ``pid_file``, ``reload_timeout``.
    """

    kind = 'traffic'
    stage = 'traffic'

    def __init__(self, options, run):
        self.o = dict(options or {})
        self.run = run
        self.driver = self.o.get('driver')
        if self.driver not in DRIVERS:
            raise LayerError('traffic layer: driver must be one of %s, got %r' % (', '.join(DRIVERS), self.driver))
        for key in (('socket', 'backend') if self.driver == 'haproxy' else ('path', 'upstream', 'conf')):
            if not self.o.get(key):
                raise LayerError('traffic layer (%s): option %s is required' % (self.driver, key))

    # -- shared
    def describe(self, options):
        servers = _servers(options)
        where = ('HAProxy backend %s' % options.get('backend')) if self.driver == 'haproxy' \
            else ('nginx upstream %s' % options.get('upstream'))
        return 'set %s: %s' % (where, ', '.join(
            '%s %s%s' % (s['name'], s['state'], ('' if s['weight'] is None else ' weight %d' % s['weight']))
            for s in servers))

    def plan(self, options):
        if self.driver == 'haproxy':
            current, target = self._haproxy_plan(options)
            changes = ['%s: %s weight %d -> %s weight %d'
                       % (n, current[n]['state'], current[n]['weight'], target[n]['state'], target[n]['weight'])
                       for n in sorted(target) if target[n] != dict((k, current[n][k]) for k in ('weight', 'state'))]
            return {'changed': bool(changes), 'msg': 'check mode: would %s' % (
                '; '.join(changes) if changes else 'change nothing (already so)')}
        before, after = self._nginx_plan(options)
        self._nginx_check(after, keep=before)
        return {'changed': before != after, 'diff': {'before': before or '', 'after': after,
                                                     'before_header': self.o['path'], 'after_header': self.o['path']},
                'msg': 'check mode: would %s' % (self.describe(options) if before != after else 'change nothing')}

    def capture(self, params):
        if self.driver == 'haproxy':
            current, target = self._haproxy_plan(params)
            return {'driver': 'haproxy', 'backend': self.o['backend'],
                    'servers': dict((n, dict((k, current[n][k]) for k in ('weight', 'state'))) for n in target)}
        before, after = self._nginx_plan(params)
        self._nginx_check(after, keep=before)
        return {'driver': 'nginx', 'path': self.o['path'], 'content': before}

    def apply(self, params, record):
        if self.driver == 'haproxy':
            current, target = self._haproxy_plan(params)
            changed = self._haproxy_set(current, target)
            return {'changed': changed, 'servers': self._haproxy_read(sorted(target))}
        before, after = self._nginx_plan(params)
        if before == after:
            return {'changed': False, 'path': self.o['path']}
        reload = self._nginx_write(after, keep=before)
        return {'changed': True, 'path': self.o['path'], 'reload': reload,
                'diff': {'before': before or '', 'after': after}}

    def undo(self, record):
        if self.driver == 'haproxy':
            target = record['servers']
            current = self._haproxy_current(sorted(target))
            changed = self._haproxy_set(current, target, strict=False)
            report = {'traffic': self.describe_record(record)}
            if self.not_up:
                report['not_up'] = self.not_up
            return {'changed': changed, 'report': report}
        content = record.get('content')
        current = _read(self.o['path'])
        if current == content:
            return {'changed': False, 'report': {'traffic': self.describe_record(record)}}
        if content is None:
            self._nginx_remove(keep=current)
        else:
            self._nginx_write(content, keep=current)
        return {'changed': True, 'report': {'traffic': self.describe_record(record)}}

    def verify(self, record):
        if self.driver == 'haproxy':
            now = self._haproxy_read(sorted(record['servers']))
            return ['HAProxy %s/%s is %s weight %d, not %s weight %d as captured'
                    % (self.o['backend'], n, now[n]['state'], now[n]['weight'], want['state'], want['weight'])
                    for n, want in sorted(record['servers'].items())
                    if (now[n]['state'], now[n]['weight']) != (want['state'], want['weight'])]
        content = _read(self.o['path'])
        if content != record.get('content'):
            return ['%s does not hold the captured upstream' % self.o['path']]
        return []

    def describe_record(self, record):
        if record.get('driver') == 'haproxy':
            return ', '.join('%s %s weight %d' % (n, s['state'], s['weight'])
                             for n, s in sorted(record['servers'].items()))
        return '%s restored (%s)' % (record.get('path'), 'absent' if record.get('content') is None else 'content')

    # -- HAProxy
    def _api(self):
        return HAProxy(self.o['socket'], self.o.get('timeout') or 5)

    def _haproxy_current(self, names):
        state = self._api().servers_state(self.o['backend'])
        missing = [n for n in names if n not in state]
        if missing:
            raise LayerError("HAProxy backend '%s' has no server %s (its servers: %s); nothing was changed"
                             % (self.o['backend'], ', '.join(missing), ', '.join(sorted(state))),
                             backend=self.o['backend'], missing=missing)
        return state

    def _haproxy_read(self, names):
        state = self._haproxy_current(names)
        return dict((n, {'weight': state[n]['weight'], 'state': state[n]['state']}) for n in names)

    def _haproxy_plan(self, options):
        """Validate everything before any change: the config (haproxy -c), the socket, the names, the weights."""
        servers = _servers(options)
        for s in servers:
            if s['weight'] is not None and not 0 <= s['weight'] <= HAPROXY_MAX_WEIGHT:
                raise LayerError('traffic layer: server %s: an HAProxy weight is 0 to %d, got %d; nothing was changed'
                                 % (s['name'], HAPROXY_MAX_WEIGHT, s['weight']))
        if self.o.get('config'):
            rc, out, err = self.run([self.o.get('haproxy') or 'haproxy', '-c', '-f', self.o['config']])
            if rc != 0:
                raise LayerError('the HAProxy configuration %s fails "haproxy -c" (rc %s): %s. A reload would fail '
                                 'with it; nothing was changed.' % (self.o['config'], rc, _tail(err + '\n' + out)),
                                 config=self.o['config'], rc=rc)
        current = self._haproxy_current([s['name'] for s in servers])
        target = {}
        for s in servers:
            now = current[s['name']]
            target[s['name']] = {'weight': now['weight'] if s['weight'] is None else s['weight'], 'state': s['state']}
        after = dict((n, dict(weight=v['weight'], state=v['state'])) for n, v in current.items())
        after.update(target)
        _check_sum(dict((n, v['weight']) for n, v in after.items() if v['state'] == 'ready'), None,
                   "HAProxy backend '%s'" % self.o['backend'])
        if self.o.get('total') is not None:
            _check_sum(dict((n, v['weight']) for n, v in target.items() if v['state'] == 'ready'), self.o['total'],
                       'servers')
        return current, target

    def _haproxy_set(self, current, target, strict=True):
        """Servers that take traffic first, then those that leave: at no moment does no server take traffic. With
        ``strict`` false (an undo, which puts back what was), a server that HAProxy's health check does not see up
        in time is put back all the same and named in the result instead of stopping the undo."""
        api = self._api()
        self.not_up = []
        changed = False
        rising = []
        order = sorted(target, key=lambda n: (target[n]['state'] != 'ready', n))
        for name in order:
            want, now = target[name], current[name]
            weight = want['weight'] if want['weight'] != now['weight'] else None
            state = want['state'] if want['state'] != now['state'] else None
            if weight is None and state is None:
                continue
            if want['state'] == 'ready':
                api.set_server(self.o['backend'], name, weight=weight)
                api.set_server(self.o['backend'], name, state=state)
                rising.append(name)
            else:
                if rising:
                    self._haproxy_wait_up(rising, strict)
                    rising = []
                api.set_server(self.o['backend'], name, state=state)
                api.set_server(self.o['backend'], name, weight=weight)
            changed = True
        if rising:
            self._haproxy_wait_up(rising, strict)
        if self.o.get('state_file'):
            # kept across an HAProxy reload: load-server-state-from-file reads this file at start
            api.save_state(self.o['state_file'])
        return changed

    def _haproxy_wait_up(self, names, strict=True):
        """Wait until HAProxy's own health checks see the servers just made ready as up (srv_op_state 2), before
        any other server leaves: a server coming out of maintenance or not yet checked counts as down until then."""
        timeout = float(self.o.get('up_timeout') if self.o.get('up_timeout') is not None else 10)
        deadline = time.time() + timeout
        while True:
            state = self._api().servers_state(self.o['backend'])
            down = [n for n in names if state[n]['op_state'] != 2]
            if not down:
                return
            if time.time() >= deadline:
                if not strict:
                    self.not_up.extend(down)
                    return
                raise LayerError('HAProxy %s/%s is not up after %s s (its health check fails): traffic was not taken '
                                 'from the other servers' % (self.o['backend'], ', '.join(down), timeout),
                                 backend=self.o['backend'], down=down)
            time.sleep(0.05)

    # -- nginx
    def _nginx_plan(self, options):
        servers = _servers(options)
        for s in servers:
            if not s['address']:
                raise LayerError('traffic layer (nginx): server %s needs an address (host:port) in the upstream %s'
                                 % (s['name'], self.o['upstream']))
            if s['state'] == 'ready' and s['weight'] is not None and s['weight'] < 1:
                raise LayerError('traffic layer (nginx): server %s: a ready server weighs at least 1, got %d; use '
                                 'state drain (backup) or maint (down) to take it out; nothing was changed'
                                 % (s['name'], s['weight']))
        _check_sum(dict((s['name'], 1 if s['weight'] is None else s['weight'])
                        for s in servers if s['state'] == 'ready'),
                   self.o.get('total'), 'nginx upstream %s' % self.o['upstream'])
        return _read(self.o['path']), render_upstream(self.o['upstream'], servers, self.o.get('upstream_lines'))

    def _nginx_cmd(self, *args):
        argv = [self.o.get('nginx') or 'nginx']
        if self.o.get('prefix'):
            argv += ['-p', self.o['prefix']]
        return argv + ['-c', self.o['conf']] + list(args)

    def _nginx_test(self, conf=None):
        argv = self._nginx_cmd('-t', '-q')
        if conf:
            argv[argv.index('-c') + 1] = conf
        rc, out, err = self.run(argv)
        return rc, _tail(err + '\n' + out)

    def _nginx_check(self, content, keep):
        """``nginx -t`` of the configuration as it would be with ``content``, without touching the live files: a
        copy of the main configuration that includes a copy of the new upstream, both beside the originals (so
        relative paths resolve the same). Where the main configuration does not name the include file itself (a
        glob), the current configuration is checked and the new file is checked by apply, which puts the previous
        file back if the check fails."""
        rc, why = self._nginx_test()
        if rc != 0:
            raise LayerError('the nginx configuration %s fails "nginx -t" before any change (rc %s): %s; nothing was '
                             'changed' % (self.o['conf'], rc, why), conf=self.o['conf'], rc=rc)
        if content == keep:
            return
        main = _read(self.o['conf'])
        if main is None or self.o['path'] not in main:
            return
        made = []
        try:
            upstream = self._scratch(self.o['path'], content)
            made.append(upstream)
            conf = self._scratch(self.o['conf'], main.replace(self.o['path'], upstream))
            made.append(conf)
            rc, why = self._nginx_test(conf)
        finally:
            for path in made:
                try:
                    os.unlink(path)
                except OSError:
                    pass
        if rc != 0:
            raise LayerError('the new upstream for %s fails "nginx -t" (rc %s): %s. Nothing was changed.'
                             % (self.o['path'], rc, why.replace(upstream, self.o['path'])), path=self.o['path'], rc=rc)

    @staticmethod
    def _scratch(beside, content):
        directory, base = os.path.split(beside)
        fd, path = tempfile.mkstemp(prefix='.%s.failsafe-check-' % base, dir=directory or '.')
        with os.fdopen(fd, 'wb') as handle:
            handle.write(content.encode('utf-8'))
        return path

    def _put(self, content):
        atomic_write_bytes(self.o['path'], content.encode('utf-8'), mode=0o644)

    def _restore(self, keep):
        if keep is None:
            try:
                os.unlink(self.o['path'])
            except OSError:
                pass
        else:
            self._put(keep)

    def _nginx_write(self, content, keep):
        self._put(content)
        rc, why = self._nginx_test()
        if rc != 0:
            self._restore(keep)
            raise LayerError('the new upstream %s fails "nginx -t" (rc %s): %s. The previous file is back and nginx '
                             'was not reloaded: nothing was changed.' % (self.o['path'], rc, why),
                             path=self.o['path'], rc=rc)
        return self._nginx_reload()

    def _nginx_remove(self, keep):
        self._restore(None)
        rc, why = self._nginx_test()
        if rc != 0:
            self._restore(keep)
            raise LayerError('nginx -t fails without %s (rc %s): %s; it was put back' % (self.o['path'], rc, why))
        return self._nginx_reload()

    def _master_pid(self):
        text = _read(self.o.get('pid_file') or '') if self.o.get('pid_file') else None
        return int(text.strip()) if text and text.strip().isdigit() else None

    def _nginx_reload(self):
        """A graceful reload; returns once the new workers run and the old ones have finished their clients (or
        after ``reload_timeout`` seconds, reported)."""
        master = self._master_pid()
        old = _children(master) if master else set()
        started = time.time()
        rc, out, err = self.run(self._nginx_cmd('-s', 'reload'))
        if rc != 0:
            raise LayerError('nginx -s reload failed (rc %s): %s' % (rc, _tail(err + '\n' + out)), rc=rc)
        if not master:
            return {'waited': False}
        deadline = started + float(self.o.get('reload_timeout') or 10)
        while time.time() < deadline:
            now = _children(master)
            if now and not (now & old):
                return {'waited': True, 'seconds': round(time.time() - started, 3)}
            time.sleep(0.02)
        return {'waited': True, 'seconds': round(time.time() - started, 3), 'old_workers_left': sorted(now & old)}
