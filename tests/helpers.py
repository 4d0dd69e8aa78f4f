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
import random
import socket
import threading
import time
import urllib.request


# Ports free_port picks from: below the kernel's ephemeral range (net.ipv4.ip_local_port_range, 32768-60999 by
# default), which it hands to every outgoing connection and every bind to port 0. A port taken from that range was
# free when it was picked, and any connection made before the service bound it (an SSH session, an HTTP client, a
# receiver on port 0) could take it meanwhile: "Address already in use" in a test that had nothing wrong.
PORT_FLOOR = 20000


def _ephemeral_floor():
    try:
        with open('/proc/sys/net/ipv4/ip_local_port_range') as handle:
            return int(handle.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port(host='127.0.0.1'):
    """A TCP port nothing listens on at the moment of the call, below the kernel's ephemeral range (so no outgoing
    connection or port-0 bind can take it before the caller's service binds it), picked at random so that test
    processes side by side do not pick the same one."""
    ceiling = _ephemeral_floor()
    if ceiling - PORT_FLOOR >= 1000:  # else an unusual ephemeral range: the kernel's pick below
        picker = random.SystemRandom()
        for dummy in range(200):
            port = picker.randrange(PORT_FLOOR, ceiling)
            with socket.socket() as sock:
                try:
                    sock.bind((host, port))
                except OSError:
                    continue
                return port
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
