# -*- coding: utf-8 -*-
# Private to this collection: not a public API.
# Copyright: Contributors to failsafe.deploy
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The auto_rollback callback's alerting options turned into the parts that use them.

One job: from the callback's ``get_option`` build the redactor's list of secrets (``add_secrets()``), the alert
dispatcher with its webhook and channels (``alert_dispatcher()``) and the dependencies to probe
(``dependencies()``), and say in words which setting a failed delivery concerns (``problem_warning()``). A setting
that cannot work is reported through ``warn``, never raised.
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import os

from ansible_collections.failsafe.deploy.plugins.plugin_utils import _probes
from ansible_collections.failsafe.deploy.plugins.plugin_utils._alerts import (
    AlertDispatcher, SpoolSender, WebhookSender)
from ansible_collections.failsafe.deploy.plugins.plugin_utils._channels import build_channels
from ansible_collections.failsafe.deploy.plugins.plugin_utils._replay import email_settings

# channel -> the environment variable that configures it, for the warning of a failed delivery
CHANNEL_SETTINGS = {'pagerduty': 'FAILSAFE_PAGERDUTY_ROUTING_KEY', 'slack': 'FAILSAFE_SLACK_WEBHOOK_URL',
                    'teams': 'FAILSAFE_TEAMS_WEBHOOK_URL', 'email': 'FAILSAFE_EMAIL_HOST',
                    'apprise': 'FAILSAFE_APPRISE_URLS', 'stakeholders': 'FAILSAFE_STAKEHOLDER_EMAIL_TO',
                    'stakeholders_slack': 'FAILSAFE_STAKEHOLDER_SLACK_WEBHOOK_URL'}
CHANNEL_SECRETS = ('pagerduty_routing_key', 'slack_webhook_url', 'teams_webhook_url', 'apprise_urls')


# The webhook of the auto_rollback callback of this run (set when it loads its options, before the workers fork):
# the activation hands it to the host's revert watchdog, which alerts through it by itself.
RUN_WEBHOOK = {}


def run_webhook_url(environ=None):
    """The webhook URL the alerts of this run go to: the callback's ``webhook_url``, else FAILSAFE_WEBHOOK_URL."""
    return RUN_WEBHOOK.get('url') or (environ if environ is not None else os.environ).get('FAILSAFE_WEBHOOK_URL') \
        or None


def path_option(value):
    """A path option as an absolute path (``~`` expanded), or None when it is not set."""
    return os.path.abspath(os.path.expanduser(value)) if value else None


def float_option(value, default):
    """A float option that may be 0 (which ``or default`` would lose)."""
    if value is None or value == '':
        return default
    return float(value)


def _int_or(value, default):
    return int(value if value is not None else default)


def add_secrets(redactor, get_option):
    """Every secret among the options (the controller token, ``redact_values``, webhook URLs, routing keys, the
    e-mail password) is redacted from then on."""
    if get_option('controller_token'):
        redactor.add_secret(get_option('controller_token'))
    for value in get_option('redact_values') or []:
        redactor.add_secret(value)
    if get_option('webhook_url'):
        redactor.add_secret(get_option('webhook_url'))
    for value in [get_option(name) for name in CHANNEL_SECRETS] + [get_option('email_password'),
                                                                   get_option('stakeholder_slack_webhook_url')]:
        if value:
            redactor.add_secret(value)


def alert_dispatcher(get_option, redactor, spool_path, child_mode, warn):
    """The AlertDispatcher of a run: the spool always; the webhook and the channels unless this is the rollback
    child (its parent alerts)."""
    webhook_url = get_option('webhook_url') or None
    webhook = None
    channels = []
    if webhook_url and not child_mode:
        RUN_WEBHOOK['url'] = webhook_url
        webhook = WebhookSender(webhook_url, timeout=float(get_option('webhook_timeout') or 5),
                                retries=_int_or(get_option('webhook_retries'), 2), redactor=redactor,
                                time_limit=float_option(get_option('webhook_time_limit'), 8.0))
    if not child_mode:
        channels = build_channels(
            pagerduty_url=get_option('pagerduty_url'), redactor=redactor, email=email_settings(get_option),
            warn=warn, timeout=float(get_option('channel_timeout') or 1),
            retries=_int_or(get_option('channel_retries'), 2),
            time_limit=float(get_option('channel_time_limit') if get_option('channel_time_limit') is not None
                             else 3),
            stakeholder_email_to=get_option('stakeholder_email_to') or None,
            stakeholder_slack_webhook_url=get_option('stakeholder_slack_webhook_url') or None,
            **dict((name, get_option(name)) for name in CHANNEL_SECRETS))
    return AlertDispatcher(spool=SpoolSender(spool_path), webhook=webhook, channels=channels,
                           wait_limit=float_option(get_option('alert_wait_limit'), 10.0))


def dependencies(get_option, redactor, warn):
    """The parsed ``dependencies`` option (their secrets redacted from then on); an entry that does not parse is
    left out with a warning."""
    deps, problems = _probes.parse_all(get_option('dependencies') or [])
    for dep in deps:
        for secret in dep.get('secrets') or ():
            redactor.add_secret(secret)
    for problem in problems:
        warn('dependencies: %s; that entry is not probed' % problem)
    return deps


def problem_warning(channel, event, result, spool_path):
    """The warning for an alert ``channel`` did not deliver (``result``: its SendResult), naming the setting."""
    if channel == 'webhook':
        return ('webhook alert %r not delivered after %s attempt(s): %s (setting webhook_url / '
                'FAILSAFE_WEBHOOK_URL)' % (event, result.attempts, result.error))
    if channel.startswith('stakeholders') and channel in CHANNEL_SETTINGS:
        return ('stakeholder notice not delivered (%s) after %s attempt(s): %s; notices are not spooled '
                '(setting %s)' % (channel, result.attempts, result.error, CHANNEL_SETTINGS[channel]))
    if channel in CHANNEL_SETTINGS:
        return ('%s alert %r not delivered after %s attempt(s): %s; it is in the spool (setting %s)'
                % (channel, event, result.attempts, result.error, CHANNEL_SETTINGS[channel]))
    return ('could not write alert %r to the spool %s: %s (setting spool_path)'
            % (event, spool_path, result.error))


def alert_warnings(dispatcher, spool_path, final=False):
    """The warnings for what the alert senders of ``dispatcher`` did not deliver: each failure (handed out once), and
    at the run's end (``final``: after its last wait for them) what a sender still had queued or in flight."""
    lines = [problem_warning(channel, event, result, spool_path) for channel, event, result in dispatcher.problems()]
    if final:
        lines += [unfinished_warning(channel, items, dispatcher.wait_limit) for channel, items in dispatcher.unfinished()]
    return lines


def unfinished_warning(channel, items, wait_limit):
    """The warning for a sender the run stopped waiting for (``items``: [(event, spooled)] it had queued or was
    sending): none of them is known to be delivered."""
    events = ', '.join(repr(event) for event, dummy in items)
    spooled = [event for event, kept in items if kept]
    where = ('; %s in the spool for the replay' % ('it is' if len(spooled) == 1 else 'they are')) if spooled else ''
    if len(spooled) < len(items):
        where += '; notices are not spooled'
    if channel == 'webhook':
        setting = 'webhook_url / FAILSAFE_WEBHOOK_URL'
    else:
        setting = CHANNEL_SETTINGS.get(channel, channel)
    return ('%s alert(s) %s not delivered: queued or being sent when the run stopped waiting for the channels '
            '(alert_wait_limit, %g s)%s (setting %s)' % (channel, events, wait_limit, where, setting))
