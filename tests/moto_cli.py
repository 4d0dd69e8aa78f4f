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
``aws_env(endpoint)`` the environment a client and the layer need; ``stop_moto(process)`` ends it. A missing moto
ends the test through tests/requires.py.
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import fcntl
import os
import socket
import subprocess
import sys
import time

from tests.requires import cannot_run, require_module

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
    env.pop('AWS_PROFILE', None)
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
                log.close()
                proc.failsafe_claim = claim
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
    os.close(proc.failsafe_claim)
