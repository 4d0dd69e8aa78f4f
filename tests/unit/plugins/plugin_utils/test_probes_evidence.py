# -*- coding: utf-8 -*-
# Copyright: Contributors to failsafe.deploy
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Dependency probes against real sockets, the real file system and real commands; evidence of failed results."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import socket
import time

import pytest

from ansible_collections.failsafe.deploy.plugins.plugin_utils import _probes
from ansible_collections.failsafe.deploy.plugins.plugin_utils._evidence import details_lines, failure_details


def test_parse_reads_every_kind_and_names_entries():
    deps, errors = _probes.parse_all(['db=tcp:db.example.org:5432', 'https://u:pw@api.example.org/health?key=k1',
                                      'dns:example.org', 'disk:/var:10%', 'check=command:test -d /tmp'])
    assert errors == []
    assert [(d['name'], d['kind']) for d in deps] == [
        ('db', 'tcp'), ('https://api.example.org/health', 'http'), ('dns:example.org', 'dns'),
        ('disk:/var:10%', 'disk'), ('check', 'command')]
    assert deps[1]['secrets'] == ['pw', 'key=k1'] and 'pw' not in deps[1]['target']
    assert deps[3]['min_free'] == ('percent', 10.0) and deps[4]['argv'] == ['test', '-d', '/tmp']


@pytest.mark.parametrize('entry', ['tcp:nohost', 'ftp:x', 'disk:var:1G', 'disk:/var:lots', 'dns:bad name', '',
                                   'command:', 'http:ftp://x'])
def test_parse_rejects_what_it_cannot_understand(entry):
    deps, errors = _probes.parse_all([entry])
    assert deps == [] and len(errors) == 1


def test_probes_tell_up_from_down_side_by_side_within_the_timeout(tmp_path):
    listening = socket.socket()
    listening.bind(('127.0.0.1', 0))
    listening.listen(4)
    closed = socket.socket()
    closed.bind(('127.0.0.1', 0))
    closed_port = closed.getsockname()[1]
    closed.close()
    deps, dummy = _probes.parse_all([
        'up=tcp:127.0.0.1:%d' % listening.getsockname()[1], 'down=tcp:127.0.0.1:%d' % closed_port,
        'disk:%s:1K' % tmp_path, 'full=disk:%s:100000T' % tmp_path, 'ok=command:true', 'bad=command:false',
        'slow=command:sleep 5', 'nx=dns:no-such-name.invalid'])
    started = time.monotonic()
    results = _probes.probe_all(deps, timeout=1.0)
    elapsed = time.monotonic() - started
    listening.close()
    status = dict((r['name'], r['ok']) for r in results)
    assert status == {'up': True, 'down': False, 'disk:%s:1K' % tmp_path: True, 'full': False, 'ok': True,
                      'bad': False, 'slow': False, 'nx': False}
    assert elapsed < 3.0                                  # side by side: not the sum of the timeouts
    answer = _probes.verdict(results)
    assert answer['verdict'] == 'dependency' and answer['down'] == ['down', 'full', 'bad', 'slow', 'nx']
    assert _probes.verdict([r for r in results if r['ok']])['verdict'] == 'deploy'
    assert _probes.verdict([])['verdict'] == 'unknown'


def test_evidence_of_a_command_an_http_call_and_a_failed_check():
    command = failure_details({'rc': 3, 'cmd': ['migrate'], 'stderr': '\n'.join('line %d' % i for i in range(40)),
                               'stdout': 'ignored'})
    assert command['rc'] == 3 and command['stderr_tail'].splitlines() == ['line %d' % i for i in range(25, 40)]
    http = failure_details({'status': 502, 'url': 'http://x/health', 'content': 'Bad gateway ' * 100})
    assert http['http_status'] == 502 and len(http['body_excerpt']) <= 500
    failed = {'name': 'health', 'ok': False, 'status': 503, 'body': '{"status": "unhealthy"}',
              'error': 'status 503 not in [200]'}
    verify = failure_details({'checks': [{'name': 'ok', 'ok': True}, failed]})
    assert [c['name'] for c in verify['failed_checks']] == ['health']
    assert 'check health failed' in details_lines(verify)[0] and 'HTTP 503' in details_lines(verify)[0]
    loop = failure_details({'results': [{'failed': False}, {'failed': True, 'rc': 1, 'stderr': 'boom', 'item': 'b'}]})
    assert loop == {'rc': 1, 'stderr_tail': 'boom', 'item': 'b'}
    assert failure_details({'msg': 'only a message'}) == {}
