# -*- coding: utf-8 -*-
# Copyright: Contributors to failsafe.deploy
# SPDX-License-Identifier: GPL-3.0-or-later
"""A fake AWX / Automation Controller for behaviour tests: AWX itself cannot run on this machine.

It is a real HTTP server on 127.0.0.1 that answers the REST API v2 calls of
``plugins/plugin_utils/_controller.py`` (``ControllerClient``) and really runs the jobs it launches:

- ``GET /api/v2/job_templates/?name=<name>``: the job template of that name (``{'count', 'results': [{'id', ...}]}``).
- ``POST /api/v2/job_templates/<id>/launch/`` with ``extra_vars`` and ``limit``: 201 ``{'job', 'id', 'url',
  'ignored_fields'}``. As AWX does, a field the template does not prompt for on launch is ignored and listed in
  ``ignored_fields``, and the launch's extra vars win over the template's own. The job then runs in a thread:
  ``ansible-runner run`` (how AWX runs a job: runner's awx_display callback, the project's ansible.cfg enabling the
  collection's callbacks) of the template's playbook from a project directory, against the inventory the template
  was configured with (the test's own inventory files, copied into the job's private data directory as AWX writes
  its inventory there), with the merged extra vars, ``--limit`` and ``JOB_ID`` in the environment.
- ``GET /api/v2/jobs/<id>/``: ``pending``, ``running``, then ``successful`` or ``failed`` from the exit code of the
  run (``canceled`` after a cancel), with ``failed``, ``started``, ``finished`` and ``elapsed``.
- ``GET /api/v2/jobs/<id>/job_host_summaries/``: one row per host of the run's ``playbook_on_stats`` job event (the
  counts ok, changed, failures, dark, ... and ``failed`` = failures or dark, as AWX derives its host summaries).
- ``POST /api/v2/jobs/<id>/cancel/``: kills the run (AWX SIGKILLs a cancelled job), 202.

Every request needs ``Authorization: Bearer <token>`` (else 401); every other path answers 404. What this does not
emulate: other API roots (``/api/controller/v2/``), users, organizations, RBAC, credentials and credential types
(the job's environment is given whole), execution environments and receptor, projects synced from SCM, inventory
sync, the ``!unsafe`` marking AWX gives launch-time extra vars, pagination, job events and stdout endpoints.
"""

import json
import os
import shutil
import signal
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote

import yaml

from support import DEMO, VENV_BIN

API = '/api/v2/'


class JobTemplate:
    """A job template: a playbook of the fake's project, the inventory files it was configured with, its own extra
    vars and whether it prompts for extra vars and limit on launch."""

    def __init__(self, template_id, name, playbook, inventories, extra_vars=None, ask_variables_on_launch=True,
                 ask_limit_on_launch=True):
        self.id = template_id
        self.name = name
        self.playbook = playbook
        self.inventories = list(inventories)
        self.extra_vars = dict(extra_vars or {})
        self.ask_variables_on_launch = ask_variables_on_launch
        self.ask_limit_on_launch = ask_limit_on_launch


class Job:
    def __init__(self, job_id, template, extra_vars, limit, private_data_dir):
        self.id = job_id
        self.template = template
        self.extra_vars = extra_vars
        self.limit = limit
        self.dir = private_data_dir
        self.status = 'pending'
        self.rc = None
        self.started = self.finished = None
        self.proc = None
        self.cancelled = False
        self.error = None
        self.done = threading.Event()

    @property
    def events(self):
        """The run's job events (ansible-runner's artifacts), in order."""
        folder = os.path.join(self.dir, 'artifacts', str(self.id), 'job_events')
        if not os.path.isdir(folder):
            return []
        out = []
        for name in os.listdir(folder):
            if name.endswith('.json'):
                with open(os.path.join(folder, name), encoding='utf-8') as handle:
                    out.append(json.load(handle))
        return sorted(out, key=lambda event: event.get('counter', 0))

    def host_summaries(self):
        """AWX's job host summaries: one per host of the playbook_on_stats event, ``failed`` when it had failures or
        was unreachable."""
        stats = [e.get('event_data') or {} for e in self.events if e.get('event') == 'playbook_on_stats']
        if not stats:
            return []
        data = stats[-1]
        counts = ('changed', 'dark', 'failures', 'ignored', 'ok', 'processed', 'rescued', 'skipped')
        hosts = sorted(set(host for key in counts for host in (data.get(key) or {})))
        rows = []
        for host in hosts:
            row = dict((key, int((data.get(key) or {}).get(host, 0))) for key in counts)
            row.update(host_name=host, job=self.id, failed=bool(row['failures'] or row['dark']),
                       summary_fields={'host': {'name': host}})
            rows.append(row)
        return rows

    def api(self):
        elapsed = round((self.finished or time.time()) - self.started, 3) if self.started else 0.0
        return {'id': self.id, 'type': 'job', 'url': '%sjobs/%d/' % (API, self.id), 'status': self.status,
                'failed': self.status in ('failed', 'error'), 'job_template': self.template.id,
                'name': self.template.name, 'playbook': self.template.playbook, 'limit': self.limit,
                'started': self.started, 'finished': self.finished, 'elapsed': elapsed}


class FakeAwx:
    """The fake controller. ``project``: a directory holding the playbooks and the ansible.cfg of the AWX project;
    ``env``: the environment of every job (what AWX's credentials and settings would give it); ``templates``: the
    JobTemplates; ``base``: where each job gets its private data directory."""

    def __init__(self, base, project, env, templates, token):
        self.base = base
        self.project = project
        self.env = dict(env)
        self.templates = dict((t.id, t) for t in templates)
        self.token = token
        self.requests = []
        self.jobs = {}
        self.lock = threading.Lock()
        self.next_job = 101
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self, status, body):
                raw = json.dumps(body).encode('utf-8')
                self.send_response(status)
                self.send_header('Content-Type', 'application/json')
                self.send_header('Content-Length', str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def _handle(self, method):
                length = int(self.headers.get('Content-Length') or 0)
                raw = self.rfile.read(length) if length else b''
                try:
                    body = json.loads(raw.decode('utf-8')) if raw else None
                except ValueError:
                    return self._answer(400, {'detail': 'JSON parse error'})
                with fake.lock:
                    fake.requests.append({'method': method, 'path': self.path, 'body': body, 'time': time.time()})
                if self.headers.get('Authorization') != 'Bearer %s' % fake.token:
                    return self._answer(401, {'detail': 'Authentication credentials were not provided.'})
                if not self.path.startswith(API):
                    return self._answer(404, {'detail': 'Not found.'})
                status, answer = fake.answer(method, self.path[len(API):], body)
                return self._answer(status, answer)

            def do_GET(self):  # noqa: N802 (http.server API)
                self._handle('GET')

            def do_POST(self):  # noqa: N802 (http.server API)
                self._handle('POST')

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(('127.0.0.1', 0), Handler)
        self.url = 'http://127.0.0.1:%d' % self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    # the API -------------------------------------------------------------------------------------------------------
    def answer(self, method, tail, body):
        if method == 'GET' and tail.startswith('job_templates/?'):
            query = dict(part.split('=', 1) for part in tail.split('?', 1)[1].split('&') if '=' in part)
            name = unquote(query.get('name', ''))
            found = [{'id': t.id, 'type': 'job_template', 'name': t.name, 'playbook': t.playbook}
                     for t in self.templates.values() if t.name == name]
            return 200, {'count': len(found), 'next': None, 'previous': None, 'results': found}
        parts = tail.rstrip('/').split('/')
        if method == 'POST' and len(parts) == 3 and parts[0] == 'job_templates' and parts[2] == 'launch':
            template = self.templates.get(int(parts[1])) if parts[1].isdigit() else None
            if template is None:
                return 404, {'detail': 'Not found.'}
            return self.launch(template, body or {})
        if len(parts) >= 2 and parts[0] == 'jobs' and parts[1].isdigit():
            job = self.jobs.get(int(parts[1]))
            if job is None:
                return 404, {'detail': 'Not found.'}
            if method == 'GET' and len(parts) == 2:
                return 200, job.api()
            if method == 'GET' and parts[2:] == ['job_host_summaries']:
                rows = job.host_summaries() if job.done.is_set() else []
                return 200, {'count': len(rows), 'next': None, 'previous': None, 'results': rows}
            if method == 'POST' and parts[2:] == ['cancel']:
                self.cancel(job)
                return 202, {}
        return 404, {'detail': 'Not found.'}

    def launch(self, template, body):
        ignored = {}
        extra_vars = dict(template.extra_vars)
        if 'extra_vars' in body:
            launch_vars = body['extra_vars']
            if isinstance(launch_vars, str):
                launch_vars = yaml.safe_load(launch_vars) or {}
            if template.ask_variables_on_launch:
                extra_vars.update(launch_vars)
            else:
                ignored['extra_vars'] = launch_vars
        limit = None
        if 'limit' in body:
            if template.ask_limit_on_launch:
                limit = body['limit']
            else:
                ignored['limit'] = body['limit']
        with self.lock:
            job_id = self.next_job
            self.next_job += 1
            job = self.jobs[job_id] = Job(job_id, template, extra_vars, limit,
                                          os.path.join(self.base, 'job-%d' % job_id))
        threading.Thread(target=self._run, args=(job,), daemon=True).start()
        answer = job.api()
        answer.update(job=job_id, ignored_fields=ignored)
        return 201, answer

    # the job -------------------------------------------------------------------------------------------------------
    def _run(self, job):
        try:
            os.makedirs(os.path.join(job.dir, 'env'))
            inventory = os.path.join(job.dir, 'inventory')
            os.makedirs(inventory)
            for index, source in enumerate(job.template.inventories):
                shutil.copy(source, os.path.join(inventory, '%02d-%s' % (index, os.path.basename(source))))
            with open(os.path.join(job.dir, 'env', 'extravars'), 'w', encoding='utf-8') as handle:
                json.dump(job.extra_vars, handle)
            argv = [os.path.join(VENV_BIN, 'ansible-runner'), 'run', job.dir, '--project-dir', self.project,
                    '-p', job.template.playbook, '--ident', str(job.id), '--inventory', inventory]
            if job.limit:
                argv += ['--limit', job.limit]
            env = dict(self.env, JOB_ID=str(job.id), AWX_HOST=self.url)
            with open(os.path.join(job.dir, 'job.log'), 'w', encoding='utf-8') as log:
                job.started = time.time()
                job.status = 'running'
                # pylint: disable=consider-using-with
                job.proc = subprocess.Popen(argv, env=env, cwd=self.project, stdin=subprocess.DEVNULL, stdout=log,
                                            stderr=subprocess.STDOUT, start_new_session=True)
                job.rc = job.proc.wait()
        except OSError as exc:
            job.error = str(exc)
            job.rc = -1
        finally:
            job.finished = time.time()
            if job.cancelled:
                job.status = 'canceled'
            elif job.rc == 0:
                job.status = 'successful'
            else:
                job.status = 'failed' if job.rc not in (None, -1) else 'error'
            job.done.set()

    def cancel(self, job):
        if job.done.is_set():
            return
        job.cancelled = True
        if job.proc is not None and job.proc.poll() is None:
            try:
                os.killpg(job.proc.pid, signal.SIGKILL)
            except OSError:
                pass

    # for the tests -------------------------------------------------------------------------------------------------
    def launches(self):
        """The launch requests received: {'path', 'body', 'time'}."""
        return [r for r in self.requests if r['method'] == 'POST' and r['path'].endswith('/launch/')]

    def close(self):
        for job in list(self.jobs.values()):
            self.cancel(job)
            job.done.wait(timeout=30)
        self.server.shutdown()
        self.server.server_close()


def project(path, playbooks):
    """An AWX project directory at ``path``: the demo's ansible.cfg (the auto_rollback callback enabled by the
    project, as in AWX) and, for each name of ``playbooks``, ``<name>.yml`` importing ``failsafe.deploy.<name>``."""
    os.makedirs(path)
    shutil.copy(os.path.join(DEMO, 'ansible.cfg'), os.path.join(path, 'ansible.cfg'))
    for name in playbooks:
        with open(os.path.join(path, name + '.yml'), 'w', encoding='utf-8') as handle:
            handle.write('---\n- name: Run failsafe.deploy.%s\n  ansible.builtin.import_playbook: failsafe.deploy.%s\n'
                         % (name, name))
    return path
