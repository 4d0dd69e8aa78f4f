"""docs/getting-started.md, followed literally: the walk-through ("Your first deploy, step by step") takes a new user
from an empty folder and the collection's tarball to a deploy of an app of their own (not the example app) whose
broken release is rolled back. Every fenced block of that section is run (sh) or saved (a block starting with
`# file:`) in order, in an empty folder, with the real ansible-galaxy, ansible-playbook and a private supervisord;
then the host's real state is checked: where `current` points, what the app answers, the ledger, the incident."""
import json
import os
import re
import subprocess
import urllib.request

import pytest

from support import ROOT, VENV_BIN

pytestmark = pytest.mark.slow

DOC = os.path.join(ROOT, 'docs', 'getting-started.md')
SECTION = '## Your first deploy, step by step'


def blocks():
    """(language, text) of every fenced block of the walk-through, in order."""
    with open(DOC) as handle:
        text = handle.read()
    assert SECTION in text, 'getting-started.md lost its walk-through'
    section = text.split(SECTION, 1)[1].split('\n## ', 1)[0]
    return re.findall(r'^```(\w+)\n(.*?)^```$', section, re.S | re.M)


@pytest.fixture(name='walked', scope='module')
def fixture_walked(tmp_path_factory):
    work = tmp_path_factory.mktemp('first-deploy')
    env = dict(os.environ, PATH=VENV_BIN + os.pathsep + os.environ['PATH'], ANSIBLE_HOME=str(work / '.ansible'),
               ANSIBLE_NOCOLOR='1', ANSIBLE_FORCE_COLOR='0')
    for key in list(env):
        if key.startswith('ANSIBLE_') and key not in ('ANSIBLE_HOME', 'ANSIBLE_NOCOLOR', 'ANSIBLE_FORCE_COLOR'):
            env.pop(key)
        if key.startswith('FAILSAFE_'):
            env.pop(key)
    # What the reader starts with: the collection's tarball, built from this checkout.
    build = subprocess.run(['ansible-galaxy', 'collection', 'build', ROOT, '--output-path', str(work)], env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False)
    assert build.returncode == 0, build.stdout
    transcript = []
    try:
        for lang, body in blocks():
            first = body.split('\n', 1)[0]
            if first.startswith('# file: '):
                path = work / first[len('# file: '):].strip()
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(body)
                transcript.append(('file', str(path), ''))
                continue
            assert lang == 'sh', 'a %s block that is neither a command nor a file to save:\n%s' % (lang, body)
            proc = subprocess.run(['bash', '-e', '-c', body], cwd=str(work), env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True, timeout=600, check=False)
            transcript.append((body, proc.returncode, proc.stdout))
            assert proc.returncode == 0, 'step failed:\n%s\n%s' % (body, proc.stdout[-6000:])
        yield work, transcript
    finally:
        with open(str(work / 'transcript.log'), 'w') as log:
            for entry in transcript:
                log.write('$ %s\n%s\n%s\n' % entry)
        ctl = os.path.join(VENV_BIN, 'supervisorctl')
        subprocess.run([ctl, '-c', str(work / 'target' / 'supervisor' / 'supervisord.conf'), 'shutdown'],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)


def test_the_walk_through_writes_ansible_cfg_first_and_installs_the_tarball_and_its_requirements(walked):
    work, transcript = walked
    order = [t[1] if t[0] == 'file' else t[0] for t in transcript]
    cfg = order.index(str(work / 'ansible.cfg'))
    install = [i for i, t in enumerate(order) if 'ansible-galaxy collection install' in t]
    assert len(install) == 1 and cfg < install[0], order
    body, rc, out = transcript[install[0]]
    assert 'failsafe-deploy-0.1.0.tar.gz' in body and rc == 0
    assert 'pip install -r collections/ansible_collections/failsafe/deploy/requirements.txt' in body
    # ansible.cfg was there first: no warning that the collection went somewhere ansible does not look
    assert 'WARNING' not in out and 'collections path' not in out.lower(), out
    assert 'jmespath' in out   # pip read the collection's requirements.txt
    coll = work / 'collections' / 'ansible_collections' / 'failsafe' / 'deploy'
    assert (coll / 'MANIFEST.json').is_file() and (coll / 'requirements.txt').is_file()


def test_the_walk_through_deploys_an_own_app_and_rolls_back_its_broken_release(walked):
    work, transcript = walked
    runs = [t for t in transcript if isinstance(t[1], int)]
    deploys = [t for t in runs if 'failsafe.deploy.deploy' in t[0]]
    assert len(deploys) == 3, 'the walk-through deploys three times: the missing 0.9, 1.0, then the broken 2.0'
    # the first deploy is refused before anything changes, and says so
    assert '0.9 was refused' in deploys[0][2] and 'nothing was deployed' in deploys[0][2]
    assert 'myapp-0.9.tar.gz' in deploys[0][2]
    assert 'REFUSED BEFORE ANY CHANGE' in deploys[0][2] and 'ROLLED BACK' not in deploys[0][2]
    assert deploys[1][2].rstrip().endswith('1.0')          # curl after the good deploy
    assert '2.0 failed and was rolled back' in deploys[2][2]
    assert 'ROLLED BACK' in deploys[2][2] and 'ROLLBACK FAILED' not in deploys[2][2]
    # the host's real state: current, the app's answer, the ledger, the incident report
    app = work / 'target' / 'app'
    assert os.readlink(str(app / 'current')) == 'releases/1.0'
    with urllib.request.urlopen('http://127.0.0.1:8181/version', timeout=5) as answer:
        assert answer.read().decode() == '1.0'
    with urllib.request.urlopen('http://127.0.0.1:8181/health', timeout=5) as answer:
        assert answer.status == 200
    ledger = json.loads((app / '.failsafe' / 'ledger.json').read_text())
    assert ledger['last_verified'] == '1.0' and ledger['releases']['2.0']['state'] == 'failed'
    reports = sorted(p for p in os.listdir(str(work / 'failsafe-incidents')) if re.match(r'^inc-[^.]+\.json$', p))
    incidents = [json.loads((work / 'failsafe-incidents' / r).read_text()) for r in reports]
    assert [i['outcome'] for i in incidents if i['outcome'] != 'refused'] == ['rolled_back'], reports
    incident = [i for i in incidents if i['outcome'] == 'rolled_back'][0]
    # the report is JSON, Markdown and HTML, as the page says
    for kind in ('report_json', 'report_markdown', 'report_html'):
        assert os.path.isfile(incident['files'][kind]), kind
    assert "check 'health' failed" in json.dumps(incident['failures'])
    # the app is the reader's own, not the example app
    assert (app / 'current' / 'app.py').read_text() == (work / 'src' / 'app.py').read_text()
