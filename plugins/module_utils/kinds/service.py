# -*- coding: utf-8 -*-
# Private to this collection: not a public API.
# Copyright: Contributors to failsafe.deploy
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The ``service`` layer kind (stage ``code``, undone last in it: a restart reads what the other layers restored)."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

from ansible_collections.failsafe.deploy.plugins.module_utils._layers import Layer, LayerError, _run


def _tail(text, lines=8):
    return ' | '.join(text.strip().splitlines()[-lines:]) if text and text.strip() else ''


class ServiceLayer(Layer):
    """The process that serves the release, under supervisor or systemd (or ``none``: not managed).

    ``settings``: manager, name, supervisorctl, supervisord, conf, start (start supervisord when it is not
    running), log (the program's log file, named in messages). ``run`` is a callable(argv) -> (rc, out, err).
    """

    kind = 'service'
    stage = 'code'
    restarts = True
    NOT_SERVING = ('RUNNING', 'STARTING', 'BACKOFF')

    def __init__(self, settings, run=None):
        self.s = dict(settings or {})
        self.s.setdefault('manager', 'supervisor')
        self.run = run or _run

    # -- supervisor
    def _ctl(self, *args):
        return self.run([self.s.get('supervisorctl') or 'supervisorctl', '-c', self.s['conf']] + list(args))

    def _status_words(self):
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
        changed, dummy = self._update()
        if not restart and 'RUNNING' in self._status_words():
            return {'changed': changed}
        rc, out, err = self._ctl('restart', self.s['name'])
        if rc != 0 or ('%s: started' % self.s['name']) not in out:
            dummy, log, dummy2 = self._ctl('tail', '-1500', self.s['name'])
            where = ('Its log is %s.' % self.s['log']) if self.s.get('log') else "See the program's log in supervisor."
            tail = _tail(log)
            raise LayerError('%s did not start under supervisor (%s). %s%s'
                             % (self.s['name'], (out + ' ' + err).strip(), where,
                                (' It ends with: ' + tail) if tail else ''), log=self.s.get('log'))
        return {'changed': True}

    def undo(self, record, serving=True):
        """Restart on the restored release; with ``serving`` false (nothing to go back to) stop and unload it."""
        if serving:
            return self.apply({}, record, restart=True)
        manager = self.s['manager']
        if manager == 'supervisor':
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
