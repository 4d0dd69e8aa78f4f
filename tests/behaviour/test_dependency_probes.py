"""Given the deployment's dependencies listed for the auto_rollback callback, when a deploy fails, then the alert and
the incident report (JSON, Markdown, HTML) carry the failed task's real evidence and answer "was it us or a
dependency?", naming the dependency that was down.

Real ansible-playbook runs of the examples/demo setup (3.0.0 fails its health check and is rolled back). The
dependencies are real: a TCP port with nothing listening on it (a database that is stopped), then a real listener
on the same port (the database started again), a real HTTP server answering GET, the real file system and a real
command.
"""
import http.server
import json
import os
import socket
import threading

import pytest

pytestmark = pytest.mark.slow


class HealthServer:
    """A real HTTP server that answers GET /health with 200."""

    def __init__(self):
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server API)
                self.send_response(200)
                self.send_header('Content-Length', '2')
                self.end_headers()
                self.wfile.write(b'ok')

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Handler)
        self.url = 'http://127.0.0.1:%d/health' % self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def closed_port():
    """A port nothing listens on (bound, then released)."""
    sock = socket.socket()
    sock.bind(('127.0.0.1', 0))
    port = sock.getsockname()[1]
    sock.close()
    return port


def newest(d, suffix):
    path = d.incident_reports()[-1][:-len('.json')] + suffix
    with open(path) as f:
        return f.read()


def test_given_a_stopped_database_when_the_deploy_fails_then_the_report_names_it_and_not_once_it_is_up(local_deploy):
    d = local_deploy
    api = HealthServer()
    db_port = closed_port()
    d.env['FAILSAFE_DEPENDENCIES'] = ','.join([
        'db=tcp:127.0.0.1:%d' % db_port, 'api=%s' % api.url, 'disk:%s:1M' % d.dir, 'dns:localhost',
        'tools=command:true'])
    d.env['FAILSAFE_DEPENDENCY_TIMEOUT'] = '2'
    listener = None
    try:
        good = d.deploy('1.0.0')
        assert good.returncode == 0, good.stdout[-6000:]
        assert d.incident_reports() == []          # no failure: nothing probed, nothing reported
        bad = d.deploy('3.0.0')
        assert bad.returncode != 0 and 'ROLLED BACK' in bad.stdout, bad.stdout[-6000:]
        down = json.loads(newest(d, '.json'))
        down_md, down_html = newest(d, '.md'), newest(d, '.html')
        alerts_down = list(d.receiver.events)

        # the database is started again; the same broken release fails again
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(('127.0.0.1', db_port))
        listener.listen(16)
        again = d.deploy('3.0.0', '-e', 'failsafe_force=true')
        assert again.returncode != 0 and 'ROLLED BACK' in again.stdout, again.stdout[-6000:]
        up = json.loads(newest(d, '.json'))
        up_md = newest(d, '.md')
    finally:
        api.close()
        if listener is not None:
            listener.close()
    assert up['incident_id'] != down['incident_id']

    # was it us or a dependency?
    probes = dict((p['name'], p) for p in down['dependency_probes'])
    assert sorted(probes) == sorted(['db', 'api', 'disk:%s:1M' % d.dir, 'dns:localhost', 'tools'])
    assert probes['db']['ok'] is False and 'refused' in probes['db']['detail'].lower()
    assert all(p['ok'] for name, p in probes.items() if name != 'db'), probes
    assert down['summary']['was_it_us']['verdict'] == 'dependency'
    assert down['summary']['was_it_us']['down'] == ['db']
    assert 'db (tcp 127.0.0.1:%d' % db_port in down['summary']['was_it_us']['text']
    assert '## Was it us or a dependency?' in down_md and 'db (tcp 127.0.0.1:%d' % db_port in down_md
    assert 'id="dependency-probes"' in down_html and 'verdict-dependency' in down_html
    assert 'A dependency was down at the moment of failure: db' in bad.stdout       # the warning names it
    failed_alert = [a for a in alerts_down if a.get('event') == 'deploy_failed'][-1]
    assert failed_alert['was_it_us']['down'] == ['db']

    assert up['summary']['was_it_us']['verdict'] == 'deploy' and up['summary']['was_it_us']['down'] == []
    assert all(p['ok'] for p in up['dependency_probes']), up['dependency_probes']
    assert 'Every listed dependency was up' in up_md

    # the failed task's real evidence: the check that failed, its HTTP status and body
    failure = down['failures'][0]
    checks = failure['details']['failed_checks']
    assert checks and checks[0]['name'] == 'health', failure['details']
    assert checks[0].get('status') is not None and checks[0].get('body'), checks
    served = checks[0]['body']
    assert '### Evidence' in down_md and 'check health failed' in down_md and served[:40] in down_md
    assert 'class="evidence"' in down_html and 'check health failed' in down_html
    assert failed_alert['details']['failed_checks'][0]['name'] == 'health'
    assert os.path.isfile(d.spool)
