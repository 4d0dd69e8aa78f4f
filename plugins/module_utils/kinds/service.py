# -*- coding: utf-8 -*-
# Private to this collection: not a public API.
# Copyright: Contributors to failsafe.deploy
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The ``service`` layer kind (stage ``code``, undone last in it: a restart reads what the other layers restored)."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import os
import time

from ansible_collections.failsafe.deploy.plugins.module_utils._layers import Layer, LayerError, _run


def _tail(text, lines=8):
    return ' | '.join(text.strip().splitlines()[-lines:]) if text and text.strip() else ''


# supervisor's XML-RPC fault codes (supervisor.xmlrpc.Faults) and the words supervisorctl prints for them
_FAULT_WORDS = {10: 'no such process', 30: 'bad arguments', 40: 'abnormal termination', 50: 'spawn error',
                60: 'already started', 70: 'not running', 90: 'already added', 91: 'still running'}
_BAD_NAME, _ALREADY_STARTED, _NOT_RUNNING, _ALREADY_ADDED = 10, 60, 70, 90
# how long the wait for a program started by supervisor's autostart may take before it is called failed
_SETTLE_SECONDS = 300


def _socket_path(conf):
    """The UNIX socket supervisorctl talks to (``[supervisorctl] serverurl = unix://...`` of ``conf``), or None
    when supervisorctl would use anything else (an HTTP URL, a user name and password, a value with expansions this
    does not know): then the layer runs supervisorctl itself."""
    if not conf or not os.path.isfile(conf):
        return None
    import configparser  # imported here: a module run that manages no supervisor program does not pay for it
    parser = configparser.RawConfigParser(inline_comment_prefixes=(';', '#'), strict=False)
    try:
        if not parser.read(conf):
            return None
    except (configparser.Error, OSError, UnicodeError):
        return None
    if not parser.has_section('supervisorctl') or parser.has_option('supervisorctl', 'username'):
        return None
    url = (parser.get('supervisorctl', 'serverurl', fallback='') or '').strip()
    url = url.replace('%(here)s', os.path.dirname(os.path.abspath(conf)))
    if not url.startswith('unix://') or '%(' in url:
        return None
    return url[len('unix://'):]


class _Rpc(object):
    """supervisord's XML-RPC interface over a UNIX socket (``supervisor``: its methods; ``Fault`` and ``errors``:
    what a call raises); the standard library's HTTP and XML-RPC clients are imported when the first one is made
    (they cost a module run about 25 ms)."""

    def __init__(self, path):
        import http.client
        import socket
        import xmlrpc.client
        self.errors = (OSError, http.client.HTTPException, xmlrpc.client.ProtocolError)
        self.Fault = xmlrpc.client.Fault

        class UnixConnection(http.client.HTTPConnection):
            def connect(self):
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.settimeout(self.timeout)
                try:
                    sock.connect(path)
                except Exception:
                    sock.close()
                    raise
                self.sock = sock

        class UnixTransport(xmlrpc.client.Transport):
            def make_connection(self, host):
                # a start waits for the program's startsecs and a stop for its stopwaitsecs: no short timeout
                return UnixConnection('localhost', timeout=3600)

        self.supervisor = xmlrpc.client.ServerProxy('http://localhost', transport=UnixTransport()).supervisor


def _supervisor_rpc(conf):
    """supervisord's XML-RPC interface over its UNIX socket, or None when supervisorctl talks to it some other way
    or nothing answers there (supervisord not running)."""
    path = _socket_path(conf)
    if not path or not os.path.exists(path):
        return None
    rpc = _Rpc(path)
    try:
        rpc.supervisor.getPID()
    except rpc.errors + (rpc.Fault,):
        return None
    return rpc


class ServiceLayer(Layer):
    """The process that serves the release, under supervisor or systemd (or ``none``: not managed).

    ``settings``: manager, name, supervisorctl, supervisord, conf, start (start supervisord when it is not
    running), log (the program's log file, named in messages). ``run`` is a callable(argv) -> (rc, out, err).
    """

    kind = 'service'
    stage = 'code'
    restarts = True
    NOT_SERVING = ('RUNNING', 'STARTING', 'BACKOFF')

    def __init__(self, settings, run=None, rpc=True):
        self.s = dict(settings or {})
        self.s.setdefault('manager', 'supervisor')
        self.run = run or _run
        # supervisor: talk to supervisord over its socket in this process (one call is a few milliseconds, where
        # each supervisorctl is a Python interpreter of its own; and a changed program is stopped once and started
        # once, where supervisorctl's update stops it, waits a second and starts it, and the restart after does
        # it all again). Where supervisorctl would talk to it some other way, supervisorctl runs.
        self._rpc_wanted = rpc
        self._rpc = None

    # -- supervisor
    def _ctl(self, *args):
        return self.run([self.s.get('supervisorctl') or 'supervisorctl', '-c', self.s['conf']] + list(args))

    def _proxy(self):
        # asked again until supervisord answers: a first deploy starts it through supervisorctl
        if self._rpc is None and self._rpc_wanted and self.s['manager'] == 'supervisor':
            self._rpc = _supervisor_rpc(self.s.get('conf'))
        return self._rpc

    def _state(self, proxy):
        """The program's state name as supervisorctl status shows it, and its description ('' when unknown)."""
        try:
            info = proxy.supervisor.getProcessInfo(self.s['name'])
        except proxy.Fault as fault:
            if fault.faultCode == _BAD_NAME:
                return '', ''
            raise
        return info.get('statename') or '', info.get('description') or ''

    def _status_words(self):
        proxy = self._proxy()
        if proxy:
            try:
                state, description = self._state(proxy)
                return [state] + description.split() if state else []
            except proxy.errors + (proxy.Fault,):
                pass  # the socket stopped answering: ask supervisorctl, whose answer says why
        rc, out, err = self._ctl('status', self.s['name'])
        return out.split()

    def running(self):
        manager = self.s['manager']
        if manager == 'supervisor':
            return 'RUNNING' in self._status_words()
        if manager == 'systemd':
            rc, out, err = self.run(['systemctl', 'is-active', self.s['name']])
            return out.strip() == 'active'
        return True

    def _ensure_supervisord(self):
        rc, out, err = self._ctl('pid')
        if out.strip().isdigit():
            return False
        if not self.s.get('start'):
            return False
        rc, out, err = self.run([self.s.get('supervisord') or 'supervisord', '-c', self.s['conf']])
        if rc != 0:
            raise LayerError('supervisord did not start (rc %s): %s' % (rc, (out + ' ' + err).strip()))
        return True

    def _update(self):
        """``supervisorctl update``, starting supervisord first when it is not running (and ``start`` is set):
        one call where supervisord runs, as it does after the first deploy. Returns (changed, output)."""
        rc, out, err = self._ctl('update')
        if rc != 0 and self._ensure_supervisord():
            rc, out, err = self._ctl('update')
            return True, out
        return bool(out.strip()), out

    # -- supervisor over its socket
    def _rpc_call(self, method, proxy, *args):
        try:
            return method(proxy, *args)
        except proxy.errors as e:
            raise LayerError('supervisor stopped answering on its socket while it managed %s (%s): see its log'
                             % (self.s['name'], e))
        except proxy.Fault as fault:
            raise LayerError('supervisor refused a call for %s: %s' % (self.s['name'], fault.faultString))

    def _reload(self, proxy):
        """What supervisorctl's reread finds for this program: 'added', 'changed', 'removed' or None."""
        added, changed, removed = proxy.supervisor.reloadConfig()[0]
        for word, names in (('added', added), ('changed', changed), ('removed', removed)):
            if self.s['name'] in names:
                return word
        return None

    def _stop(self, proxy):
        try:
            proxy.supervisor.stopProcess(self.s['name'], True)
        except proxy.Fault as fault:
            if fault.faultCode not in (_NOT_RUNNING, _BAD_NAME):
                raise LayerError('%s did not stop under supervisor (%s: ERROR (%s))'
                                 % (self.s['name'], self.s['name'], _FAULT_WORDS.get(fault.faultCode, fault.faultString)))

    def _start(self, proxy):
        """Start the program and wait until supervisor calls it RUNNING (its startsecs passed), once. A program that
        supervisor's autostart is starting already (just added) is waited for, not started again. Returns None, or
        what went wrong in supervisorctl's words."""
        name = self.s['name']
        deadline = time.time() + _SETTLE_SECONDS
        while True:
            try:
                proxy.supervisor.startProcess(name, True)
                return None
            except proxy.Fault as fault:
                if fault.faultCode != _ALREADY_STARTED:
                    return '%s: ERROR (%s)' % (name, _FAULT_WORDS.get(fault.faultCode, fault.faultString))
            while True:
                state, dummy = self._state(proxy)
                if state == 'RUNNING':
                    return None
                if state == 'FATAL':
                    return '%s: ERROR (spawn error)' % name
                if state not in ('STARTING', 'BACKOFF'):
                    break
                if time.time() > deadline:
                    return '%s: still %s after %d s' % (name, state, _SETTLE_SECONDS)
                time.sleep(0.05)

    def _apply_rpc(self, proxy, restart):
        """supervisorctl update for this program alone, then a restart: a changed program is stopped once under its
        old settings and started once under the new; other programs of the same supervisord are left alone."""
        name = self.s['name']
        found = self._reload(proxy)
        if found in ('changed', 'removed'):
            self._stop(proxy)
            proxy.supervisor.removeProcessGroup(name)
        if found in ('changed', 'added'):
            try:
                proxy.supervisor.addProcessGroup(name)
            except proxy.Fault as fault:
                if fault.faultCode != _ALREADY_ADDED:
                    raise
        if found == 'removed':
            raise LayerError('%s did not start under supervisor (%s: ERROR (no such process)): its program file is '
                             'gone from the configuration of %s' % (name, name, self.s['conf']))
        if not found:
            state, dummy = self._state(proxy)
            if not restart and state == 'RUNNING':
                return {'changed': False}
            if restart and state:
                self._stop(proxy)
        problem = self._start(proxy)
        if problem:
            log = ''
            try:
                log = proxy.supervisor.readProcessStdoutLog(name, -1500, 0)
            except proxy.errors + (proxy.Fault,):
                pass
            raise self._not_started(problem, log)
        return {'changed': True}

    def _unload_rpc(self, proxy):
        """supervisorctl update for this program alone, whose program file the restore removed: stop and unload."""
        if self._reload(proxy) != 'removed':
            return {'changed': False, 'unloaded': True}
        self._stop(proxy)
        proxy.supervisor.removeProcessGroup(self.s['name'])
        return {'changed': True, 'unloaded': True}

    def capture(self, params):
        return {'was_running': self.running()}

    def apply(self, params, record, restart=True):
        """Start or restart the service. ``restart`` false: only start it if it is not running."""
        manager = self.s['manager']
        if manager == 'none':
            return {'changed': False}
        if manager == 'systemd':
            self.run(['systemctl', 'daemon-reload'])
            if not restart and self.running():
                return {'changed': False}
            rc, out, err = self.run(['systemctl', 'restart' if restart else 'start', self.s['name']])
            if rc != 0:
                raise LayerError('%s did not start under systemd (rc %s): %s. See journalctl -u %s.'
                                 % (self.s['name'], rc, (out + ' ' + err).strip(), self.s['name']))
            return {'changed': True}
        proxy = self._proxy()
        if proxy:
            return self._rpc_call(self._apply_rpc, proxy, restart)
        changed, dummy = self._update()
        if not restart and 'RUNNING' in self._status_words():
            return {'changed': changed}
        rc, out, err = self._ctl('restart', self.s['name'])
        if rc != 0 or ('%s: started' % self.s['name']) not in out:
            dummy, log, dummy2 = self._ctl('tail', '-1500', self.s['name'])
            raise self._not_started((out + ' ' + err).strip(), log)
        return {'changed': True}

    def _not_started(self, answer, log):
        """The failure of a program supervisor did not start: supervisor's answer, where its log is, its last lines."""
        where = ('Its log is %s.' % self.s['log']) if self.s.get('log') else "See the program's log in supervisor."
        tail = _tail(log)
        return LayerError('%s did not start under supervisor (%s). %s%s'
                          % (self.s['name'], answer, where, (' It ends with: ' + tail) if tail else ''),
                          log=self.s.get('log'))

    def undo(self, record, serving=True):
        """Restart on the restored release; with ``serving`` false (nothing to go back to) stop and unload it."""
        if serving:
            return self.apply({}, record, restart=True)
        manager = self.s['manager']
        if manager == 'supervisor':
            proxy = self._proxy()
            if proxy:
                return self._rpc_call(self._unload_rpc, proxy)
            rc, out, err = self._ctl('update')
            return {'changed': bool(out.strip()), 'unloaded': True}
        if manager == 'systemd':
            # The unit file was put back as it was before (removed, on a first deploy) by the layers undone before
            # this one: stop the unit, make systemd read its files again, and forget the unit's failed state, so
            # that a unit whose file is gone is unloaded (LoadState not-found) rather than kept as a failed unit.
            name = self.s['name']
            rc, out, err = self.run(['systemctl', 'stop', name])
            if rc != 0 and self.running():
                raise LayerError('%s did not stop under systemd (rc %s): %s' % (name, rc, (out + ' ' + err).strip()))
            self.run(['systemctl', 'daemon-reload'])
            self.run(['systemctl', 'reset-failed', name])
            return {'changed': True, 'unloaded': True}
        return {'changed': False}

    def verify(self, record, serving=True):
        manager = self.s['manager']
        if manager == 'none':
            return []
        if serving:
            return [] if self.running() else ['%s is not running after the restart' % self.s['name']]
        if manager == 'supervisor':
            words = self._status_words()
            if any(w in words for w in self.NOT_SERVING):
                return ['supervisor still runs %s (%s), which has no release to serve'
                        % (self.s['name'], ' '.join(words))]
            return []
        if self.running():
            return ['%s still runs, which has no release to serve' % self.s['name']]
        rc, out, err = self.run(['systemctl', 'show', '-p', 'LoadState,NeedDaemonReload', self.s['name']])
        if 'NeedDaemonReload=yes' in out.split():
            return ['systemd has not reloaded the unit files of %s since they were restored' % self.s['name']]
        return []
