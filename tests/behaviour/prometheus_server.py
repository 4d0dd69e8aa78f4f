# -*- coding: utf-8 -*-
# Copyright: Contributors to failsafe.deploy
# SPDX-License-Identifier: GPL-3.0-or-later
"""A real Prometheus server (Debian's /usr/bin/prometheus) for the metric gate tests.

Started on a free loopback port with a config and a data directory of its own, scraping every second the targets
written to a file_sd file (``set_targets``: Prometheus picks a changed file up at once, so the fleet's hosts can be
named after the server started). ``scripts/prometheus-prereqs.sh`` installs the package when it is missing (as
root).
"""

import json
import os
import subprocess
import time
import urllib.parse
import urllib.request

from support import ROOT, free_port

BINARY = '/usr/bin/prometheus'
PREREQS = os.path.join(ROOT, 'scripts', 'prometheus-prereqs.sh')
SCRAPE_INTERVAL = '1s'

CONFIG = """global:
  scrape_interval: %(interval)s
  evaluation_interval: %(interval)s
scrape_configs:
  - job_name: app
    scrape_interval: %(interval)s
    scrape_timeout: 900ms
    file_sd_configs:
      - files: ['%(targets)s']
"""


def ensure_prometheus():
    """The server binary, installed by the project's own prereqs script when missing (root only)."""
    if not os.access(BINARY, os.X_OK):
        if os.geteuid() != 0:
            return None
        subprocess.run(['bash', PREREQS], check=True)
    return BINARY if os.access(BINARY, os.X_OK) else None


class Prometheus:
    def __init__(self, base_dir):
        self.base_dir = base_dir
        self.targets_path = os.path.join(base_dir, 'targets.json')
        self.config_path = os.path.join(base_dir, 'prometheus.yml')
        self.data_dir = os.path.join(base_dir, 'data')
        self.log_path = os.path.join(base_dir, 'prometheus.log')
        self.proc = None
        self.port = None

    @property
    def url(self):
        return 'http://127.0.0.1:%d' % self.port

    def set_targets(self, targets, labels=None):
        """Scrape ``targets`` (host:port strings) from now on, each labelled with ``labels[target]`` if given."""
        groups = [{'targets': [t], 'labels': dict((labels or {}).get(t) or {})} for t in targets]
        tmp = self.targets_path + '.tmp'
        with open(tmp, 'w', encoding='utf-8') as handle:
            json.dump(groups, handle)
        os.replace(tmp, self.targets_path)

    def start(self, timeout=60):
        os.makedirs(self.data_dir, exist_ok=True)
        if not os.path.exists(self.targets_path):
            self.set_targets([])
        with open(self.config_path, 'w', encoding='utf-8') as handle:
            handle.write(CONFIG % {'interval': SCRAPE_INTERVAL, 'targets': self.targets_path})
        last_error = None
        for dummy in range(5):
            self.port = free_port()
            log = open(self.log_path, 'a', encoding='utf-8')  # pylint: disable=consider-using-with
            self.proc = subprocess.Popen(
                [BINARY, '--config.file', self.config_path, '--storage.tsdb.path', self.data_dir,
                 '--web.listen-address', '127.0.0.1:%d' % self.port, '--storage.tsdb.retention.time', '1d'],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            log.close()
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and self.proc.poll() is None:
                try:
                    with urllib.request.urlopen(self.url + '/-/ready', timeout=2) as answer:
                        if answer.status == 200:
                            return self
                except OSError as exc:
                    last_error = exc
                time.sleep(0.2)
            self.stop()  # the port was taken meanwhile, or the server did not come up: try another port
        raise RuntimeError('prometheus did not start (last error %s); see %s' % (last_error, self.log_path))

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=15)
        self.proc = None

    def query(self, promql):
        url = self.url + '/api/v1/query?' + urllib.parse.urlencode({'query': promql})
        with urllib.request.urlopen(url, timeout=5) as answer:
            return json.load(answer)['data']['result']

    def wait_for(self, promql, predicate, timeout=60):
        """Poll ``promql`` until ``predicate(result)`` holds; returns the result."""
        deadline = time.monotonic() + timeout
        result = None
        while time.monotonic() < deadline:
            result = self.query(promql)
            if predicate(result):
                return result
            time.sleep(0.5)
        raise AssertionError('%s never satisfied the condition within %s s; last result %r' % (promql, timeout, result))
