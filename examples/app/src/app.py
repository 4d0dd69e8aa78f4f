#!/usr/bin/env python3
# -*- coding: utf-8 -*-
# Copyright: Contributors to failsafe.deploy
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Example web service deployed by the failsafe.deploy demos.

Standard library only, Python 3.8+. Routes: / (a page), /health (JSON), /version (plain text), /config (the
configuration's label, plain text), /metrics (Prometheus text format) and /static/<file>.

How a release behaves comes from release.json next to this file: {"version": "2.0.0", "mode": "good"}, where
mode is one of good, crash (exit non-zero at start), unhealthy (/health answers 503), errors (/ answers 500 to
four requests out of five), flaky (/ answers 500 to one request in four: a partial error-rate regression that
health checks do not see), slow (/ takes SLOW_SECONDS longer: a latency regression) or flagged (a new feature,
"new-checkout", is broken: /health answers 503 while the feature flag is on). Where it listens comes
from a config file named by --config or $APP_CONFIG, in INI
form ([app] bind = ..., port = ...) or JSON form ({"bind": ..., "port": ...}); the default is 127.0.0.1:8080. An
optional `label` names the configuration (for example the release it was written for) in the start-up line.

Feature flags: `flags_file` (or $APP_FLAGS_FILE) names a flag file in the flagd format, read on every request. A flag
is on when its state is ENABLED and its default variant's value is true. Without a file, or when the file cannot be
read or does not have the flag, the embedded default applies: every feature off.
"""

import argparse
import configparser
import json
import mimetypes
import os
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HERE = os.path.dirname(os.path.abspath(__file__))
MODES = ('good', 'crash', 'unhealthy', 'errors', 'flaky', 'slow', 'flagged')
DEFAULTS = {'bind': '127.0.0.1', 'port': 8080, 'access_log': True, 'label': '', 'flags_file': ''}
# The feature a release in mode "flagged" breaks while its flag is on, and that flag's embedded default.
FEATURE = 'new-checkout'
FEATURE_DEFAULT = False
# In mode "errors", every ERROR_EVERY-th request to / succeeds and the others fail.
ERROR_EVERY = 5
# In mode "flaky", every FLAKY_EVERY-th request to / fails (25 %).
FLAKY_EVERY = 4
# In mode "slow", each request to / waits this long before it is answered.
SLOW_SECONDS = 0.25
# Upper bounds (seconds) of the request duration histogram on /metrics.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class ConfigError(Exception):
    pass


def _parse_bool(value, where):
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ('1', 'true', 'yes', 'on'):
        return True
    if text in ('0', 'false', 'no', 'off'):
        return False
    raise ConfigError('%s: expected a boolean, got %r' % (where, value))


def load_config(path=None):
    """Read the listen address from an INI or JSON file; missing keys keep their defaults.

    INI: an [app] section with bind, port, access_log, label. JSON: an object with the same keys. A file whose
    name ends in .json or whose first non-blank character is '{' is read as JSON.
    """
    config = dict(DEFAULTS)
    if not path:
        return config
    try:
        with open(path, 'r', encoding='utf-8') as handle:
            text = handle.read()
    except OSError as exc:
        raise ConfigError('cannot read config file %s: %s' % (path, exc.strerror or exc))
    if path.endswith('.json') or text.lstrip().startswith('{'):
        try:
            values = json.loads(text)
        except ValueError as exc:
            raise ConfigError('%s: invalid JSON: %s' % (path, exc))
        if not isinstance(values, dict):
            raise ConfigError('%s: expected a JSON object' % path)
    else:
        parser = configparser.ConfigParser()
        try:
            parser.read_string(text, source=path)
        except configparser.Error as exc:
            raise ConfigError('%s: invalid INI: %s' % (path, exc))
        if not parser.has_section('app'):
            raise ConfigError('%s: no [app] section' % path)
        values = dict(parser.items('app'))
    unknown = sorted(set(values) - set(DEFAULTS))
    if unknown:
        raise ConfigError('%s: unknown setting(s): %s' % (path, ', '.join(unknown)))
    if 'bind' in values:
        config['bind'] = str(values['bind']).strip()
    if 'port' in values:
        try:
            config['port'] = int(values['port'])
        except (TypeError, ValueError):
            raise ConfigError('%s: port must be an integer, got %r' % (path, values['port']))
        if not 0 <= config['port'] <= 65535:
            raise ConfigError('%s: port %d out of range' % (path, config['port']))
    if 'access_log' in values:
        config['access_log'] = _parse_bool(values['access_log'], '%s: access_log' % path)
    if 'label' in values:
        config['label'] = str(values['label']).strip()
    if 'flags_file' in values:
        config['flags_file'] = str(values['flags_file']).strip()
    return config


def flag_on(path, key, default=FEATURE_DEFAULT):
    """A boolean flag of a flagd flag file: on when ENABLED with a default variant whose value is true; the embedded
    default when there is no file, it cannot be read, or it does not have the flag."""
    if not path:
        return default
    try:
        with open(path, 'r', encoding='utf-8') as handle:
            flag = json.load(handle)['flags'][key]
        if flag.get('state') != 'ENABLED':
            return default
        value = flag['variants'][flag['defaultVariant']]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return default
    return value if isinstance(value, bool) else default


def load_release(directory=HERE):
    """Version and behaviour of this release, from release.json beside app.py (a bare checkout runs as dev/good)."""
    path = os.path.join(directory, 'release.json')
    try:
        with open(path, 'r', encoding='utf-8') as handle:
            data = json.load(handle)
    except FileNotFoundError:
        return {'version': '0.0.0-dev', 'mode': 'good'}
    except (OSError, ValueError) as exc:
        raise ConfigError('cannot read %s: %s' % (path, exc))
    version = str(data.get('version') or '')
    mode = data.get('mode', 'good')
    if not version:
        raise ConfigError('%s: no version' % path)
    if mode not in MODES:
        raise ConfigError('%s: mode must be one of %s, got %r' % (path, ', '.join(MODES), mode))
    return {'version': version, 'mode': mode}


class Metrics(object):
    """Counters exposed on /metrics. Thread-safe: the server answers requests in threads."""

    def __init__(self, version):
        self.version = version
        self.started = time.time()
        self._lock = threading.Lock()
        self._by_code = {}
        self._errors = 0
        self._root_hits = 0
        self._buckets = [0] * len(BUCKETS)
        self._duration_count = 0
        self._duration_sum = 0.0

    def record(self, code, duration=None):
        with self._lock:
            self._by_code[code] = self._by_code.get(code, 0) + 1
            if code >= 500:
                self._errors += 1
            if duration is not None:
                self._duration_count += 1
                self._duration_sum += duration
                for index, bound in enumerate(BUCKETS):
                    if duration <= bound:
                        self._buckets[index] += 1

    def next_root_hit(self):
        with self._lock:
            self._root_hits += 1
            return self._root_hits

    def render(self):
        with self._lock:
            by_code = sorted(self._by_code.items())
            errors = self._errors
            buckets = list(self._buckets)
            count, total = self._duration_count, self._duration_sum
        lines = [
            '# HELP app_requests_total HTTP requests answered, by status code.',
            '# TYPE app_requests_total counter',
        ]
        lines.extend('app_requests_total{code="%d"} %d' % (code, count) for code, count in by_code)
        lines.extend([
            '# HELP app_errors_total HTTP requests answered with a server error (5xx).',
            '# TYPE app_errors_total counter',
            'app_errors_total %d' % errors,
            '# HELP app_build_info Version of the running release.',
            '# TYPE app_build_info gauge',
            'app_build_info{version="%s"} 1' % self.version.replace('\\', '\\\\').replace('"', '\\"'),
            '# HELP app_start_time_seconds Start time of the process since the epoch.',
            '# TYPE app_start_time_seconds gauge',
            'app_start_time_seconds %.3f' % self.started,
            '# HELP app_request_duration_seconds Time to answer a request to /, in seconds.',
            '# TYPE app_request_duration_seconds histogram',
        ])
        lines.extend('app_request_duration_seconds_bucket{le="%s"} %d' % (bound, hits)
                     for bound, hits in zip(BUCKETS, buckets))
        lines.extend([
            'app_request_duration_seconds_bucket{le="+Inf"} %d' % count,
            'app_request_duration_seconds_sum %.6f' % total,
            'app_request_duration_seconds_count %d' % count,
        ])
        return '\n'.join(lines) + '\n'


PAGE = """<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>Example app %(version)s</title>
<link rel="stylesheet" href="/static/style.css"></head>
<body><h1>Example app</h1><p>Release <span class="version">%(version)s</span> is serving this page.</p></body>
</html>
"""


class AppServer(ThreadingHTTPServer):
    # The stdlib default backlog of 5 drops connections under load.
    request_queue_size = 128
    daemon_threads = True

    def __init__(self, address, release, access_log=True, static_dir=None, flags_file='', label=''):
        self.release = release
        self.label = label
        self.flags_file = flags_file
        self.metrics = Metrics(release['version'])
        self.access_log = access_log
        self.static_dir = os.path.realpath(static_dir or os.path.join(HERE, 'static'))
        ThreadingHTTPServer.__init__(self, address, Handler)


class Handler(BaseHTTPRequestHandler):
    server_version = 'example-app'
    protocol_version = 'HTTP/1.1'

    def log_message(self, fmt, *args):
        if self.server.access_log:
            sys.stderr.write('%s - %s\n' % (self.address_string(), fmt % args))

    def _send(self, code, body, content_type='text/plain; charset=utf-8', started=None):
        data = body if isinstance(body, bytes) else body.encode('utf-8')
        # Counted before the answer leaves: a client that reads /metrics right after its last answer sees it counted.
        self.server.metrics.record(code, None if started is None else time.monotonic() - started)
        self.send_response(code)
        self.send_header('Content-Type', content_type)
        self.send_header('Content-Length', str(len(data)))
        self.send_header('Cache-Control', 'no-store')
        self.end_headers()
        if self.command != 'HEAD':
            self.wfile.write(data)

    def _json(self, code, value):
        self._send(code, json.dumps(value, sort_keys=True) + '\n', 'application/json')

    def do_HEAD(self):
        self.do_GET()

    def do_GET(self):
        release = self.server.release
        path = self.path.split('?', 1)[0]
        if path == '/health':
            if release['mode'] == 'unhealthy':
                self._json(503, {'status': 'unhealthy', 'version': release['version']})
            elif release['mode'] == 'flagged' and flag_on(self.server.flags_file, FEATURE):
                self._json(503, {'status': 'unhealthy', 'version': release['version'], 'failing': FEATURE})
            else:
                self._json(200, {'status': 'ok', 'version': release['version']})
        elif path == '/version':
            if release['mode'] == 'slow':
                time.sleep(SLOW_SECONDS)
            self._send(200, release['version'] + '\n')
        elif path == '/config':
            self._send(200, self.server.label + '\n')
        elif path == '/metrics':
            self._send(200, self.server.metrics.render(), 'text/plain; version=0.0.4; charset=utf-8')
        elif path in ('/', '/index.html'):
            started = time.monotonic()
            mode = release['mode']
            hit = self.server.metrics.next_root_hit()
            if mode == 'slow':
                time.sleep(SLOW_SECONDS)
            if (mode == 'errors' and hit % ERROR_EVERY != 0) or (mode == 'flaky' and hit % FLAKY_EVERY == 0):
                self._send(500, 'internal error\n', started=started)
            else:
                self._send(200, PAGE % {'version': release['version']}, 'text/html; charset=utf-8', started=started)
        elif path.startswith('/static/'):
            self._static(path[len('/static/'):])
        else:
            self._send(404, 'not found\n')

    def _static(self, relative):
        root = self.server.static_dir
        target = os.path.realpath(os.path.join(root, relative))
        if not target.startswith(root + os.sep) or not os.path.isfile(target):
            self._send(404, 'not found\n')
            return
        content_type = mimetypes.guess_type(target)[0] or 'application/octet-stream'
        with open(target, 'rb') as handle:
            self._send(200, handle.read(), content_type)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Example web service for failsafe.deploy.')
    parser.add_argument('--config', default=os.environ.get('APP_CONFIG'),
                        help='INI or JSON config file (default: $APP_CONFIG, else built-in defaults)')
    parser.add_argument('--bind', help='listen address, overrides the config file')
    parser.add_argument('--port', type=int, help='listen port (0: any free port), overrides the config file')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    try:
        release = load_release()
        config = load_config(args.config)
    except ConfigError as exc:
        sys.stderr.write('error: %s\n' % exc)
        return 2
    if args.bind:
        config['bind'] = args.bind
    if args.port is not None:
        config['port'] = args.port
    if release['mode'] == 'crash':
        sys.stderr.write('error: release %s cannot start: required setting "database_url" is missing\n'
                         % release['version'])
        return 3
    try:
        server = AppServer((config['bind'], config['port']), release, access_log=config['access_log'],
                           flags_file=config['flags_file'] or os.environ.get('APP_FLAGS_FILE', ''),
                           label=config['label'])
    except OSError as exc:
        sys.stderr.write('error: cannot listen on %s:%s: %s\n' % (config['bind'], config['port'], exc.strerror or exc))
        return 2

    def stop(signum, frame):
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    host, port = server.server_address[:2]
    label = ' (config: %s)' % config['label'] if config['label'] else ''
    sys.stdout.write('app %s listening on http://%s:%d%s\n' % (release['version'], host, port, label))
    sys.stdout.flush()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == '__main__':
    sys.exit(main())
