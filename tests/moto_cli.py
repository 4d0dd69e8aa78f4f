# -*- coding: utf-8 -*-
# Copyright: Contributors to failsafe.deploy
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""AWS emulated on localhost for the cloudformation layer's tests: moto's server (``moto[server,cloudformation]``,
requirements-dev.txt) answering the CloudFormation, S3 and SQS APIs on 127.0.0.1, with dummy credentials.

moto is an emulation, not AWS: stacks are created, updated, changed through change sets and deleted at once (no
``*_IN_PROGRESS`` to wait through), it never rolls a stack back by itself (no ``UPDATE_ROLLBACK_*`` states, no
``continue_update_rollback``), stacks made through change sets have no outputs, and it drops resource types it does
not know. The tests use S3 buckets and SQS queues, which it implements.

``start_moto(folder)`` starts one server (a port of 19400-19499 nothing listens on) and returns (process, endpoint);
``stop_moto(process)`` ends it (a behaviour test's module fixture). The unit tests share one server per test process
through ``shared_moto()`` (tests/process_shared.py: under ansible-test units each test runs in a fork, where no
fixture's teardown runs), which ``session_end()`` stops (tests/unit/conftest.py). ``aws_env()`` is the environment a
client and the layer need. A missing moto ends the test through tests/requires.py.

Imported as ``ansible_collections.failsafe.deploy.tests.moto_cli`` by the unit tests, as ``tests.moto_cli`` by the
behaviour tests (see tests/helpers.py).
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import time

from . import process_shared
from .requires import cannot_run, require_module

PORTS = range(19400, 19500)
REGION = 'us-east-1'


def _claim(port):
    """An exclusive claim on ``port`` among the tests (a lock file held until stop_moto), or None: two test
    processes starting servers at once never pick the same port."""
    fd = os.open(os.path.join(os.environ.get('TMPDIR', '/tmp'), 'failsafe-moto-%d.lock' % port),
                 os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def _port_free(port):
    with socket.socket() as sock:
        try:
            sock.bind(('127.0.0.1', port))
        except OSError:
            return False
    return True


def aws_env():
    """Dummy credentials and a region (moto accepts any), so that no real key is ever read or sent."""
    env = {'AWS_ACCESS_KEY_ID': 'testing-moto-key', 'AWS_SECRET_ACCESS_KEY': 'testing-moto-secret',
           'AWS_DEFAULT_REGION': REGION, 'AWS_REGION': REGION, 'AWS_EC2_METADATA_DISABLED': 'true'}
    return env


def start_moto(folder):
    """Start moto's server on 127.0.0.1; returns (process, endpoint URL)."""
    require_module('moto', 'moto[server,cloudformation] (requirements-dev.txt) emulates CloudFormation here')
    require_module('boto3', 'boto3 (requirements-dev.txt) is how the cloudformation layer calls the API')
    os.makedirs(str(folder), exist_ok=True)
    log = open(os.path.join(str(folder), 'moto.log'), 'wb')
    for port in PORTS:
        claim = _claim(port)
        if claim is None:
            continue
        if not _port_free(port):
            os.close(claim)
            continue
        proc = subprocess.Popen([sys.executable, '-m', 'moto.server', '-H', '127.0.0.1', '-p', str(port)],
                                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                socket.create_connection(('127.0.0.1', port), timeout=1).close()
                # bound now: the port is the server's, the claim is no longer needed
                log.close()
                os.close(claim)
                return proc, 'http://127.0.0.1:%d' % port
            except OSError:
                time.sleep(0.1)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(claim)
    log.close()
    cannot_run('moto_server did not start on any port of 19400-19499 (see %s)' % os.path.join(str(folder), 'moto.log'))


def stop_moto(proc):
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _answers(endpoint):
    host, port = endpoint.rsplit('/', 1)[-1].split(':')
    try:
        socket.create_connection((host, int(port)), timeout=2).close()
    except OSError:
        return False
    return True


def shared_moto():
    """The endpoint of the moto server the tests of this test process share, started by the first test that needs
    it (again if it died); session_end stops it. Each test uses stacks of names of its own."""
    base = process_shared.directory()
    if not base:
        raise RuntimeError('no directory for the shared moto server (%s): tests/unit/conftest.py names it when '
                           'pytest starts' % process_shared.ENV)
    state = os.path.join(base, 'moto.json')
    with process_shared.Lock('moto'):
        if os.path.exists(state):
            with open(state) as handle:
                known = json.load(handle)
            if process_shared.alive(known['pid']) and _answers(known['endpoint']):
                return known['endpoint']
            _kill(known['pid'])
        proc, endpoint = start_moto(os.path.join(base, 'moto'))
        with open(state + '.tmp', 'w') as handle:
            json.dump({'pid': proc.pid, 'endpoint': endpoint}, handle)
        os.rename(state + '.tmp', state)
        return endpoint


def _kill(pid):
    if not process_shared.alive(pid):
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.time() + 10
    while process_shared.alive(pid) and time.time() < deadline:
        time.sleep(0.1)
    if process_shared.alive(pid):
        os.kill(pid, signal.SIGKILL)


def session_end():
    """Stops the shared moto server of this test process, if a test started one."""
    base = os.environ.get(process_shared.ENV)
    state = os.path.join(base, 'moto.json') if base else ''
    if state and os.path.exists(state):
        with open(state) as handle:
            _kill(json.load(handle)['pid'])
        os.unlink(state)
