# -*- coding: utf-8 -*-
# Copyright: Contributors to failsafe.deploy
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import json

import pytest

from ansible_collections.failsafe.deploy.plugins.plugin_utils._redact import MASK, Redactor, is_secret_key

WEBHOOK = 'https://hooks.example.test/services/T0001/B0002/abcdefSECRETxyz'


@pytest.mark.parametrize('key, secret', [
    ('password', True), ('db_password', True), ('DB_PASSWORD', True), ('token', True), ('access_token', True),
    ('api_key', True), ('apiKey', True), ('Authorization', True), ('client_secret', True), ('private_key', True),
    ('webhook_url', True), ('msg', False), ('txid', False), ('failsafe_transaction', False), ('no_log', False),
    ('stderr', False),
])
def test_secret_keys(key, secret):
    assert is_secret_key(key) is secret


@pytest.mark.parametrize('text, leaked, kept', [
    ('cloning https://deploy:s3cr3tpw@git.example.test/app.git failed', 's3cr3tpw', 'git.example.test/app.git'),
    ('GET https://api.example.test/v1?user=a&token=tok123456&x=1', 'tok123456', 'user=a'),
    ('curl -H "Authorization: Bearer eyJhbGciOi.abc.def" https://x', 'eyJhbGciOi', 'curl'),
    ('mysql --password=hunter22 -u app', 'hunter22', '-u app'),
    ('DB_PASSWORD: hunter33 and more', 'hunter33', 'and more'),
    ('{"api_key": "k-123456"}', 'k-123456', 'api_key'),
])
def test_text_patterns(text, leaked, kept):
    out = Redactor().text(text)
    assert leaked not in out
    assert kept in out
    assert MASK in out


def test_configured_secret_replaced_everywhere_including_parts_of_the_url():
    red = Redactor([WEBHOOK])
    assert WEBHOOK not in red.text('posting to %s failed' % WEBHOOK)
    # without the scheme, or just the path that holds the token
    assert 'abcdefSECRETxyz' not in red.text('hooks.example.test/services/T0001/B0002/abcdefSECRETxyz')
    assert 'abcdefSECRETxyz' not in red.text('path /services/T0001/B0002/abcdefSECRETxyz')
    assert '<redacted>' in red.text(WEBHOOK)


def test_data_redacts_by_key_and_in_values_deeply():
    red = Redactor([WEBHOOK], )
    data = {
        'msg': 'failed calling %s' % WEBHOOK,
        'password': 'p4ss',
        'nested': [{'token': 'abc', 'ok': 1, 'url': 'http://u:pw12345@h/'}],
        'empty_secret': '',
        'count': 3,
        'flag': True,
    }
    out = red.data(data)
    blob = json.dumps(out)
    for leaked in ('abcdefSECRETxyz', 'p4ss', '"abc"', 'pw12345'):
        assert leaked not in blob
    assert out['password'] == MASK
    assert out['nested'][0]['token'] == MASK
    assert out['nested'][0]['ok'] == 1
    assert out['count'] == 3 and out['flag'] is True
    assert out['empty_secret'] == ''
    # the input is not modified
    assert data['password'] == 'p4ss'


def test_short_values_are_not_treated_as_secrets():
    red = Redactor(['ab'])
    assert red.text('abc ab') == 'abc ab'
