# -*- coding: utf-8 -*-
# Private to this collection: not a public API.
# Copyright: Contributors to failsafe.deploy
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Launches the rollback as an AWX / Automation Controller job template over the REST API and waits for it.

``ControllerClient.launch()`` POSTs ``<api>/job_templates/<id>/launch/`` with the rollback variables as
``extra_vars`` and the hosts as ``limit``; ``wait()`` polls ``<api>/jobs/<id>/`` until the job reaches a final
status (successful, failed, error, canceled) or the deadline passes (then the job is cancelled, best effort).
``<api>`` is ``/api/v2/`` or, on newer platforms behind the gateway, ``/api/controller/v2/``; with
``api_path='auto'`` the first is tried and a 404 falls back to the second.

The token is sent only in the ``Authorization: Bearer`` header and never appears in errors or results.
``run_rollback()`` adapts a launch to what the auto_rollback callback records for its local child;
``launch_rollback()`` builds the client from the callback's options first.
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import json
import ssl
import time

from ansible.module_utils.six.moves.urllib.error import HTTPError, URLError
from ansible.module_utils.six.moves.urllib.parse import quote
from ansible.module_utils.six.moves.urllib.request import Request, build_opener, HTTPSHandler

from ansible_collections.failsafe.deploy.plugins.plugin_utils._errors import ControllerSideError
from ansible_collections.failsafe.deploy.plugins.plugin_utils._launcher import LaunchResult

API_PATHS = {'v2': '/api/v2/', 'controller': '/api/controller/v2/'}
FINAL_STATUSES = ('successful', 'failed', 'error', 'canceled')


class ControllerError(ControllerSideError):
    """A request to the controller failed; the message never contains the token."""

    def __init__(self, message, status=None):
        super(ControllerError, self).__init__(message)
        self.status = status


class ControllerClient:
    """Minimal client of the AWX / Automation Controller REST API v2 (token authentication)."""

    def __init__(self, host, token, api_path='auto', request_timeout=10.0, verify_ssl=True, poll_interval=2.0,
                 clock=time.monotonic, sleep=time.sleep):
        if not host:
            raise ControllerError('no controller host set (setting controller_host / FAILSAFE_CONTROLLER_HOST)')
        if not token:
            raise ControllerError('no controller token set (setting controller_token / FAILSAFE_CONTROLLER_TOKEN)')
        if api_path not in ('auto',) + tuple(API_PATHS):
            raise ControllerError('controller_api_path must be auto, v2 or controller, not %r' % (api_path,))
        host = host.rstrip('/')
        if '://' not in host:
            host = 'https://' + host
        self.host = host
        self._token = token
        self.api_path = api_path
        self.api = API_PATHS.get(api_path)
        self.request_timeout = float(request_timeout)
        self.poll_interval = float(poll_interval)
        self._clock = clock
        self._sleep = sleep
        handlers = []
        if not verify_ssl:
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            handlers.append(HTTPSHandler(context=context))
        self._opener = build_opener(*handlers)

    def __repr__(self):
        return 'ControllerClient(%r, api_path=%r)' % (self.host, self.api_path)

    def _request(self, method, path, body=None, timeout=None):
        """(HTTP status, decoded JSON or None). HTTP errors raise ControllerError with the status."""
        url = self.host + path
        data = json.dumps(body).encode('utf-8') if body is not None else None
        request = Request(url, data=data, method=method)
        request.add_header('Authorization', 'Bearer %s' % self._token)
        request.add_header('Accept', 'application/json')
        if data is not None:
            request.add_header('Content-Type', 'application/json')
        try:
            response = self._opener.open(request, timeout=timeout or self.request_timeout)
            status, raw = response.getcode(), response.read()
        except HTTPError as exc:
            detail = ''
            try:
                detail = exc.read().decode('utf-8', 'replace')[:300]
            except Exception:  # pylint: disable=broad-except
                pass
            suffix = (': ' + detail) if detail else ''
            raise ControllerError('%s %s answered HTTP %s%s' % (method, url, exc.code, suffix), exc.code)
        except (URLError, OSError, ValueError) as exc:
            reason = getattr(exc, 'reason', exc)
            raise ControllerError('%s %s failed: %s' % (method, url, reason))
        try:
            return status, json.loads(raw.decode('utf-8')) if raw else None
        except ValueError:
            raise ControllerError('%s %s answered HTTP %s with a body that is not JSON' % (method, url, status), status)

    def _api_request(self, method, tail, body=None):
        """A request below the API root; with api_path auto a 404 on /api/v2/ retries /api/controller/v2/ once and
        the root that answered is kept for later requests."""
        if self.api is not None:
            return self._request(method, self.api + tail, body)
        try:
            result = self._request(method, API_PATHS['v2'] + tail, body)
            self.api = API_PATHS['v2']
            return result
        except ControllerError as exc:
            if exc.status != 404:
                raise
        result = self._request(method, API_PATHS['controller'] + tail, body)
        self.api = API_PATHS['controller']
        return result

    def template_id(self, template):
        """The numeric id of a job template given by id or by name."""
        text = str(template).strip()
        if text.isdigit():
            return int(text)
        data = self._api_request('GET', 'job_templates/?name=%s' % quote(text, safe=''))[1]
        results = (data or {}).get('results') or []
        if len(results) != 1:
            raise ControllerError('job template %r: %d templates have that name' % (text, len(results)))
        return int(results[0]['id'])

    def launch(self, template, extra_vars=None, limit=None):
        """Launch the job template; returns (job id, launch answer). Raises ControllerError."""
        body = {}
        if extra_vars:
            body['extra_vars'] = extra_vars
        if limit:
            body['limit'] = limit
        template_id = self.template_id(template)
        status, data = self._api_request('POST', 'job_templates/%d/launch/' % template_id, body)
        job = (data or {}).get('job') or (data or {}).get('id')
        if status not in (200, 201) or not job:
            raise ControllerError('launching job template %s answered HTTP %s without a job id' % (template_id, status),
                                  status)
        return int(job), data

    def job(self, job_id):
        return self._api_request('GET', 'jobs/%d/' % job_id)[1] or {}

    def cancel(self, job_id):
        try:
            self._api_request('POST', 'jobs/%d/cancel/' % job_id, {})
            return True
        except ControllerError:
            return False

    def wait(self, job_id, timeout, on_status=None):
        """Poll the job until a final status or ``timeout`` seconds; returns (status, job data, timed_out).
        Transient request errors are retried until the deadline."""
        deadline = self._clock() + float(timeout)
        last = None
        data = {}
        errors = 0
        while True:
            try:
                data = self.job(job_id)
                errors = 0
                status = data.get('status')
                if status != last and on_status is not None:
                    on_status(status)
                last = status
                if status in FINAL_STATUSES:
                    return status, data, False
            except ControllerError as exc:
                errors += 1
                if exc.status in (401, 403, 404) or errors >= 5:
                    raise
            if self._clock() + self.poll_interval > deadline:
                return last, data, True
            self._sleep(self.poll_interval)

    def host_summaries(self, job_id):
        """{host: 'ok' | 'failed' | 'unreachable'} from the job's host summaries (empty when unavailable)."""
        try:
            data = self._api_request('GET', 'jobs/%d/job_host_summaries/?page_size=200' % job_id)[1]
        except ControllerError:
            return {}
        out = {}
        for row in (data or {}).get('results') or []:
            name = row.get('host_name') or (row.get('summary_fields') or {}).get('host', {}).get('name')
            if not name:
                continue
            if row.get('dark'):
                out[name] = 'unreachable'
            elif row.get('failed') or row.get('failures'):
                out[name] = 'failed'
            else:
                out[name] = 'ok'
        return out


def run_rollback(client, template, scope, rollback_vars, timeout, echo=None):
    """Launch the rollback job template for ``scope`` and wait for it.

    Returns (LaunchResult, per-host outcome like ``_launcher.merge_child_hosts``, failure reason or None, job info).
    """
    started = time.time()
    job_id = None
    info = {'job_id': None, 'status': None, 'api': None, 'url': None, 'ignored_fields': None}
    error = None
    timed_out = False
    status = None

    def say(text):
        if echo is not None:
            echo(text)

    try:
        job_id, answer = client.launch(template, extra_vars=rollback_vars, limit=','.join(scope))
        info.update(job_id=job_id, api=client.api, url='%s%sjobs/%d/' % (client.host, client.api, job_id),
                    ignored_fields=(answer or {}).get('ignored_fields') or None)
        say('launched controller job %d from job template %s' % (job_id, template))
        if info['ignored_fields']:
            ignored = ', '.join(sorted(info['ignored_fields']))
            say('the controller ignored %s: enable "prompt on launch" for them on the job template' % ignored)
        status, _job, timed_out = client.wait(job_id, timeout,
                                              on_status=lambda s: say('controller job %d: %s' % (job_id, s)))
        info['status'] = status
        if timed_out:
            error = 'controller job %d did not finish within %d s (last status %s); cancel requested' % (
                job_id, timeout, status)
            client.cancel(job_id)
    except ControllerError as exc:
        error = 'controller rollback failed: %s' % exc
    ended = time.time()
    rc = 0 if status == 'successful' and not error else 1
    launch = LaunchResult(rc=rc, timed_out=timed_out, interrupted=False, started=started, ended=ended,
                          duration=round(ended - started, 3), log_path=None, error=error)
    per_host = client.host_summaries(job_id) if job_id is not None and not timed_out else {}
    hosts = {}
    for host in scope:
        if host in per_host:
            state = per_host[host]
        elif status == 'successful' and not per_host:
            state = 'ok'
        else:
            state = 'no_result'
        hosts[host] = {'status': state, 'restored': None, 'verified': None, 'failed_tasks': [],
                       'controller_job': job_id}
    reason = error
    if reason is None and status != 'successful':
        reason = 'controller job %s ended %s' % (job_id, status)
    bad = [h for h in scope if hosts[h]['status'] != 'ok']
    if bad:
        reason = (reason + '; ' if reason else '') + 'not rolled back: %s' % ', '.join(
            '%s (%s)' % (h, hosts[h]['status']) for h in bad)
    return launch, hosts, reason, info


def launch_rollback(get_option, scope, rollback_vars, timeout, timeline, echo=None):
    """The callback's controller rollback (``rollback_via: controller``): a client from its ``controller_*``
    options, then ``run_rollback()``, whose end goes to ``timeline``. Returns (LaunchResult, per-host outcome,
    failure reason or None, the command the report shows); without a usable client or job template, every host is
    ``no_result`` and the command None."""
    template = get_option('controller_rollback_template')
    try:
        client = ControllerClient(
            get_option('controller_host'), get_option('controller_token'),
            api_path=get_option('controller_api_path') or 'auto',
            verify_ssl=bool(get_option('controller_verify_ssl')),
            poll_interval=float(get_option('controller_poll_interval') or 2))
        if not template:
            raise ControllerError('no rollback job template set (setting controller_rollback_template)')
    except ControllerError as exc:
        now = time.time()
        launch = LaunchResult(1, False, False, now, now, 0.0, None, str(exc))
        return launch, dict((h, {'status': 'no_result', 'restored': None, 'verified': None,
                                 'failed_tasks': []}) for h in scope), str(exc), None
    launch, hosts, reason, job = run_rollback(client, template, scope, rollback_vars, timeout, echo=echo)
    timeline.add('rollback_end', rc=launch.rc, timed_out=launch.timed_out or None, duration=launch.duration,
                 error=launch.error, controller_job=job.get('job_id'), controller_status=job.get('status'))
    return launch, hosts, reason, ['controller', job.get('url') or client.host]
