# -*- coding: utf-8 -*-
# Copyright: Contributors to failsafe.deploy
# SPDX-License-Identifier: GPL-3.0-or-later
"""After the failed deploy of 3.0.0 every host is back on 1.0.0, byte-identical to its snapshot, and healthy."""
import json

APP = '/srv/app'
STATE = '/var/lib/failsafe-deploy/app'
DIGEST = '/usr/bin/python3 /srv/molecule/host_digest.py %s'
VERSION_PROBE = ("import urllib.request; "
                 "print(urllib.request.urlopen('http://127.0.0.1:8080/version', timeout=5).read().decode().strip())")


def test_current_is_back_on_1_0_0(host):
    assert host.file(APP + '/current').linked_to == APP + '/releases/1.0.0'


def test_captured_paths_are_byte_identical_to_before_the_failed_deploy(host):
    before = json.loads(host.file('/srv/molecule/before.json').content_string)
    after = json.loads(host.check_output(DIGEST % 'digest'))
    assert after == before
    assert before[APP + '/current'][:2] == ['link', 'releases/1.0.0']


def test_captured_paths_match_the_snapshot_manifest(host):
    assert json.loads(host.check_output(DIGEST % 'snapshot-drift')) == []


def test_transaction_rolled_back_and_lock_released(host):
    journal = json.loads(host.file(STATE + '/journal.json').content_string)
    assert journal['release'] == '3.0.0'
    assert journal['status'] == 'rolled_back'
    assert not host.file(STATE + '/lock.json').exists


def test_bad_release_quarantined(host):
    ledger = json.loads(host.file(APP + '/.failsafe/ledger.json').content_string)
    assert ledger['current'] == '1.0.0'
    assert ledger['releases']['3.0.0']['state'] == 'failed'


def test_app_healthy_on_1_0_0(host):
    assert host.check_output('/usr/bin/python3 -c "%s"' % VERSION_PROBE) == '1.0.0'
