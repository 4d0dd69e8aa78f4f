"""Given deploys run from a playbook that lives in a git checkout, when they commit, fail and are rolled back on real
SSH hosts, then every transaction records which build it deployed (the sha256 of the release archive, the version
of failsafe.deploy and the playbook's git commit), the history, the incident report and the alerts show it, and
failsafe.deploy.rollback goes back to the last verified build by name (its archive's checksum, or last_verified),
refusing a name that is not a build the hosts can go back to before it changes anything.

Real namespace fleet (tests/fleet), real ansible-playbook runs of a deploy.yml that imports failsafe.deploy.deploy
(a git repository made here, so its commit is known), the example app, the auto_rollback callback and its real
rollback; each claim is checked against the hosts' own journal, history, ledger and ``current`` link, the archives'
own sha256 and the repository's own HEAD.
"""
import hashlib
import json
import os
import re
import subprocess
import sys

import pytest

from support import ROOT, fleet_env, load_example_build

if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from tests.fleet.pytest_fleet import fleet  # noqa: E402,F401  pylint: disable=wrong-import-position,unused-import

pytestmark = pytest.mark.fleet

APP_VARS = os.path.join(ROOT, 'tests', 'fleet', 'app-vars.yml')


def sha256(path):
    with open(path, 'rb') as handle:
        return hashlib.sha256(handle.read()).hexdigest()


def galaxy_version():
    with open(os.path.join(ROOT, 'galaxy.yml'), encoding='utf-8') as handle:
        return re.search(r'^version:\s*(\S+)', handle.read(), re.M).group(1)


def git(repo, *args):
    argv = ['git', '-C', repo, '-c', 'user.name=ops', '-c', 'user.email=ops@example.invalid'] + list(args)
    return subprocess.run(argv, check=True, stdout=subprocess.PIPE, text=True).stdout.strip()


def read_json(path):
    with open(path, encoding='utf-8') as handle:
        return json.load(handle)


def test_given_a_playbook_checkout_then_builds_are_recorded_shown_and_rolled_back_to_by_name(fleet, tmp_path):
    hosts = fleet(2)
    base = str(tmp_path)
    dist = os.path.join(base, 'dist')
    archives = dict(zip(('1.0.0', '2.0.0', '3.0.0'), load_example_build().build(
        dist, 0, [('1.0.0', 'good'), ('2.0.0', 'good'), ('3.0.0', 'unhealthy')])))
    sums = dict((release, sha256(path)) for release, path in archives.items())
    repo = os.path.join(base, 'ops')
    os.makedirs(repo)
    with open(os.path.join(repo, 'deploy.yml'), 'w', encoding='utf-8') as handle:
        handle.write('---\n- name: Deploy\n  ansible.builtin.import_playbook: failsafe.deploy.deploy\n')
    git(repo, 'init', '-q')
    git(repo, 'add', 'deploy.yml')
    git(repo, 'commit', '-q', '-m', 'deploy playbook')
    head = git(repo, 'rev-parse', 'HEAD')
    env = fleet_env(hosts, base, dist)
    env['FAILSAFE_REPORT_DIR'] = os.path.join(base, 'incidents')
    env['FAILSAFE_SPOOL_PATH'] = os.path.join(base, 'incidents', 'alerts.jsonl')
    env['ANSIBLE_CALLBACKS_ENABLED'] = 'failsafe.deploy.auto_rollback'

    def playbook(name, *args):
        argv = ['ansible-playbook', '-i', hosts.inventory_path, name, '-e', '@' + APP_VARS] + list(args)
        proc = subprocess.run(argv, env=env, cwd=repo, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, timeout=900, check=False)
        with open(os.path.join(base, 'runs.log'), 'a', encoding='utf-8') as log:
            log.write('$ %s\n%s\nrc=%s\n' % (' '.join(argv), proc.stdout, proc.returncode))
        return proc

    def host_json(host, path):
        return read_json(hosts.host_path(host, path))

    def current(host):
        return os.path.basename(os.readlink(hosts.host_path(host, '/srv/app/current')))

    expected = dict((release, {'archive_sha256': sums[release], 'collection_version': galaxy_version(),
                               'playbook_commit': head, 'playbook_dirty': False}) for release in sums)

    # Given 1.0.0 committed, 3.0.0 failed its health check and rolled back, then 2.0.0 committed
    assert playbook('deploy.yml', '-e', 'release_version=1.0.0').returncode == 0
    for host in hosts.names:
        assert host_json(host, '/var/lib/failsafe-deploy/app/journal.json')['build'] == expected['1.0.0']
    bad = playbook('deploy.yml', '-e', 'release_version=3.0.0')
    assert bad.returncode != 0 and 'ROLLED BACK' in bad.stdout, bad.stdout[-6000:]
    good = playbook('deploy.yml', '-e', 'release_version=2.0.0')
    assert good.returncode == 0, good.stdout[-6000:]

    # Then each host's journal, history and ledger record each transaction's build
    for host in hosts.names:
        journal = host_json(host, '/var/lib/failsafe-deploy/app/journal.json')
        assert (journal['release'], journal['status'], journal['build']) == ('2.0.0', 'committed', expected['2.0.0'])
        with open(hosts.host_path(host, '/var/lib/failsafe-deploy/app/history.jsonl'), encoding='utf-8') as handle:
            closed = [json.loads(line) for line in handle if line.strip()]
        assert [(t['release'], t['status'], t['build']) for t in closed] == [
            ('1.0.0', 'committed', expected['1.0.0']), ('3.0.0', 'rolled_back', expected['3.0.0']),
            ('2.0.0', 'committed', expected['2.0.0'])]
        ledger = host_json(host, '/srv/app/.failsafe/ledger.json')
        assert ledger['releases']['2.0.0']['build'] == expected['2.0.0']
        assert ledger['releases']['1.0.0']['build'] == expected['1.0.0']
        assert 'build' not in ledger['releases']['3.0.0']   # never verified: no build of it is a known-good one

    # The incident report and the alerts of the failed deploy name its build
    reports = sorted(n for n in os.listdir(env['FAILSAFE_REPORT_DIR']) if re.match(r'^inc-[^.]+\.json$', n))
    assert len(reports) == 1
    incident = read_json(os.path.join(env['FAILSAFE_REPORT_DIR'], reports[0]))
    assert incident['summary']['builds'] == [expected['3.0.0']]
    words = 'archive sha256 %s, failsafe.deploy %s, playbook commit %s' % (
        sums['3.0.0'][:12], galaxy_version(), head[:12])
    assert incident['summary']['build'] == words
    with open(os.path.join(env['FAILSAFE_REPORT_DIR'], reports[0][:-len('.json')] + '.md'), encoding='utf-8') as f:
        assert '| Build | %s |' % words in f.read()
    with open(env['FAILSAFE_SPOOL_PATH'], encoding='utf-8') as handle:
        alerts = [json.loads(line) for line in handle if line.strip()]
    failed = [a for a in alerts if (a.get('payload') or a).get('event') in ('deploy_failed', 'rolled_back')]
    assert failed, alerts
    assert all((a.get('payload') or a).get('build') == words for a in failed), failed

    # The history playbook lists each transaction's build and the last verified one
    out = os.path.join(base, 'history.json')
    proc = playbook('failsafe.deploy.history', '-e', 'failsafe_history_file=%s' % out)
    assert proc.returncode == 0, proc.stdout[-6000:]
    history = read_json(out)
    for host in hosts.names:
        app = history[host][0]
        assert [(t['release'], t['build']) for t in app['transactions']] == [
            ('2.0.0', expected['2.0.0']), ('3.0.0', expected['3.0.0']), ('1.0.0', expected['1.0.0'])]
        assert app['last_verified_build'] == expected['2.0.0']
        assert dict((r['release'], r['build']) for r in app['releases'])['1.0.0'] == expected['1.0.0']
    assert '2.0.0 (1.0.0) committed [archive %s, failsafe.deploy %s, commit %s]' % (
        sums['2.0.0'][:12], galaxy_version(), head[:12]) in proc.stdout

    # When a rollback names a build the hosts cannot go back to (the failed 3.0.0's archive), it is refused and
    # nothing changes
    ledgers = dict((h, host_json(h, '/srv/app/.failsafe/ledger.json')) for h in hosts.names)
    refused = playbook('failsafe.deploy.rollback', '-e', 'failsafe_rollback_to=%s' % sums['3.0.0'][:16])
    assert refused.returncode != 0, refused.stdout[-6000:]
    assert 'Cannot roll back to build %s' % sums['3.0.0'][:16] in refused.stdout
    for host in hosts.names:
        assert current(host) == '2.0.0'
        assert host_json(host, '/srv/app/.failsafe/ledger.json') == ledgers[host]
        assert host_json(host, '/var/lib/failsafe-deploy/app/journal.json')['status'] == 'committed'

    # When the rollback names the last verified build by its archive's checksum, every host goes back to it
    back = playbook('failsafe.deploy.rollback', '-e', 'failsafe_rollback_to=%s' % sums['1.0.0'][:16])
    assert back.returncode == 0, back.stdout[-6000:]
    for host in hosts.names:
        assert current(host) == '1.0.0'
        journal = host_json(host, '/var/lib/failsafe-deploy/app/journal.json')
        assert (journal['release'], journal['status']) == ('2.0.0', 'rolled_back')
        ledger = host_json(host, '/srv/app/.failsafe/ledger.json')
        assert ledger['last_verified'] == '1.0.0' and ledger['current'] == '1.0.0'
        config = hosts.host_path(host, '/srv/app/shared/config/app.json')
        with open(config, encoding='utf-8') as handle:
            assert '"label": "release 1.0.0"' in handle.read()
        served = hosts.run(host, ['/usr/bin/python3', '-c', 'import urllib.request; print(urllib.request.urlopen('
                                  '"http://127.0.0.1:8080/version", timeout=5).read().decode())'])
        assert served.stdout.strip() == '1.0.0', (served.stdout, served.stderr)

    # And by the name last_verified, a host already on that build is left as it is
    again = playbook('failsafe.deploy.rollback', '-e', 'failsafe_rollback_to=last_verified')
    assert again.returncode == 0, again.stdout[-6000:]
    assert 'already runs the build last_verified asked for (release 1.0.0, archive sha256 %s)' % sums['1.0.0'] \
        in again.stdout
    for host in hosts.names:
        assert current(host) == '1.0.0'
        assert host_json(host, '/var/lib/failsafe-deploy/app/journal.json')['status'] == 'rolled_back'
