# -*- coding: utf-8 -*-
# Private to this collection: not a public API.
# Copyright: Contributors to failsafe.deploy
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Replay of the alerts a channel never received.

Every alert is in the spool with the ``channels`` it was meant for; the delivery ledger beside it
(``alerts.delivery.jsonl``) says what each channel did with it. An (alert, channel) pair with no ``delivered`` (or
``not applicable``) outcome is pending: ``replay()`` sends it again, in spool order, and appends the outcome to the
ledger, so a second replay sends nothing. A lock on the ledger keeps two replays from sending the same alert.

Run it where the deploys run, with the same ``FAILSAFE_*`` environment (the secrets that configure the channels are
read from there, never from a file)::

    python -m ansible_collections.failsafe.deploy.plugins.plugin_utils._replay failsafe-incidents/alerts.jsonl

``--dry-run`` lists what is pending without sending. Exit status: 0 when nothing is left pending for a channel that
is configured, 1 when a delivery failed, 2 on a usage error (no such spool).
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import argparse
import collections
import fcntl
import json
import os
import sys

from ansible_collections.failsafe.deploy.plugins.plugin_utils._alerts import (
    SpoolSender, WebhookSender, delivery_path, delivery_record)
from ansible_collections.failsafe.deploy.plugins.plugin_utils._channels import build_channels
from ansible_collections.failsafe.deploy.plugins.plugin_utils._redact import Redactor

DONE = frozenset(('delivered', 'not applicable'))
DEFAULT_REPLAY_TIME_LIMIT = 60.0

# option name -> environment variable: the callback's own names (its DOCUMENTATION), for the replay command.
ENV = collections.OrderedDict((
    ('webhook_url', 'FAILSAFE_WEBHOOK_URL'),
    ('webhook_timeout', 'FAILSAFE_WEBHOOK_TIMEOUT'),
    ('pagerduty_routing_key', 'FAILSAFE_PAGERDUTY_ROUTING_KEY'),
    ('pagerduty_url', 'FAILSAFE_PAGERDUTY_URL'),
    ('slack_webhook_url', 'FAILSAFE_SLACK_WEBHOOK_URL'),
    ('teams_webhook_url', 'FAILSAFE_TEAMS_WEBHOOK_URL'),
    ('channel_timeout', 'FAILSAFE_CHANNEL_TIMEOUT'),
    ('channel_retries', 'FAILSAFE_CHANNEL_RETRIES'),
    ('email_host', 'FAILSAFE_EMAIL_HOST'),
    ('email_port', 'FAILSAFE_EMAIL_PORT'),
    ('email_from', 'FAILSAFE_EMAIL_FROM'),
    ('email_to', 'FAILSAFE_EMAIL_TO'),
    ('email_username', 'FAILSAFE_EMAIL_USERNAME'),
    ('email_password', 'FAILSAFE_EMAIL_PASSWORD'),
    ('email_starttls', 'FAILSAFE_EMAIL_STARTTLS'),
    ('email_timeout', 'FAILSAFE_EMAIL_TIMEOUT'),
    ('email_ca_file', 'FAILSAFE_EMAIL_CA_FILE'),
    ('email_html', 'FAILSAFE_EMAIL_HTML'),
    ('apprise_urls', 'FAILSAFE_APPRISE_URLS'),
))


def _bool(value, default):
    if value is None or value == '':
        return default
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() in ('1', 'true', 'yes', 'on', 'y', 't')


def _list(value):
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return [str(v).strip() for v in value if str(v).strip()]
    return [v.strip() for v in str(value).split(',') if v.strip()]


def email_settings(get):
    """EmailChannel arguments from the callback's options (``get(name)``), or None when email_host is not set."""
    host = get('email_host')
    if not host:
        return None
    settings = {'host': host, 'port': int(get('email_port') or 587), 'sender': get('email_from'),
                'recipients': _list(get('email_to')), 'username': get('email_username') or None,
                'password': get('email_password') or None, 'starttls': _bool(get('email_starttls'), True),
                'ca_file': get('email_ca_file') or None, 'html_body': _bool(get('email_html'), True)}
    if get('email_timeout') not in (None, ''):
        settings['timeout'] = float(get('email_timeout'))
    return settings


def channels_from(get, redactor, time_limit, warn=None):
    """{name: sender} of every channel configured through ``get(option name)``, the webhook included."""
    for name in ('webhook_url', 'pagerduty_routing_key', 'slack_webhook_url', 'teams_webhook_url', 'email_password',
                 'apprise_urls'):
        if get(name):
            redactor.add_secret(get(name))
    senders = collections.OrderedDict()
    if get('webhook_url'):
        senders['webhook'] = WebhookSender(get('webhook_url'), timeout=float(get('webhook_timeout') or 5),
                                           retries=2, redactor=redactor, time_limit=time_limit)
    retries = get('channel_retries')
    for channel in build_channels(
            pagerduty_routing_key=get('pagerduty_routing_key'), pagerduty_url=get('pagerduty_url'),
            slack_webhook_url=get('slack_webhook_url'), teams_webhook_url=get('teams_webhook_url'),
            email=email_settings(get), apprise_urls=get('apprise_urls'), warn=warn, redactor=redactor,
            timeout=float(get('channel_timeout') or 1), retries=int(retries) if retries not in (None, '') else 2,
            time_limit=time_limit):
        senders[channel.name] = channel
    return senders


def env_getter(environ=None):
    environ = os.environ if environ is None else environ
    return lambda name: environ.get(ENV[name]) if name in ENV else None


def _read_lines(path):
    out = []
    if not os.path.exists(path):
        return out
    with open(path, encoding='utf-8', errors='replace') as handle:
        for line in handle:
            line = line.strip()
            if not line:
                continue
            try:
                item = json.loads(line)
            except ValueError:
                continue   # a line cut short by a crash: the rest of the file still counts
            if isinstance(item, dict):
                out.append(item)
    return out


def pending(spool_path):
    """[(alert, channel)] that the spool meant for a channel and the ledger does not show as received."""
    done = set()
    for item in _read_lines(delivery_path(spool_path)):
        if item.get('record') == 'delivery' and item.get('status') in DONE:
            done.add((item.get('alert_id'), item.get('channel')))
    out = []
    for alert in _read_lines(spool_path):
        alert_id = alert.get('alert_id')
        if not alert_id:
            continue   # spooled before alerts had ids: nothing says where it went
        for channel in alert.get('channels') or ():
            if (alert_id, channel) not in done:
                out.append((alert, channel))
    return out


def replay(spool_path, senders, dry_run=False):
    """Send every pending (alert, channel) to the sender of that channel; append each outcome to the ledger.

    Returns {'sent': [...], 'failed': [...], 'unconfigured': [...]}, each a list of (alert_id, event, channel[,
    error])."""
    summary = {'sent': [], 'failed': [], 'unconfigured': [], 'pending': []}
    ledger_path = delivery_path(spool_path)
    directory = os.path.dirname(os.path.abspath(ledger_path))
    os.makedirs(directory, exist_ok=True)
    fd = os.open(ledger_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)   # a second replay waits, then finds nothing pending
        ledger = SpoolSender(ledger_path)
        for alert, channel in pending(spool_path):
            key = (alert['alert_id'], alert.get('event'), channel)
            sender = senders.get(channel)
            if sender is None:
                summary['unconfigured'].append(key)
                continue
            if dry_run:
                summary['pending'].append(key)
                continue
            payload = dict((k, v) for k, v in alert.items() if k != 'channels')
            try:
                result = sender.send(payload)
            except Exception as exc:  # pylint: disable=broad-except
                result = None
                error = type(exc).__name__
            else:
                error = result.error if result is not None else None
            if result is None and error:
                summary['failed'].append(key + (error,))
                continue   # nothing recorded: it stays pending
            if result is not None:
                summary['sent' if result.ok else 'failed'].append(key + (() if result.ok else (error,)))
            ledger.send(delivery_record(alert['alert_id'], alert.get('event'), channel, result, replayed=True))
    finally:
        os.close(fd)
    return summary


def main(argv=None, environ=None, out=None):
    out = out or sys.stdout
    parser = argparse.ArgumentParser(
        prog='python -m ansible_collections.failsafe.deploy.plugins.plugin_utils._replay',
        description='Send again the alerts of a failsafe.deploy spool that a channel never received. Channels are '
                    'configured by the same FAILSAFE_* environment variables as the auto_rollback callback.')
    parser.add_argument('spool', help='the alert spool (the callback option spool_path, by default '
                                      '<report_dir>/alerts.jsonl)')
    parser.add_argument('--dry-run', action='store_true', help='list what is pending, send nothing')
    parser.add_argument('--time-limit', type=float, default=DEFAULT_REPLAY_TIME_LIMIT,
                        help='seconds each channel may spend sending (default %(default)s)')
    args = parser.parse_args(argv)
    if not os.path.exists(args.spool):
        out.write('failsafe replay: no spool at %s\n' % args.spool)
        return 2
    redactor = Redactor()
    warnings = []
    senders = channels_from(env_getter(environ), redactor, args.time_limit, warn=warnings.append)
    for warning in warnings:
        out.write('failsafe replay: warning: %s\n' % redactor.text(warning))
    summary = replay(args.spool, senders, dry_run=args.dry_run)
    for alert_id, event, channel in summary['pending']:
        out.write('pending    %-10s %s %s\n' % (channel, event, alert_id))
    for alert_id, event, channel in summary['sent']:
        out.write('delivered  %-10s %s %s\n' % (channel, event, alert_id))
    for alert_id, event, channel, error in summary['failed']:
        out.write('failed     %-10s %s %s: %s\n' % (channel, event, alert_id, redactor.text(error)))
    for alert_id, event, channel in summary['unconfigured']:
        out.write('skipped    %-10s %s %s: the channel is not configured here\n' % (channel, event, alert_id))
    out.write('failsafe replay: %d delivered, %d failed, %d pending, %d for channels not configured\n' % (
        len(summary['sent']), len(summary['failed']), len(summary['pending']), len(summary['unconfigured'])))
    return 1 if summary['failed'] else 0


if __name__ == '__main__':
    sys.exit(main())
