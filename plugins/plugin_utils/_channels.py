# -*- coding: utf-8 -*-
# Private to this collection: not a public API.
# Copyright: Contributors to failsafe.deploy
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Alert channels of the auto_rollback callback, each speaking one provider's own API.

- ``PagerDutyChannel``: Events API v2. One ``dedup_key`` per deployment, release and run: ``trigger`` (error) on
  ``deploy_failed``, ``resolve`` on ``rolled_back``, a ``critical`` re-trigger on ``rollback_failed``; a change event
  (``/v2/change/enqueue``) for each deploy that ends.
- ``SlackChannel``: incoming webhook with Block Kit, kept within Slack's limits (50 blocks, 3,000 characters a
  section text).
- ``TeamsChannel``: Workflows webhook with an Adaptive Card 1.4, kept under 28 KB.
- ``EmailChannel``: SMTP with STARTTLS and AUTH (smtplib): subject with event, release and hosts; a plain-text body
  and an HTML alternative.
- ``AppriseChannel``: the Apprise URLs configured, when the optional ``apprise`` package is installed.

Every channel posts with a timeout per request, retries connection errors, timeouts, 429 and 5xx with exponential
backoff (never another 4xx), and stops when its total time limit for the run is spent. ``send()`` returns a
``SendResult`` (or None when the event means nothing to that channel) and never raises; errors never carry the
URL or the key. The spool stays the record of every alert; channels are best effort on top of it.
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import email.message
import email.utils
import hashlib
import html
import http.client
import json
import logging
import re
import smtplib
import socket
import ssl
import threading
import time
import urllib.error
import urllib.request

from ansible_collections.failsafe.deploy.plugins.plugin_utils._alerts import USER_AGENT, SendResult, TimeBudget
from ansible_collections.failsafe.deploy.plugins.plugin_utils._evidence import details_lines
from ansible_collections.failsafe.deploy.plugins.plugin_utils._redact import Redactor

PAGERDUTY_URL = 'https://events.pagerduty.com'
PAGERDUTY_DEDUP_MAX = 255
PAGERDUTY_SUMMARY_MAX = 1024
SLACK_MAX_BLOCKS = 50
SLACK_SECTION_MAX = 3000
SLACK_HEADER_MAX = 150
SLACK_FIELD_MAX = 2000
SLACK_MAX_FIELDS = 10
TEAMS_MAX_BYTES = 28 * 1024
# Margin under the documented limit: the service counts its own envelope too.
TEAMS_BUDGET_BYTES = 26 * 1024

DEFAULT_TIMEOUT = 1.0
DEFAULT_RETRIES = 2
DEFAULT_TIME_LIMIT = 3.0

_TITLES = {
    'deploy_failed': 'Deploy failed',
    'deploy_interrupted': 'Deploy interrupted',
    'rolled_back': 'Rolled back',
    'rollback_failed': 'ROLLBACK FAILED',
    'rollback_deferred': 'Rollback deferred to the workflow',
    'rollback_skipped': 'Rollback skipped',
    'failure_rescued': 'Failure rescued',
    'deploy_committed': 'Deploy committed',
}


def _retryable(status):
    return status == 429 or 500 <= status <= 599


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect would re-send the payload (and the key) somewhere else: treat it as an error."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


class Channel(TimeBudget):
    """Base of the channels: bounded, retried JSON POSTs. Subclasses build the requests for one alert."""

    name = 'channel'
    setting = None
    # False for a channel that takes only notices (never alerts): the dispatcher neither sends nor spools alerts
    # for it.
    takes_alerts = True

    def __init__(self, timeout=DEFAULT_TIMEOUT, retries=DEFAULT_RETRIES, time_limit=DEFAULT_TIME_LIMIT,
                 backoff=0.2, max_backoff=2.0, redactor=None, sleep=time.sleep, clock=time.monotonic):
        self.timeout = max(0.05, float(timeout))
        self.retries = max(0, int(retries))
        self._start_budget(max(0.0, float(time_limit)))
        self.backoff = float(backoff)
        self.max_backoff = float(max_backoff)
        self._redactor = redactor or Redactor()
        self._sleep = sleep
        self._clock = clock
        self._lock = threading.Lock()
        self._opener = urllib.request.build_opener(_NoRedirect())

    def __repr__(self):
        return '<%s channel>' % self.name

    # budget -----------------------------------------------------------------------------------------------
    def max_duration(self):
        return self.remaining() + 0.5

    # sending ------------------------------------------------------------------------------------------------
    def requests(self, payload):
        """[(url, body dict)] for one alert; empty when the event means nothing to this channel."""
        raise NotImplementedError

    def send(self, payload):
        start = self._clock()
        try:
            requests = self.requests(payload)
        except Exception as exc:  # pylint: disable=broad-except
            return SendResult(False, 0, None, self._redactor.text('could not build the message: %s: %s'
                                                                  % (type(exc).__name__, exc)), 0.0)
        if not requests:
            return None
        attempts = 0
        status = None
        for url, body in requests:
            result = self._deliver(url, body)
            attempts += result.attempts
            status = result.status
            if not result.ok:
                return SendResult(False, attempts, status, result.error, round(self._clock() - start, 3))
        return SendResult(True, attempts, status, None, round(self._clock() - start, 3))

    def _deliver(self, target, body):
        """Deliver one request of an alert; subclasses that do not POST JSON override it."""
        return self._post(target, body)

    def _post(self, url, body):
        """One JSON POST with retries, bounded by what is left of the time limit."""
        try:
            data = json.dumps(body, sort_keys=True, default=str).encode('utf-8')
        except (TypeError, ValueError) as exc:
            return SendResult(False, 0, None, 'message is not JSON serialisable: %s' % exc, 0.0)
        headers = {'Content-Type': 'application/json', 'User-Agent': USER_AGENT}
        return self._retrying(lambda timeout: self._attempt(url, data, headers, timeout))

    def _retrying(self, attempt_once):
        """Call ``attempt_once(timeout)`` -> (status, error or None, retry?) until it succeeds, must not be retried,
        the retries are used up or the time limit is spent."""
        attempts = 0
        status = None
        error = None
        for attempt in range(self.retries + 1):
            stop, left = self._turn(attempt, error)
            if stop:
                error = stop
                break
            attempts += 1
            started = self._clock()
            status, error, retry = attempt_once(min(self.timeout, left))
            self._charge(self._clock() - started)
            if error is None:
                return SendResult(True, attempts, status, None, 0.0)
            if not retry:
                break
        return SendResult(False, attempts, status, self._redactor.text(error), 0.0)

    def _attempt(self, url, data, headers, timeout):
        """(status, error or None, retry?) of one request. Never raises."""
        try:
            request = urllib.request.Request(url, data=data, headers=headers, method='POST')
            with self._opener.open(request, timeout=timeout) as response:
                status = response.getcode()
                response.read(65536)
            if 200 <= status < 300:
                return status, None, False
            return status, 'HTTP %s' % status, _retryable(status)
        except urllib.error.HTTPError as exc:
            status = exc.code
            try:
                exc.close()
            except Exception:  # pylint: disable=broad-except
                pass
            return status, 'HTTP %s %s' % (exc.code, exc.reason), _retryable(status)
        except (socket.timeout, TimeoutError):
            return None, 'timed out after %.1f s' % timeout, True
        except urllib.error.URLError as exc:
            if isinstance(exc.reason, (socket.timeout, TimeoutError)):
                return None, 'timed out after %.1f s' % timeout, True
            return None, 'connection failed: %s' % (exc.reason,), True
        except (OSError, ValueError, http.client.HTTPException) as exc:
            return None, '%s: %s' % (type(exc).__name__, exc), True
        except Exception as exc:  # pylint: disable=broad-except
            return None, '%s: %s' % (type(exc).__name__, exc), False


# Message content shared by the chat channels ---------------------------------------------------------------

def _clip(text, limit, tail='...'):
    text = '' if text is None else str(text)
    if len(text) <= limit:
        return text
    return text[:max(0, limit - len(tail))] + tail


def title_of(payload):
    event = payload.get('event') or 'alert'
    return _TITLES.get(event, event.replace('_', ' ').capitalize())


def deployment_name(payload):
    """The deployment: the playbook's file name without its extension (the callback sees nothing better)."""
    playbook = payload.get('playbook') or ''
    name = re.sub(r'\.ya?ml$', '', playbook.rstrip('/').rsplit('/', 1)[-1])
    return name or 'deploy'


def _join(values):
    if isinstance(values, (list, tuple)):
        return ', '.join(str(v) for v in values) or None
    return values or None


def facts_of(payload):
    """[(label, value)] worth showing, in a fixed order; empty values left out."""
    facts = [
        ('Deployment', deployment_name(payload)),
        ('Release', _join(payload.get('releases'))),
        ('Previous release', _join(payload.get('previous_releases'))),
        ('Build', payload.get('build')),
        ('Severity', payload.get('severity')),
        ('Cause', payload.get('cause')),
        ('Host', payload.get('host')),
        ('Task', payload.get('task')),
        ('Outcome', payload.get('outcome')),
        ('Rollback duration', '%s s' % payload['duration'] if payload.get('duration') is not None else None),
        ('Incident', payload.get('incident_id')),
        ('Run id', payload.get('run_id')),
        ('Controller', payload.get('controller')),
        ('Report', payload.get('report')),
        ('At', payload.get('at')),
    ]
    return [(label, str(value)) for label, value in facts if value not in (None, '', [])]


def host_lines(payload):
    """One line per host the alert is about: its rollback status when known."""
    per_host = payload.get('per_host')
    if isinstance(per_host, dict) and per_host:
        return ['%s: %s' % (host, status) for host, status in per_host.items()]
    hosts = payload.get('hosts')
    if isinstance(hosts, (list, tuple)):
        return [str(h) for h in hosts]
    return []


def details_of(payload):
    """The failure's own words: message, reason, evidence, the failed task's details (stderr tail, HTTP status and
    body, failed checks) and the answer of the dependency probes."""
    parts = []
    answer = payload.get('was_it_us')
    if isinstance(answer, dict) and answer.get('text'):
        parts.append(str(answer['text']))
    for key in ('message', 'reason'):
        if payload.get(key):
            parts.append(str(payload[key]))
    evidence = payload.get('evidence')
    if evidence and not isinstance(evidence, str):
        evidence = json.dumps(evidence, sort_keys=True, default=str)
    if evidence and evidence != payload.get('message'):
        parts.append(str(evidence))
    if isinstance(payload.get('details'), dict):
        parts.extend(details_lines(payload['details']))
    return '\n'.join(parts)


def fit_lines(lines, limit, noun='hosts', bullet=''):
    """Join ``lines`` within ``limit`` characters; what does not fit becomes '... and N more <noun>'."""
    out = []
    used = 0
    for index, line in enumerate(lines):
        line = bullet + _clip(line, 300)
        rest = len(lines) - index - 1
        more = '\n... and %d more %s' % (rest, noun) if rest else ''
        if used + len(line) + 1 + len(more) <= limit:
            out.append(line)
            used += len(line) + 1
            continue
        return '\n'.join(out + ['... and %d more %s' % (len(lines) - index, noun)])
    return '\n'.join(out)


# PagerDuty -------------------------------------------------------------------------------------------------

class PagerDutyChannel(Channel):
    """PagerDuty Events API v2, written directly so that one incident follows the deploy through its rollback."""

    name = 'pagerduty'
    setting = 'FAILSAFE_PAGERDUTY_ROUTING_KEY'

    def __init__(self, routing_key, url=PAGERDUTY_URL, **kwargs):
        super(PagerDutyChannel, self).__init__(**kwargs)
        self._routing_key = routing_key
        self._redactor.add_secret(routing_key)
        self._base = (url or PAGERDUTY_URL).rstrip('/')
        self._dedup_keys = {}

    def dedup_key(self, payload):
        """One key per deployment, release and run, the same for every event of that run (<= 255 chars)."""
        run = payload.get('run_id') or payload.get('incident_id') or ''
        with self._lock:
            if run in self._dedup_keys:
                return self._dedup_keys[run]
        key = 'failsafe.deploy/%s/%s/%s' % (deployment_name(payload), _join(payload.get('releases')) or '-', run)
        if len(key) > PAGERDUTY_DEDUP_MAX:
            digest = hashlib.sha256(key.encode('utf-8')).hexdigest()[:16]
            key = key[:PAGERDUTY_DEDUP_MAX - len(digest) - 1] + '~' + digest
        with self._lock:
            return self._dedup_keys.setdefault(run, key)

    def _event(self, payload, action, severity=None):
        body = {'routing_key': self._routing_key, 'event_action': action, 'dedup_key': self.dedup_key(payload),
                'client': 'failsafe.deploy'}
        if action == 'trigger':
            summary = '%s: %s' % (title_of(payload), payload.get('summary') or deployment_name(payload))
            body['payload'] = {
                'summary': _clip(summary, PAGERDUTY_SUMMARY_MAX),
                'source': _clip(payload.get('controller') or payload.get('source') or 'failsafe.deploy', 255),
                'severity': severity,
                'timestamp': payload.get('at'),
                'component': deployment_name(payload),
                'group': _join(payload.get('releases')),
                'class': payload.get('cause') or payload.get('event'),
                'custom_details': _details(payload),
            }
            # optional fields are left out rather than sent as null
            body['payload'] = dict((k, v) for k, v in body['payload'].items() if v not in (None, ''))
        return self._base + '/v2/enqueue', body

    def _change(self, payload):
        summary = '%s %s: %s' % (deployment_name(payload), _join(payload.get('releases')) or '',
                                 title_of(payload).lower())
        body = {'routing_key': self._routing_key,
                'payload': {'summary': _clip(summary, PAGERDUTY_SUMMARY_MAX),
                            'source': _clip(payload.get('controller') or 'failsafe.deploy', 255),
                            'timestamp': payload.get('at'),
                            'custom_details': _details(payload)}}
        body['payload'] = dict((k, v) for k, v in body['payload'].items() if v not in (None, ''))
        return self._base + '/v2/change/enqueue', body

    def requests(self, payload):
        event = payload.get('event')
        if event in ('deploy_failed', 'deploy_interrupted'):
            return [self._event(payload, 'trigger', 'error')]
        if event == 'rolled_back':
            return [self._event(payload, 'resolve'), self._change(payload)]
        if event == 'rollback_failed':
            return [self._event(payload, 'trigger', 'critical'), self._change(payload)]
        if event == 'failure_rescued':
            return [self._event(payload, 'resolve')]
        if event in ('deploy_committed', 'rollback_deferred', 'rollback_skipped'):
            return [self._change(payload)]
        return []


def _details(payload):
    keep = ('event', 'incident_id', 'run_id', 'releases', 'previous_releases', 'build', 'host', 'task', 'role', 'cause',
            'message', 'outcome', 'reason', 'hosts', 'per_host', 'duration', 'report', 'at', 'details', 'was_it_us')
    details = dict((k, payload[k]) for k in keep if payload.get(k) not in (None, '', [], {}))
    for key in ('message', 'reason'):
        if key in details:
            details[key] = _clip(details[key], 2000)
    hosts = details.get('hosts')
    if isinstance(hosts, list) and len(hosts) > 100:
        details['hosts'] = hosts[:100] + ['... and %d more hosts' % (len(hosts) - 100)]
    per_host = details.get('per_host')
    if isinstance(per_host, dict) and len(per_host) > 100:
        items = list(per_host.items())
        details['per_host'] = dict(items[:100])
        details['per_host_more'] = len(items) - 100
    return details


class WebhookChannel(Channel):
    """A channel that posts to one webhook URL. The URL is a secret: it is redacted wherever it would appear."""

    def __init__(self, url, **kwargs):
        super(WebhookChannel, self).__init__(**kwargs)
        self._url = url
        self._redactor.add_secret(url)


# Slack -----------------------------------------------------------------------------------------------------

def _mrkdwn(text):
    return str(text).replace('&', '&amp;').replace('<', '&lt;').replace('>', '&gt;')


class SlackChannel(WebhookChannel):
    """Slack incoming webhook, Block Kit within Slack's limits."""

    name = 'slack'
    setting = 'FAILSAFE_SLACK_WEBHOOK_URL'

    def message(self, payload):
        title = title_of(payload)
        icon = ':rotating_light:' if payload.get('severity') in ('critical', 'error') else ':warning:'
        if payload.get('severity') == 'info':
            icon = ':information_source:'
        blocks = [{'type': 'header', 'text': {'type': 'plain_text', 'text': _clip('%s %s' % (
            title, deployment_name(payload)), SLACK_HEADER_MAX), 'emoji': True}}]
        summary = payload.get('summary') or title
        blocks.append({'type': 'section', 'text': {'type': 'mrkdwn', 'text': _clip(
            '%s *%s*' % (icon, _mrkdwn(summary)), SLACK_SECTION_MAX)}})
        fields = [{'type': 'mrkdwn', 'text': _clip('*%s*\n%s' % (label, _mrkdwn(value)), SLACK_FIELD_MAX)}
                  for label, value in facts_of(payload)]
        for start in range(0, len(fields), SLACK_MAX_FIELDS):
            blocks.append({'type': 'section', 'fields': fields[start:start + SLACK_MAX_FIELDS]})
        details = details_of(payload)
        if details:
            # ``` fences cost 8 characters of the section's 3,000
            blocks.append({'type': 'section', 'text': {'type': 'mrkdwn', 'text': '```%s```' % _clip(
                _mrkdwn(details), SLACK_SECTION_MAX - 8, tail='\n... (cut)')}})
        hosts = host_lines(payload)
        if hosts:
            head = '*Hosts (%d)*\n' % len(hosts)
            blocks.append({'type': 'section', 'text': {'type': 'mrkdwn', 'text': head + fit_lines(
                [_mrkdwn(h) for h in hosts], SLACK_SECTION_MAX - len(head), bullet='\u2022 ')}})
        blocks.append({'type': 'context', 'elements': [{'type': 'mrkdwn', 'text': _clip(_mrkdwn(
            'failsafe.deploy | incident %s | %s' % (payload.get('incident_id'), payload.get('at'))), 300)}]})
        if len(blocks) > SLACK_MAX_BLOCKS:
            blocks = blocks[:SLACK_MAX_BLOCKS - 1] + [blocks[-1]]
        return {'text': _clip('%s: %s' % (title, summary), SLACK_SECTION_MAX), 'blocks': blocks}

    def requests(self, payload):
        if payload.get('event') == 'deploy_committed':
            return []
        return [(self._url, self.message(payload))]


# Microsoft Teams -------------------------------------------------------------------------------------------

class StakeholderSlackChannel(WebhookChannel):
    """The stakeholder notices (``_notices.py``) to a Slack incoming webhook of their own: the subject in bold and
    the text, as one section, never an alert."""

    name = 'stakeholders_slack'
    setting = 'FAILSAFE_STAKEHOLDER_SLACK_WEBHOOK_URL'
    takes_alerts = False

    def message(self, payload):
        subject = str(payload.get('notice_subject') or '')
        text = '*%s*\n%s' % (_mrkdwn(subject), _mrkdwn(str(payload.get('notice_text') or '')))
        return {'text': _clip(subject, SLACK_SECTION_MAX),
                'blocks': [{'type': 'section', 'text': {'type': 'mrkdwn', 'text': _clip(text, SLACK_SECTION_MAX)}}]}

    def requests(self, payload):
        if payload.get('event') != 'stakeholder_notice':
            return []
        return [(self._url, self.message(payload))]


class TeamsChannel(WebhookChannel):
    """Microsoft Teams Workflows webhook: one Adaptive Card 1.4 in a message, under 28 KB."""

    name = 'teams'
    setting = 'FAILSAFE_TEAMS_WEBHOOK_URL'

    @staticmethod
    def _card(payload, details_max, hosts_max):
        severity = payload.get('severity')
        color = {'critical': 'Attention', 'error': 'Attention', 'warning': 'Warning'}.get(severity, 'Default')
        body = [
            {'type': 'TextBlock', 'text': _clip('%s: %s' % (title_of(payload), deployment_name(payload)), 200),
             'weight': 'Bolder', 'size': 'Medium', 'color': color, 'wrap': True},
            {'type': 'TextBlock', 'text': _clip(payload.get('summary') or title_of(payload), 1000), 'wrap': True},
            {'type': 'FactSet', 'facts': [{'title': label, 'value': _clip(value, 500)}
                                          for label, value in facts_of(payload)]},
        ]
        details = details_of(payload)
        if details and details_max:
            body.append({'type': 'TextBlock', 'text': _clip(details, details_max, tail='\n... (cut)'),
                         'wrap': True, 'fontType': 'Monospace', 'size': 'Small'})
        hosts = host_lines(payload)
        if hosts:
            body.append({'type': 'TextBlock', 'text': 'Hosts (%d)' % len(hosts), 'weight': 'Bolder'})
            # Adaptive Card markdown: a blank line between lines keeps them apart
            body.append({'type': 'TextBlock', 'text': fit_lines(hosts, hosts_max).replace('\n', '\n\n'),
                         'wrap': True, 'size': 'Small'})
        card = {'$schema': 'http://adaptivecards.io/schemas/adaptive-card.json', 'type': 'AdaptiveCard',
                'version': '1.4', 'body': body, 'msteams': {'width': 'Full'}}
        return {'type': 'message', 'attachments': [{'contentType': 'application/vnd.microsoft.card.adaptive',
                                                    'contentUrl': None, 'content': card}]}

    def message(self, payload):
        """The card, shrunk (details, then hosts) until the message is under the size budget."""
        details_max, hosts_max = 8000, 12000
        while True:
            message = self._card(payload, details_max, hosts_max)
            size = len(json.dumps(message, sort_keys=True, default=str).encode('utf-8'))
            if size <= TEAMS_BUDGET_BYTES or (details_max == 0 and hosts_max <= 200):
                return message
            details_max = details_max // 2 if details_max > 500 else 0
            if details_max == 0:
                hosts_max = max(200, hosts_max // 2)

    def requests(self, payload):
        if payload.get('event') == 'deploy_committed':
            return []
        return [(self._url, self.message(payload))]


# Email (SMTP) -----------------------------------------------------------------------------------------------

EMAIL_SUBJECT_MAX = 200
EMAIL_SUBJECT_HOSTS = 3


def hosts_of(payload):
    """The hosts an alert is about, in order: its failed host, then the rollback's hosts."""
    hosts = []
    if payload.get('host'):
        hosts.append(str(payload['host']))
    per_host = payload.get('per_host')
    more = list(per_host) if isinstance(per_host, dict) else (payload.get('hosts') or [])
    for host in more if isinstance(more, (list, tuple)) else []:
        if str(host) not in hosts:
            hosts.append(str(host))
    return hosts


def email_subject(payload):
    """'[failsafe.deploy] <event>: <deployment> <release> on <hosts>', on one line, at most 200 characters."""
    hosts = hosts_of(payload)
    shown = ', '.join(hosts[:EMAIL_SUBJECT_HOSTS])
    if len(hosts) > EMAIL_SUBJECT_HOSTS:
        shown += ' and %d more' % (len(hosts) - EMAIL_SUBJECT_HOSTS)
    subject = '[failsafe.deploy] %s: %s %s' % (title_of(payload), deployment_name(payload),
                                               _join(payload.get('releases')) or '')
    subject = subject.rstrip() + (' on %s' % shown if shown else '')
    return _clip(re.sub(r'[\r\n\t]+', ' ', subject), EMAIL_SUBJECT_MAX)


def email_text(payload):
    """The plain-text body: title, summary, facts, details, hosts."""
    title = '%s: %s' % (title_of(payload), deployment_name(payload))
    lines = [title, '=' * len(title), '', str(payload.get('summary') or title_of(payload)), '']
    width = max([len(label) for label, dummy in facts_of(payload)] or [0])
    lines.extend('%s  %s' % ((label + ':').ljust(width + 1), value) for label, value in facts_of(payload))
    details = details_of(payload)
    if details:
        lines.extend(['', 'Details', '-------', _clip(details, 20000, tail='\n... (cut)')])
    hosts = host_lines(payload)
    if hosts:
        lines.extend(['', 'Hosts (%d)' % len(hosts), '-' * len('Hosts (%d)' % len(hosts)),
                      fit_lines(hosts, 20000, bullet='- ')])
    lines.extend(['', '-- ', 'failsafe.deploy auto_rollback, incident %s' % payload.get('incident_id')])
    return '\n'.join(lines) + '\n'


def email_html(payload):
    """The HTML alternative of ``email_text``: the same content, every value escaped."""
    esc = html.escape
    color = {'critical': '#b00020', 'error': '#b00020', 'warning': '#b26a00'}.get(payload.get('severity'), '#333')
    parts = ['<html><body style="font-family: sans-serif">',
             '<h2 style="color: %s">%s: %s</h2>' % (color, esc(title_of(payload)), esc(deployment_name(payload))),
             '<p>%s</p>' % esc(str(payload.get('summary') or title_of(payload))), '<table>']
    parts.extend('<tr><th align="left">%s</th><td>%s</td></tr>' % (esc(label), esc(value))
                 for label, value in facts_of(payload))
    parts.append('</table>')
    details = details_of(payload)
    if details:
        parts.append('<h3>Details</h3><pre>%s</pre>' % esc(_clip(details, 20000, tail='\n... (cut)')))
    hosts = host_lines(payload)
    if hosts:
        parts.append('<h3>Hosts (%d)</h3><ul>%s</ul>' % (len(hosts), ''.join(
            '<li>%s</li>' % esc(line) for line in fit_lines(hosts, 20000).split('\n'))))
    parts.append('<p style="color: #666">failsafe.deploy auto_rollback, incident %s</p></body></html>'
                 % esc(str(payload.get('incident_id'))))
    return '\n'.join(parts)


class EmailChannel(Channel):
    """Email over SMTP: STARTTLS (on by default, certificate and host name verified) and AUTH, with the channel's
    timeout, retries and time limit. The password is never sent without TLS, never logged and never recorded."""

    name = 'email'
    setting = 'FAILSAFE_EMAIL_HOST'

    def __init__(self, host, sender, recipients, port=587, username=None, password=None, starttls=True,
                 ca_file=None, html_body=True, **kwargs):
        super(EmailChannel, self).__init__(**kwargs)
        self.host = host
        self.port = int(port or 587)
        self.sender = sender
        self.recipients = [str(r).strip() for r in (recipients or ()) if str(r).strip()]
        self.username = username or None
        self._password = password or None
        self.starttls = bool(starttls)
        self.ca_file = ca_file or None
        self.html_body = bool(html_body)
        self._redactor.add_secret(password)

    def __repr__(self):
        return '<email channel %s:%s>' % (self.host, self.port)

    def message(self, payload):
        msg = email.message.EmailMessage()
        msg['Subject'] = email_subject(payload)
        msg['From'] = self.sender
        msg['To'] = ', '.join(self.recipients)
        msg['Date'] = email.utils.formatdate(localtime=False, usegmt=True)
        # One Message-ID per alert, so that a replayed alert is recognised as the same message.
        ident = re.sub(r'[^A-Za-z0-9._-]', '', str(payload.get('alert_id') or '')) or None
        msg['Message-ID'] = ('<%s@failsafe.deploy>' % ident) if ident else email.utils.make_msgid(
            domain='failsafe.deploy')
        msg['X-Failsafe-Event'] = str(payload.get('event') or 'alert')
        if payload.get('incident_id'):
            msg['X-Failsafe-Incident'] = str(payload['incident_id'])
        msg['Auto-Submitted'] = 'auto-generated'
        msg.set_content(email_text(payload))
        if self.html_body:
            msg.add_alternative(email_html(payload), subtype='html')
        return msg

    def requests(self, payload):
        if payload.get('event') == 'deploy_committed':
            return []
        return [(None, self.message(payload))]

    def _deliver(self, target, body):
        return self._retrying(lambda timeout: self._send_once(body, timeout))

    def _tls_context(self):
        return ssl.create_default_context(cafile=self.ca_file)

    def _send_once(self, msg, timeout):
        """(status, error or None, retry?) of one SMTP session. Never raises."""
        deadline = self._clock() + timeout
        client = None

        def step():
            left = deadline - self._clock()
            if left <= 0:
                raise socket.timeout('timed out')
            if client is not None and client.sock is not None:
                client.sock.settimeout(left)

        try:
            client = smtplib.SMTP(self.host, self.port, timeout=timeout)
            step()
            client.ehlo()
            if self.starttls:
                if not client.has_extn('starttls'):
                    return None, 'the SMTP server does not offer STARTTLS (setting email_starttls)', False
                step()
                client.starttls(context=self._tls_context())
                step()
                client.ehlo()
            if self.username:
                if not self.starttls and self.host not in ('localhost', '127.0.0.1', '::1'):
                    return None, ('will not send the SMTP password without TLS (settings email_starttls, '
                                  'email_username)'), False
                step()
                client.login(self.username, self._password or '')
            step()
            refused = client.send_message(msg, from_addr=self.sender, to_addrs=self.recipients)
            try:
                step()
                client.quit()
            except (smtplib.SMTPException, OSError):
                pass
            if refused:
                return 250, 'refused recipients: %s' % ', '.join(sorted(refused)), False
            return 250, None, False
        except smtplib.SMTPAuthenticationError as exc:
            return exc.smtp_code, 'SMTP authentication failed: %s' % exc.smtp_code, False
        except smtplib.SMTPRecipientsRefused as exc:
            return 550, 'every recipient was refused: %s' % ', '.join(sorted(exc.recipients)), False
        except smtplib.SMTPResponseException as exc:
            reply = exc.smtp_error.decode('utf-8', 'replace') if isinstance(exc.smtp_error, bytes) else exc.smtp_error
            return exc.smtp_code, 'SMTP %s %s' % (exc.smtp_code, _clip(reply, 200)), 400 <= exc.smtp_code < 500
        except (socket.timeout, TimeoutError):
            return None, 'timed out after %.1f s' % timeout, True
        except ssl.SSLError as exc:
            return None, 'TLS failed: %s' % (getattr(exc, 'reason', None) or type(exc).__name__), False
        except smtplib.SMTPNotSupportedError as exc:
            return None, 'SMTP: %s' % exc, False
        except (smtplib.SMTPException, OSError) as exc:
            return None, 'connection failed: %s: %s' % (type(exc).__name__, exc), True
        except Exception as exc:  # pylint: disable=broad-except
            return None, '%s: %s' % (type(exc).__name__, exc), False
        finally:
            if client is not None:
                try:
                    client.close()
                except Exception:  # pylint: disable=broad-except
                    pass


class StakeholderEmailChannel(EmailChannel):
    """The stakeholder notices (``_notices.py``) by email: plain text only, written from the notice's subject and
    text, never from an alert. Same SMTP server, STARTTLS, AUTH, timeouts and time limit as the email channel."""

    name = 'stakeholders'
    setting = 'FAILSAFE_STAKEHOLDER_EMAIL_TO'
    takes_alerts = False

    def __repr__(self):
        return '<stakeholder email channel %s:%s>' % (self.host, self.port)

    def message(self, payload):
        msg = email.message.EmailMessage()
        msg['Subject'] = _clip(re.sub(r'[\r\n\t]+', ' ', str(payload.get('notice_subject') or '')),
                               EMAIL_SUBJECT_MAX)
        msg['From'] = self.sender
        msg['To'] = ', '.join(self.recipients)
        msg['Date'] = email.utils.formatdate(localtime=False, usegmt=True)
        msg['Message-ID'] = email.utils.make_msgid(domain='failsafe.deploy')
        msg['X-Failsafe-Notice'] = str(payload.get('notice') or '')
        msg['Auto-Submitted'] = 'auto-generated'
        msg.set_content(str(payload.get('notice_text') or ''))
        return msg

    def requests(self, payload):
        if payload.get('event') != 'stakeholder_notice':
            return []
        return [(None, self.message(payload))]


# Apprise (optional) ------------------------------------------------------------------------------------------

APPRISE_MISSING = ('apprise_urls (FAILSAFE_APPRISE_URLS) is set but the apprise package is not installed on the '
                   'controller (pip install apprise): the Apprise channel is off')


def apprise_module():
    """The apprise module, or None when it is not installed."""
    try:
        import apprise  # pylint: disable=import-outside-toplevel
    except ImportError:
        return None
    return apprise


def split_urls(value):
    """Apprise URLs from one setting: separated by whitespace (each entry may hold several, comma-separated, as
    Apprise itself allows)."""
    if isinstance(value, (list, tuple)):
        value = ' '.join(str(v) for v in value)
    return [url for url in re.split(r'\s+', value or '') if url]


def in_this_thread(module):
    """An AppriseAsset under which Apprise sends from the calling thread (the channel's daemon thread): no
    service time limit and no parallel mode, either of which hands the send to a pool thread that the interpreter
    waits for at its exit, past the run's alert_wait_limit. The channel's own timeouts bound the send."""
    try:
        return module.AppriseAsset(async_mode=False, service_timeout=0)
    except (AttributeError, TypeError):  # Apprise 1.x has neither a service time limit nor its keyword
        return module.AppriseAsset(async_mode=False)


class AppriseChannel(Channel):
    """Any service Apprise knows (``apprise.Apprise().add(url).notify(title, body)``). Optional: used only when the
    apprise package is installed. Apprise reports only success or failure, so a failure is retried within the
    channel's retries and time limit; its log lines are kept out of the run's output."""

    name = 'apprise'
    setting = 'FAILSAFE_APPRISE_URLS'

    def __init__(self, urls, module=None, **kwargs):
        super(AppriseChannel, self).__init__(**kwargs)
        self._urls = split_urls(urls)
        for url in self._urls:
            self._redactor.add_secret(url)
        self._apprise = module or apprise_module()
        logger = logging.getLogger('apprise')
        logger.propagate = False
        if not any(isinstance(h, logging.NullHandler) for h in logger.handlers):
            logger.addHandler(logging.NullHandler())
        # Apprise loads its service plugins on first use, which takes seconds on a busy machine: done here, when
        # the channel is set up, and not inside the time limit of the first alert
        if self._apprise is not None and self._urls:
            try:
                self._apprise.Apprise().add(self._urls[0])
            except Exception:  # pylint: disable=broad-except
                pass  # a URL Apprise does not understand is reported by the first send

    def __repr__(self):
        return '<apprise channel, %d URL(s)>' % len(self._urls)

    def requests(self, payload):
        if payload.get('event') == 'deploy_committed':
            return []
        title = '%s: %s %s' % (title_of(payload), deployment_name(payload), _join(payload.get('releases')) or '')
        return [(None, {'title': title.rstrip(), 'body': email_text(payload)})]

    def _deliver(self, target, body):
        return self._retrying(lambda timeout: self._notify_once(body, timeout))

    def _notify_once(self, body, timeout):
        if self._apprise is None:
            return None, 'the apprise package is not installed', False
        try:
            notifier = self._apprise.Apprise(asset=in_this_thread(self._apprise))
            for index, url in enumerate(self._urls):
                if not notifier.add(url):
                    return None, 'Apprise URL %d of %s is not understood (setting apprise_urls)' % (
                        index + 1, len(self._urls)), False
            for service in notifier:
                service.socket_connect_timeout = timeout
                service.socket_read_timeout = timeout
            with self._apprise.LogCapture(level=logging.WARNING) as captured:
                ok = notifier.notify(title=_clip(body['title'], 250), body=body['body'],
                                     body_format=self._apprise.NotifyFormat.TEXT)
            if ok:
                return None, None, False
            said = [line for line in captured.getvalue().splitlines() if line.strip()]
            return None, 'Apprise could not notify every URL%s' % (
                (': ' + _clip(said[-1], 300)) if said else ''), True
        except Exception as exc:  # pylint: disable=broad-except
            return None, 'Apprise: %s: %s' % (type(exc).__name__, exc), False


def build_channels(pagerduty_routing_key=None, pagerduty_url=None, slack_webhook_url=None, teams_webhook_url=None,
                   email=None, apprise_urls=None, warn=None, redactor=None, stakeholder_email_to=None,
                   stakeholder_slack_webhook_url=None, **kwargs):
    """The channels that are configured, each with the same timeout, retries and time limit.

    ``email``: a dict of EmailChannel arguments (``host``, ``sender``, ``recipients``, ...) or None; its ``timeout``
    replaces the shared one. ``warn(message)`` is told what is set but cannot work (once per call)."""
    channels = []
    if pagerduty_routing_key:
        channels.append(PagerDutyChannel(pagerduty_routing_key, url=pagerduty_url or PAGERDUTY_URL,
                                         redactor=redactor, **kwargs))
    if slack_webhook_url:
        channels.append(SlackChannel(slack_webhook_url, redactor=redactor, **kwargs))
    if teams_webhook_url:
        channels.append(TeamsChannel(teams_webhook_url, redactor=redactor, **kwargs))
    if email and email.get('host'):
        missing = [name for name, key in (('email_from', 'sender'), ('email_to', 'recipients')) if not email.get(key)]
        if missing:
            if warn:
                warn('email_host is set but %s is not: the email channel is off' % ' and '.join(missing))
        else:
            options = dict(kwargs)
            options.update(email)
            channels.append(EmailChannel(redactor=redactor, **options))
    if apprise_urls:
        if redactor is not None:
            for url in split_urls(apprise_urls):
                redactor.add_secret(url)
        if apprise_module() is None:
            if warn:
                warn(APPRISE_MISSING)
        else:
            channels.append(AppriseChannel(apprise_urls, redactor=redactor, **kwargs))
    if stakeholder_email_to:
        if not (email and email.get('host') and email.get('sender')):
            if warn:
                warn('stakeholder_email_to is set but email_host or email_from is not: no stakeholder notices')
        else:
            options = dict(kwargs)
            options.update(email)
            options.update(recipients=stakeholder_email_to, html_body=False)
            channels.append(StakeholderEmailChannel(redactor=redactor, **options))
    if stakeholder_slack_webhook_url:
        channels.append(StakeholderSlackChannel(stakeholder_slack_webhook_url, redactor=redactor, **kwargs))
    return channels
