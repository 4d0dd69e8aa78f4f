# -*- coding: utf-8 -*-
# Private to this collection: not a public API.
# Copyright: Contributors to failsafe.deploy
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Alert senders for the auto_rollback callback.

- ``WebhookSender``: JSON POST with a timeout per attempt and retries with exponential backoff on connection
  errors, timeouts, HTTP 5xx and 429, within a total time limit for the run (``time_limit``). It never raises and
  never puts its URL in a message (errors are redacted).
- ``SpoolSender``: appends one JSON line per alert to a local file and fsyncs it (the record that survives a dead
  webhook).
- ``AlertDispatcher``: spools at once; the webhook and each provider channel (``_channels.py``) send from a daemon
  thread of their own, so neither a slow receiver nor a dead one delays the play, the rollback or another channel;
  ``flush()`` waits for all of them side by side against one deadline (``wait_limit``, 10 s by default).
- ``alert_payload()``: what an alert of the callback says (the run, the incident, the failure).

The spool stays one JSON line per alert; each line carries an ``alert_id`` and the ``channels`` it was meant for.
What each channel (and the webhook) did with it goes to the delivery ledger beside the spool
(``delivery_path()``: ``alerts.jsonl`` -> ``alerts.delivery.jsonl``), one JSON line per outcome:
``{"record": "delivery", "alert_id", "event", "channel", "status": delivered|failed|not applicable, "attempts",
"error", "at", "replayed"}``. An alert whose line names a channel with no ``delivered`` (or ``not applicable``)
outcome was never received there: ``_replay.py`` sends it again.
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import collections
import http.client
import json
import os
import queue
import socket
import threading
import time
import uuid
import urllib.error
import urllib.request

from ansible_collections.failsafe.deploy.plugins.plugin_utils._incident import controller_identity, utc_iso
from ansible_collections.failsafe.deploy.plugins.plugin_utils._redact import Redactor

SendResult = collections.namedtuple('SendResult', ['ok', 'attempts', 'status', 'error', 'elapsed'])

USER_AGENT = 'failsafe.deploy-auto_rollback'
_RETRY_STATUS = frozenset((408, 425, 429, 500, 502, 503, 504))


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect would re-send the payload somewhere else: treat it as an error instead."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


class TimeBudget:
    """The seconds a sender may spend over the whole run, charged by every attempt of every thread that sends
    through it (``time_limit`` None: no limit, e.g. for a replay run by hand)."""

    time_limit = None

    def _start_budget(self, time_limit):
        self.time_limit = time_limit
        self._spent = 0.0
        self._budget_lock = threading.Lock()

    def remaining(self):
        """Seconds left of the time limit (None when there is none)."""
        if self.time_limit is None:
            return None
        with self._budget_lock:
            return max(0.0, self.time_limit - self._spent)

    def _charge(self, seconds):
        with self._budget_lock:
            self._spent += max(0.0, seconds)

    def _turn(self, attempt, error):
        """Before try ``attempt`` (0 for the first): the pause before a retry, charged to the budget. Returns the
        error to end with when the limit leaves no time for the try (else None), and the seconds left (None: no
        limit)."""
        if attempt:
            pause = min(self.max_backoff, self.backoff * (2 ** (attempt - 1)))
            left = self.remaining()
            if left is not None and pause >= left:
                # the limit is reached, as the error says: what is left is spent, and a later send of the run does
                # not try with a crumb of it
                self._charge(left)
                return '%s; total time limit of %.1f s reached' % (error, self.time_limit), 0.0
            started = self._clock()
            self._sleep(pause)
            self._charge(self._clock() - started)
        left = self.remaining()
        if left is not None and left <= 0.01:
            # too little to try with: the limit is reached, as the error says, and the crumb is spent with it
            self._charge(left)
            return ('%s; ' % error if error else '') + 'total time limit of %.1f s reached' % self.time_limit, 0.0
        return None, left


class WebhookSender(TimeBudget):
    """POST JSON to a webhook. ``send()`` returns a SendResult and never raises."""

    name = 'webhook'

    def __init__(self, url, timeout=5.0, retries=2, backoff=0.5, max_backoff=8.0, redactor=None, headers=None,
                 sleep=time.sleep, time_limit=None, clock=time.monotonic):
        self._url = url
        self.timeout = float(timeout)
        self.retries = max(0, int(retries))
        self.backoff = float(backoff)
        self.max_backoff = float(max_backoff)
        self._start_budget(None if time_limit is None else max(0.0, float(time_limit)))
        self._clock = clock
        self._redactor = redactor or Redactor()
        self._redactor.add_secret(url)
        self._headers = dict(headers or {})
        self._sleep = sleep
        self._opener = urllib.request.build_opener(_NoRedirect())

    def __repr__(self):
        return '<WebhookSender url=%s>' % '<redacted>'

    def max_duration(self):
        """Upper bound of one send(), for callers that wait on it."""
        if self.time_limit is not None:
            return self.remaining() + 0.5
        total = (self.retries + 1) * self.timeout
        for attempt in range(self.retries):
            total += min(self.max_backoff, self.backoff * (2 ** attempt))
        return total + 1.0

    def send(self, payload):
        start = time.time()
        attempts = 0
        status = None
        error = None
        try:
            body = json.dumps(payload, sort_keys=True, default=str).encode('utf-8')
        except (TypeError, ValueError) as exc:
            return SendResult(False, 0, None, 'payload is not JSON serialisable: %s' % exc, 0.0)
        headers = {'Content-Type': 'application/json', 'User-Agent': USER_AGENT}
        headers.update(self._headers)
        for attempt in range(self.retries + 1):
            stop, left = self._turn(attempt, error)
            if stop:
                error = stop
                break
            timeout = self.timeout if left is None else min(self.timeout, left)
            attempts += 1
            retry = False
            started = self._clock()
            try:
                request = urllib.request.Request(self._url, data=body, headers=headers, method='POST')
                with self._opener.open(request, timeout=timeout) as response:
                    status = response.getcode()
                    response.read(65536)
                if 200 <= status < 300:
                    return SendResult(True, attempts, status, None, round(time.time() - start, 3))
                error = 'HTTP %s' % status
                retry = status in _RETRY_STATUS
            except urllib.error.HTTPError as exc:
                status = exc.code
                error = 'HTTP %s %s' % (exc.code, exc.reason)
                retry = exc.code in _RETRY_STATUS
                try:
                    exc.close()
                except Exception:  # pylint: disable=broad-except
                    pass
            except (socket.timeout, TimeoutError):
                error = 'timed out after %.1f s' % timeout
                retry = True
            except urllib.error.URLError as exc:
                reason = exc.reason
                if isinstance(reason, (socket.timeout, TimeoutError)):
                    error = 'timed out after %.1f s' % timeout
                else:
                    error = 'connection failed: %s' % (reason,)
                retry = True
            except (OSError, ValueError, http.client.HTTPException) as exc:
                error = '%s: %s' % (type(exc).__name__, exc)
                retry = True
            except Exception as exc:  # pylint: disable=broad-except
                # never raise out of an alert
                error = '%s: %s' % (type(exc).__name__, exc)
                retry = False
            finally:
                self._charge(self._clock() - started)
            if not retry:
                break
        return SendResult(False, attempts, status, self._redactor.text(error), round(time.time() - start, 3))


def delivery_path(spool_path):
    """The delivery ledger that goes with a spool: ``alerts.jsonl`` -> ``alerts.delivery.jsonl``."""
    if spool_path.endswith('.jsonl'):
        return spool_path[:-len('.jsonl')] + '.delivery.jsonl'
    return spool_path + '.delivery.jsonl'


def _utc_now():
    return time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())


def delivery_record(alert_id, event, channel, result, replayed=False):
    """One line of the delivery ledger for ``result`` (a SendResult, or None: the alert means nothing there)."""
    if result is None:
        status, attempts, error = 'not applicable', 0, None
    else:
        status, attempts, error = ('delivered' if result.ok else 'failed'), result.attempts, result.error
    return {'record': 'delivery', 'alert_id': alert_id, 'event': event, 'channel': channel, 'status': status,
            'attempts': attempts, 'error': error, 'at': _utc_now(), 'replayed': bool(replayed)}


class SpoolSender:
    """Append alerts as JSON lines to ``path`` (mode 0600), fsynced. ``send()`` never raises."""

    name = 'spool'

    def __init__(self, path):
        self.path = path
        self._lock = threading.Lock()

    def send(self, payload):
        with self._lock:
            return self._append(payload)

    def _append(self, payload):
        start = time.time()
        try:
            line = json.dumps(payload, sort_keys=True, default=str) + '\n'
            directory = os.path.dirname(os.path.abspath(self.path))
            os.makedirs(directory, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                data = line.encode('utf-8')
                written = 0
                while written < len(data):
                    written += os.write(fd, data[written:])
                os.fsync(fd)
            finally:
                os.close(fd)
            return SendResult(True, 1, None, None, round(time.time() - start, 3))
        except Exception as exc:  # pylint: disable=broad-except
            return SendResult(False, 1, None, '%s: %s' % (type(exc).__name__, exc), round(time.time() - start, 3))


# the alerts that carry the answer to "was it us or a dependency?" (the dependency probes), when there is one
_WAS_IT_US_EVENTS = ('deploy_failed', 'rolled_back', 'rollback_failed')


def alert_payload(event, severity, run, incident_id, playbook=None, failure=None, was_it_us=None):
    """The payload of one alert of a run (``_incident.DeployRun``), not yet redacted: what every alert says (event,
    severity, times, incident, run, releases, playbook, controller), where and why a ``failure`` happened when it is
    about one, and ``was_it_us`` (the dependency probes' answer) on the alerts that carry it."""
    now = time.time()
    payload = {'event': event, 'severity': severity, 'time': round(now, 3), 'at': utc_iso(now),
               'incident_id': incident_id, 'run_id': run.run_id, 'releases': run.releases,
               'previous_releases': run.previous_releases, 'build': run.build_words, 'playbook': playbook,
               'controller': controller_identity(), 'source': 'failsafe.deploy.auto_rollback'}
    if failure is not None:
        payload.update(dict((key, failure[key]) for key in (
            'host', 'task', 'role', 'path', 'cause', 'evidence', 'message', 'unreachable')))
        payload.update(details=failure.get('details') or None, summary='deploy failed on %s at task %r (cause: %s)' % (
            failure['host'], failure['task'], failure['cause']))
    if was_it_us is not None and event in _WAS_IT_US_EVENTS:
        payload['was_it_us'] = was_it_us
    return payload


DEFAULT_WAIT_LIMIT = 10.0


class AlertDispatcher:
    """Spool every alert at once; post to the webhook and to each channel from a daemon thread of its own.

    Nothing here waits on a receiver: ``send()`` returns once the alert is spooled and queued, so an alert never
    delays the rollback. ``flush()`` waits for all senders side by side against one deadline (``wait_limit``).
    ``problems()`` hands back (once) the failed deliveries so the caller can warn from its own thread.
    """

    def __init__(self, spool=None, webhook=None, channels=(), ledger=None, wait_limit=DEFAULT_WAIT_LIMIT):
        self.spool = spool
        self.webhook = webhook
        if ledger is None and spool is not None:
            ledger = SpoolSender(delivery_path(spool.path))
        self.ledger = ledger
        self.wait_limit = max(0.0, float(wait_limit))
        self.channels = [_ChannelWorker(channel, self._problem, self._delivered) for channel in channels or ()]
        # channels that take notices only (stakeholders) never get an alert, and the spool never names them
        self._alert_workers = [w for w in self.channels if getattr(w.channel, 'takes_alerts', True)]
        self._webhook = _ChannelWorker(webhook, self._problem, self._delivered) if webhook is not None else None
        self.records = []
        self._problems = []
        self._lock = threading.Lock()

    def send(self, payload):
        # One id per alert, for every channel: the ledger and a replay refer to it, receivers can de-duplicate by it.
        payload = dict(payload)
        payload.setdefault('alert_id', uuid.uuid4().hex)
        record = {'event': payload.get('event'), 'at': payload.get('at'), 'alert_id': payload['alert_id'],
                  'spool': 'disabled', 'webhook': 'disabled'}
        with self._lock:
            self.records.append(record)
        if self.spool is not None:
            meant_for = (['webhook'] if self.webhook is not None else []) + [w.name for w in self._alert_workers]
            result = self.spool.send(dict(payload, channels=meant_for))
            record['spool'] = 'written' if result.ok else 'failed'
            if not result.ok:
                self._problem('spool', payload.get('event'), result)
        if self._webhook is not None:
            self._webhook.put(payload, record)
        for worker in self._alert_workers:
            worker.put(payload, record)
        return record

    def notify(self, payload, only=None):
        """Send ``payload`` to the channels only (no spool, no webhook, no ledger): for notices that are not alerts,
        such as the change event of a deploy that committed, or a stakeholder notice. ``only``: the names of the
        channels that get it (default: those that take alerts)."""
        record = {'event': payload.get('event'), 'at': payload.get('at')}
        for worker in self.channels:
            wanted = worker.name in only if only is not None else getattr(worker.channel, 'takes_alerts', True)
            if wanted:
                worker.put(payload, record, ledger=False)
        return record

    def has_channel(self, name):
        return any(w.name == name for w in self.channels)

    def _delivered(self, payload, channel, result):
        """Write what ``channel`` did with a spooled alert to the ledger (never raises)."""
        if self.ledger is None or not payload.get('alert_id'):
            return
        try:
            self.ledger.send(delivery_record(payload['alert_id'], payload.get('event'), channel, result))
        except Exception:  # pylint: disable=broad-except
            pass

    def _problem(self, channel, event, result):
        with self._lock:
            self._problems.append((channel, event, result))

    def problems(self):
        with self._lock:
            out, self._problems = self._problems, []
        return out

    def _senders(self):
        return ([self._webhook] if self._webhook is not None else []) + self.channels

    def pending(self):
        """Names of the senders that still have alerts queued or in flight."""
        return [name for name, dummy in self.unfinished()]

    def unfinished(self):
        """[(sender name, [(event, spooled)])] of the senders that still have something queued or in flight: after
        a ``flush()`` that ran out of time, what the run ends without knowing to be delivered."""
        listed = [(w.name, w.unfinished()) for w in self._senders()]
        return [(name, items) for name, items in listed if items]

    def flush(self, timeout=None):
        """Wait until every sender is done, or out of its own time limit, or ``timeout`` seconds (default
        ``wait_limit``) have passed, whichever comes first: one deadline for all of them, which send side by side.
        True when nothing is pending. What is not sent stays in the spool for the replay."""
        start = time.monotonic()
        deadline = start + (self.wait_limit if timeout is None else max(0.0, float(timeout)))
        workers = self._senders()
        # each sender's own bound, taken now: what is left of its time limit (plus a little)
        own = dict((id(w), start + w.sender_bound()) for w in workers)
        while True:
            waiting = [w for w in workers if w.busy() and time.monotonic() < own[id(w)]]
            if not waiting or time.monotonic() >= deadline:
                break
            time.sleep(0.02)
        return not any(w.busy() for w in workers)


class _ChannelWorker:
    """One channel's queue and daemon thread: alerts go out in order; a failure is handed to ``on_problem``."""

    def __init__(self, channel, on_problem, on_outcome=None):
        self.channel = channel
        self.name = channel.name
        self._on_problem = on_problem
        self._on_outcome = on_outcome
        self._queue = queue.Queue()
        self._thread = None
        self._lock = threading.Lock()
        self._unfinished = []  # [(event, spooled)] queued or being sent, in order

    def put(self, payload, record, ledger=True):
        # Every key the worker will set exists from now on: a report written while a send is still running copies
        # the record without its size changing under it.
        record[self.name] = 'queued'
        record['%s_attempts' % self.name] = 0
        item = (payload.get('event'), bool(ledger))
        with self._lock:
            self._unfinished.append(item)
        self._queue.put((payload, record, ledger, item))
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name='failsafe-%s' % self.name, daemon=True)
                self._thread.start()

    def _run(self):
        while True:
            payload, record, ledger, item = self._queue.get()
            result = SendResult(False, 0, None, 'not sent', 0.0)
            record[self.name] = 'sending'
            try:
                result = self.channel.send(payload)
                if result is None:
                    record[self.name] = 'not applicable'
                else:
                    record[self.name] = 'delivered' if result.ok else 'failed'
                    record['%s_attempts' % self.name] = result.attempts
                    if not result.ok:
                        self._on_problem(self.name, payload.get('event'), result)
            except Exception as exc:  # pylint: disable=broad-except
                record[self.name] = 'failed'
                result = SendResult(False, 0, None, type(exc).__name__, 0.0)
                self._on_problem(self.name, payload.get('event'), result)
            try:
                if ledger and self._on_outcome is not None:
                    self._on_outcome(payload, self.name, result)
            finally:
                with self._lock:
                    self._unfinished.remove(item)
                self._queue.task_done()

    def busy(self):
        return bool(self.unfinished())

    def unfinished(self):
        """[(event, spooled)] of what this sender has queued or is sending, in order."""
        with self._lock:
            return list(self._unfinished)

    def sender_bound(self):
        """Seconds the sender may still take (each send is bounded by what is left of its time limit)."""
        try:
            return float(self.channel.max_duration())
        except Exception:  # pylint: disable=broad-except
            return 0.0
