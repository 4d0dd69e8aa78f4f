# -*- coding: utf-8 -*-
# Copyright: Contributors to failsafe.deploy
# SPDX-License-Identifier: GPL-3.0-or-later
"""Each fleet host runs the verified release 1.0.0 with its transaction committed and its lock released."""
import json

APP = '/srv/app'
STATE = '/var/lib/failsafe-deploy/app'
VERSION_PROBE = ("import urllib.request; "
                 "print(urllib.request.urlopen('http://127.0.0.1:8080/version', timeout=5).read().decode().strip())")


def test_current_points_at_release_1_0_0(host):
    current = host.file(APP + '/current')
    assert current.is_symlink
    assert current.linked_to == APP + '/releases/1.0.0'
    assert host.file(APP + '/releases/1.0.0/app.py').is_file


def test_ledger_marks_1_0_0_verified_and_current(host):
    ledger = json.loads(host.file(APP + '/.failsafe/ledger.json').content_string)
    assert ledger['current'] == '1.0.0'
    assert ledger['last_verified'] == '1.0.0'
    assert ledger['releases']['1.0.0']['state'] == 'verified'


def test_app_answers_1_0_0(host):
    out = host.check_output('/usr/bin/python3 -c "%s"' % VERSION_PROBE)
    assert out == '1.0.0'


def test_journal_committed_and_no_lock(host):
    journal = json.loads(host.file(STATE + '/journal.json').content_string)
    assert journal['status'] == 'committed'
    assert journal['release'] == '1.0.0'
    assert not host.file(STATE + '/lock.json').exists


def test_each_host_is_its_own_machine(host):
    assert host.check_output('hostname') == host.backend.get_hostname()
