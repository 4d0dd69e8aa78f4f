# -*- coding: utf-8 -*-
# Private to this collection: not a public API.
# Copyright: Contributors to failsafe.deploy
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Redaction of secrets in anything the controller writes: alerts, reports, logs, banners.

Three layers, applied in this order to every string:
1. configured secret values (the webhook URL, extra values) are replaced wherever they appear;
2. credentials inside URLs (``scheme://user:pass@host``) and secret-looking query parameters;
3. ``key=value`` / ``key: value`` pairs and ``Authorization`` headers whose key looks secret.
Mappings are also redacted by key: the value of any key that looks secret is masked whole.
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import re

MASK = '********'
SECRET_MASK = '<redacted>'

# Keys whose values are never recorded. Matched case-insensitively anywhere in the key.
_SECRET_KEY_RE = re.compile(
    r'(password|passwd|passphrase|secret|token|api[_-]?key|apikey|authorization|private[_-]?key|'
    r'credential|cookie|client[_-]?secret|access[_-]?key|webhook[_-]?url|vault[_-]?pass)',
    re.IGNORECASE,
)
# Keys that merely contain a secret-looking word but carry no secret.
_SAFE_KEYS = frozenset(('no_log', '_ansible_no_log', 'token_type', 'password_file_exists'))

_URL_USERINFO_RE = re.compile(r'(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<userinfo>[^/\s@?#"\']+)@')
_QUERY_SECRET_RE = re.compile(
    r'(?P<key>[?&;](?:access_token|token|password|passwd|secret|api_key|apikey|key|sig|signature|auth)=)'
    r'[^&;#\s"\']+',
    re.IGNORECASE,
)
_AUTH_HEADER_RE = re.compile(
    r'(?P<key>\b(?:proxy-)?authorization\b["\']?\s*[:=]\s*["\']?)(?:(?:bearer|basic|token|digest)\s+)?[^\s"\',}]+',
    re.IGNORECASE,
)
_PAIR_RE = re.compile(
    r'(?P<key>\b[\w.-]*(?:password|passwd|passphrase|secret|token|api[_-]?key|apikey|private[_-]?key)[\w.-]*'
    r'["\']?\s*(?:=|:)\s*["\']?)(?P<value>[^\s"\',;&}]+)',
    re.IGNORECASE,
)


def is_secret_key(key):
    """True when the value stored under ``key`` must never be recorded."""
    if not isinstance(key, str):
        return False
    if key.lower() in _SAFE_KEYS:
        return False
    return bool(_SECRET_KEY_RE.search(key))


class Redactor:
    """Removes secrets from text and data. Instances are cheap; build one per run."""

    def __init__(self, secrets=None, min_length=4):
        self._min_length = min_length
        self._secrets = []
        for value in secrets or ():
            self.add_secret(value)

    def add_secret(self, value):
        """Register a value that must never appear anywhere (e.g. a webhook URL)."""
        if value is None:
            return
        value = str(value)
        variants = set()
        if len(value) >= self._min_length:
            variants.add(value)
        # A URL is also recognised without its scheme, and by its path and query, where tokens live.
        match = re.match(r'^[a-zA-Z][a-zA-Z0-9+.-]*://(?P<rest>(?P<netloc>[^/?#]*)(?P<tail>.*))$', value)
        if match:
            variants.add(match.group('rest'))
            tail = match.group('tail')
            if len(tail) >= 8:
                variants.add(tail)
        for item in variants:
            if item and len(item) >= self._min_length and item not in self._secrets:
                self._secrets.append(item)
        # Longest first, so a URL is replaced whole before its tail is.
        self._secrets.sort(key=len, reverse=True)

    @property
    def secrets_count(self):
        return len(self._secrets)

    def text(self, value):
        """Return ``value`` as a string with every known secret pattern masked."""
        if value is None:
            return value
        if not isinstance(value, str):
            value = str(value)
        for secret in self._secrets:
            if secret in value:
                value = value.replace(secret, SECRET_MASK)
        value = _URL_USERINFO_RE.sub(lambda m: m.group('scheme') + MASK + '@', value)
        value = _QUERY_SECRET_RE.sub(lambda m: m.group('key') + MASK, value)
        value = _AUTH_HEADER_RE.sub(lambda m: m.group('key') + MASK, value)
        value = _PAIR_RE.sub(lambda m: m.group('key') + MASK, value)
        return value

    def data(self, value, _depth=0):
        """Return a redacted deep copy of JSON-like data (dicts, lists, scalars)."""
        if _depth > 50:
            return MASK
        if isinstance(value, dict):
            out = {}
            for key, item in value.items():
                skey = key if isinstance(key, str) else str(key)
                if is_secret_key(skey) and item not in (None, '', [], {}):
                    out[self.text(skey)] = MASK
                else:
                    out[self.text(skey)] = self.data(item, _depth + 1)
            return out
        if isinstance(value, (list, tuple, set, frozenset)):
            return [self.data(item, _depth + 1) for item in value]
        if isinstance(value, str):
            return self.text(value)
        if value is None or isinstance(value, (bool, int, float)):
            return value
        return self.text(str(value))
