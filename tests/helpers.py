# -*- coding: utf-8 -*-
# Copyright: Contributors to failsafe.deploy
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Network helpers the tests share: a free TCP port, a real HTTP receiver for webhook alerts, a steady load on
HTTP instances.

Unit tests (and modules both kinds of test import, such as tests/dbservers.py) import it as
``ansible_collections.failsafe.deploy.tests.helpers`` (as ansible-test units sees the collection), behaviour tests as
``tests.helpers`` (the repository root on sys.path), like tests/requires.py.
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import http.client
import http.server
import json
import socket
import threading
import time
import urllib.request


def free_port(host='127.0.0.1'):
    """A TCP port nothing listens on at the moment of the call (the kernel's pick)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class Receiver:
    """A real HTTP server on 127.0.0.1 that records every POST, in order, and answers ``statuses`` in turn (then 200).

    ``url``: where to POST (``path`` on its port). ``events``: the JSON bodies; ``received``: one record per POST,
    ``{'path', 'type' (Content-Type), 'json' (the body)}``; a body that is not JSON is recorded as
    ``{'unparsable': text}``. ``kinds()``: the ``event`` of each body.
    """

    def __init__(self, path='/hook', statuses=(), port=0):
        self.events = []
        self.received = []
        self.statuses = list(statuses)
        self.lock = threading.Lock()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server API)
                raw = self.rfile.read(int(self.headers.get('Content-Length') or 0))
                try:
                    body = json.loads(raw.decode('utf-8'))
                except ValueError:
                    body = {'unparsable': raw.decode('utf-8', 'replace')}
                with receiver.lock:
                    receiver.events.append(body)
                    receiver.received.append({'path': self.path, 'type': self.headers.get('Content-Type'),
                                              'json': body})
                    status = receiver.statuses.pop(0) if receiver.statuses else 200
                self.send_response(status)
                self.send_header('Content-Length', '2')
                self.end_headers()
                self.wfile.write(b'ok')

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(('127.0.0.1', port), Handler)
        self.port = self.server.server_address[1]
        self.url = 'http://127.0.0.1:%d%s' % (self.port, path)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def kinds(self):
        with self.lock:
            return [e.get('event') for e in self.events]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class SteadyLoad:
    """A steady load on / of the ``host:port`` instances in ``targets`` (changeable at any time), from a thread of
    the test; what they answer (a 500 of a flaky release, a host restarting its app) is not looked at."""

    def __init__(self, targets=()):
        self.targets = list(targets)
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stopped.is_set():
            for instance in list(self.targets):
                try:
                    urllib.request.urlopen('http://%s/' % instance, timeout=2).read()
                except (OSError, http.client.HTTPException):
                    pass
            time.sleep(0.02)

    def stop(self):
        self.stopped.set()
        self.thread.join(timeout=10)
