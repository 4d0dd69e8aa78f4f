"""Feature flags as a layer of the deploy, read back through the OpenFeature SDK.

Real ansible-playbook runs of failsafe.deploy.deploy against this machine (the examples/demo setup in a private
directory, a real supervisord, the real example app). The app's release 6.0.0 runs in mode "flagged": its new feature
"new-checkout" is broken, and /health answers 503 while that flag is on in the app's flagd flag file, so the health
check itself proves the flag was on. The flag is read back through the OpenFeature SDK with the flagd provider
evaluating the file in-process (offline), as an application would.

- a deploy that turns the flag on and then fails has the flag back off after the automatic rollback;
- the escalation ladder: a kill switch that fixes the health stops there (the deploy commits with the feature off,
  the incident says so); a kill switch that does not help goes on to the full rollback, which puts the flag back
  to its state before the deploy (not the kill switch's).
"""
import json
import os
import stat

import pytest

from support import load_example_build

pytestmark = pytest.mark.slow

FLAG = 'new-checkout'
BEFORE = {'state': 'ENABLED', 'variants': {'on': True, 'off': False}, 'defaultVariant': 'off', 'targeting': {}}


def openfeature_details(path, key=FLAG, default=True):
    """The flag's evaluation by the OpenFeature SDK, flagd provider in-process from the flag file (offline). The
    caller's default is True, so a flag that cannot be read or is disabled does not pass for off by accident."""
    from openfeature import api
    from openfeature.contrib.provider.flagd import FlagdProvider
    from openfeature.contrib.provider.flagd.config import ResolverType
    provider = FlagdProvider(resolver_type=ResolverType.FILE, offline_flag_source_path=path)
    try:
        api.set_provider_and_wait(provider)
        return api.get_client().get_boolean_details(key, default)
    finally:
        api.shutdown()


@pytest.fixture
def site(local_deploy):
    d = local_deploy
    load_example_build().build(os.path.join(d.dir, 'dist'), releases=[('6.0.0', 'flagged')])
    flags_dir = os.path.join(d.dir, 'flags')
    os.makedirs(flags_dir)
    d.flag_file = os.path.join(flags_dir, 'app.flagd.json')
    with open(d.flag_file, 'w') as handle:
        json.dump({'flags': {FLAG: BEFORE, 'other': {'state': 'ENABLED', 'variants': {'a': 1}, 'defaultVariant': 'a'}}},
                  handle, indent=2)
    os.chmod(d.flag_file, 0o640)
    d.vars_file = os.path.join(d.dir, 'flag-vars.json')
    # the app reads the flag file named in its configuration (the demo's own configuration does not name one)
    config = '{"bind": "127.0.0.1", "port": %d, "label": "release {{ failsafe_release_id }}", "flags_file": "%s"}' % (
        d.port, d.flag_file)
    d.base_vars = {'failsafe_config_files': [{'dest': '{{ failsafe_app_root }}/shared/config/app.json',
                                              'content': config}]}
    return d


def run_deploy(d, version, **extra):
    data = dict(d.base_vars)
    data.update(extra)
    with open(d.vars_file, 'w') as handle:
        json.dump(data, handle)
    return d.deploy(version, '-e', '@' + d.vars_file)


def flag_on_vars(path):
    return {'failsafe_flags': [{'path': path, 'flags': {FLAG: {'enabled': True}}}]}


def read_flag(d):
    with open(d.flag_file) as handle:
        return json.load(handle)['flags'][FLAG]


def incident(d):
    reports = d.incident_reports()
    assert len(reports) == 1, reports
    with open(reports[0]) as handle:
        return json.load(handle)


def failure_text(report):
    return json.dumps(report.get('failures'))


def test_a_deploy_that_turns_a_flag_on_and_fails_has_the_flag_back_off(site):
    d = site
    first = run_deploy(d, '1.0.0')
    assert first.returncode == 0, first.stdout[-5000:]
    before = openfeature_details(d.flag_file)
    assert before.value is False and before.variant == 'off' and before.error_code is None

    failed = run_deploy(d, '6.0.0', **flag_on_vars(d.flag_file))
    assert failed.returncode != 0, failed.stdout[-5000:]
    report = incident(d)
    # the flag really was on: the new release's health check failed on the broken feature
    assert report['failures'][0]['result']['checks'][0]['json']['failing'] == FLAG
    assert report['outcome'] == 'rolled_back'

    after = openfeature_details(d.flag_file)
    assert after.value is False and after.variant == 'off' and after.error_code is None, after
    assert read_flag(d) == BEFORE
    assert stat.S_IMODE(os.stat(d.flag_file).st_mode) == 0o640
    assert d.current() == 'releases/1.0.0'
    journal = d.journal()
    assert journal['status'] == 'rolled_back'
    assert [e['kind'] for e in journal['layers']].count('flags') == 1
    assert d.http('/health')[0] == 200
    # the rollback undid the flags stage first, then the code
    layers = report['rollback']['hosts']['localhost']['restored']['layers']
    assert [entry['kind'] for entry in layers] == ['flags', 'files', 'release', 'service']


def test_check_mode_shows_the_flag_change_and_changes_nothing(site):
    d = site
    assert run_deploy(d, '1.0.0').returncode == 0
    text = open(d.flag_file).read()
    data = dict(d.base_vars, **flag_on_vars(d.flag_file))
    with open(d.vars_file, 'w') as handle:
        json.dump(data, handle)
    proc = d.deploy('2.0.0', '-e', '@' + d.vars_file, '--check', '--diff')
    assert proc.returncode == 0, proc.stdout[-5000:]
    assert '-      "defaultVariant": "off",\n+      "defaultVariant": "on",' in proc.stdout
    assert open(d.flag_file).read() == text
    assert openfeature_details(d.flag_file).value is False


def test_a_flag_key_that_does_not_exist_fails_before_anything_changes(site):
    d = site
    assert run_deploy(d, '1.0.0').returncode == 0
    text = open(d.flag_file).read()
    proc = run_deploy(d, '2.0.0', failsafe_flags=[{'path': d.flag_file, 'flags': {'no-such-flag': True}}])
    assert proc.returncode != 0
    assert "flag key 'no-such-flag' does not exist in the flag file" in proc.stdout
    assert open(d.flag_file).read() == text
    # refused in the preflight: no transaction was opened, the release was not staged nor quarantined
    assert d.current() == 'releases/1.0.0'
    assert d.journal()['status'] == 'committed' and d.journal()['release'] == '1.0.0'
    assert '2.0.0' not in d.ledger()['releases']
    assert d.change_reports() == [] and d.report_outcomes() == ['refused']


def ladder_steps(report):
    return [(s['step'], s['outcome']) for s in report['ladder']['localhost']]


def test_the_ladder_stops_at_the_kill_switch_when_it_brings_the_health_back(site):
    d = site
    assert run_deploy(d, '1.0.0').returncode == 0
    kill = [{'path': d.flag_file, 'flags': {FLAG: {'state': 'DISABLED'}}}]
    proc = run_deploy(d, '6.0.0', failsafe_flags_kill_switch=kill, **flag_on_vars(d.flag_file))
    assert proc.returncode == 0, proc.stdout[-6000:]
    # the new release stays, verified, with the feature off: the kill switch's state, not the one before the deploy
    assert d.current() == 'releases/6.0.0'
    assert d.ledger()['releases']['6.0.0']['state'] == 'verified'
    assert d.journal()['status'] == 'committed'
    assert read_flag(d)['state'] == 'DISABLED'
    details = openfeature_details(d.flag_file, default=False)
    assert details.value is False and details.reason == 'DISABLED', details
    status, body = d.http('/health')
    assert status == 200 and json.loads(body)['version'] == '6.0.0'
    report = incident(d)
    assert report['outcome'] == 'mitigated'
    alerts = [e for e in d.receiver.events if e.get('event') == 'failure_rescued']
    assert alerts and alerts[-1]['outcome'] == 'mitigated' and 'localhost: kill_switch' in alerts[-1]['summary']
    assert ladder_steps(report) == [('health_check', 'failed'), ('kill_switch', 'fixed')]
    events = [(e.get('step'), e.get('outcome')) for e in report['timeline'] if e['event'] == 'ladder']
    assert events == [('health_check', 'failed'), ('kill_switch', 'fixed')]
    with open(d.incident_reports()[0][:-len('.json')] + '.md') as handle:
        assert '## Escalation ladder' in handle.read()


def test_the_ladder_goes_on_to_the_full_rollback_when_the_kill_switch_does_not_help(site):
    d = site
    assert run_deploy(d, '1.0.0').returncode == 0
    kill = [{'path': d.flag_file, 'flags': {FLAG: {'state': 'DISABLED'}}}]
    # 3.0.0 is unhealthy whatever the flag says
    proc = run_deploy(d, '3.0.0', failsafe_flags_kill_switch=kill, **flag_on_vars(d.flag_file))
    assert proc.returncode != 0, proc.stdout[-6000:]
    assert d.current() == 'releases/1.0.0'
    assert d.journal()['status'] == 'rolled_back'
    # the rollback put the flag back as it was before the deploy: ENABLED with the off variant, not DISABLED
    assert read_flag(d) == BEFORE
    details = openfeature_details(d.flag_file)
    assert details.value is False and details.variant == 'off' and details.error_code is None, details
    report = incident(d)
    assert report['outcome'] == 'rolled_back'
    assert ladder_steps(report) == [('health_check', 'failed'), ('kill_switch', 'still_failing'),
                                    ('traffic', 'skipped'), ('full_rollback', 'started')]
    assert 'escalation ladder did not fix it (kill_switch: still_failing, traffic: skipped)' in failure_text(report)


def test_without_a_kill_switch_the_traffic_step_runs_its_hook_and_checks_again(site):
    """The traffic step is a hook (the traffic layer plugs in there): here a task file standing for it fixes the
    cause the way moving the traffic would (it turns the broken feature off), so the ladder stops at traffic."""
    d = site
    assert run_deploy(d, '1.0.0').returncode == 0
    hook = os.path.join(d.dir, 'traffic-back.yml')
    with open(hook, 'w') as handle:
        handle.write('---\n- name: Stand-in for the traffic layer\n  ansible.builtin.copy:\n    dest: %s\n'
                     '    content: \'{"flags": {"new-checkout": {"state": "DISABLED", "variants": {"on": true, '
                     '"off": false}, "defaultVariant": "off"}}}\'\n    mode: "0640"\n' % d.flag_file)
    proc = run_deploy(d, '6.0.0', failsafe_ladder_traffic_tasks=hook, **flag_on_vars(d.flag_file))
    assert proc.returncode == 0, proc.stdout[-6000:]
    assert d.current() == 'releases/6.0.0' and d.journal()['status'] == 'committed'
    report = incident(d)
    assert report['outcome'] == 'mitigated'
    assert ladder_steps(report) == [('health_check', 'failed'), ('kill_switch', 'skipped'), ('traffic', 'fixed')]


# Flags of one flag file, each with its state and defaultVariant before the deploy and what the deploy says of it
# (enabled). A DISABLED flag answers the caller's coded default whatever its defaultVariant, so a deploy that set the
# variant alone left the feature as it was: the case the flags layer once got wrong, in both directions.
SAID = {
    FLAG: ('DISABLED', 'off', True),
    'dark-mode': ('DISABLED', 'on', False),
    'legacy-search': ('ENABLED', 'on', False),
}


def said_variant(enabled):
    return 'on' if enabled else 'off'


def assert_evaluates_as_said(path):
    """Each flag of SAID evaluates as said, by the OpenFeature flagd provider reading ``path``; the caller's default
    is the opposite, so that only the flag itself can give the value asked for."""
    for key, (dummy, dummy, enabled) in SAID.items():
        details = openfeature_details(path, key=key, default=not enabled)
        assert details.value is enabled and details.variant == said_variant(enabled), (key, details)
        assert details.reason != 'DISABLED' and details.error_code is None, (key, details)


def test_flags_said_enabled_or_disabled_evaluate_as_said_and_the_rollback_restores_the_file_byte_for_byte(site):
    """Given flagd flags in state DISABLED or ENABLED, when a deploy sets each enabled or disabled, each evaluates as
    said and the file says state ENABLED, both in a deploy whose verify then fails and in one that commits; the
    failed one's rollback puts the file back byte for byte."""
    d = site
    doc = {'flags': dict((key, {'state': state, 'variants': {'on': True, 'off': False}, 'defaultVariant': variant,
                                'targeting': {}}) for key, (state, variant, dummy) in SAID.items())}
    doc['flags']['other'] = {'state': 'ENABLED', 'variants': {'a': 1}, 'defaultVariant': 'a'}
    # laid out as the flags layer writes a file (indented by two spaces, a final newline)
    original = (json.dumps(doc, indent=2) + '\n').encode()
    with open(d.flag_file, 'wb') as handle:
        handle.write(original)
    for key, (dummy, dummy, enabled) in SAID.items():
        assert openfeature_details(d.flag_file, key=key, default=not enabled).value is (not enabled), key
    assert run_deploy(d, '1.0.0').returncode == 0
    flags = {'failsafe_flags': [{'path': d.flag_file, 'flags': dict(
        (key, {'enabled': enabled}) for key, (dummy, dummy, enabled) in SAID.items())}]}
    expected = dict((key, dict(doc['flags'][key], state='ENABLED', defaultVariant=said_variant(enabled)))
                    for key, (dummy, dummy, enabled) in SAID.items())
    expected['other'] = doc['flags']['other']

    # A deploy whose release fails its verify: the after-flags hook keeps a copy of the file as the flags stage
    # left it (what the verify saw), then the rollback puts the file back.
    seen = os.path.join(d.dir, 'flags-after-the-flags-stage.json')
    hook = os.path.join(d.dir, 'keep-flag-file.yml')
    with open(hook, 'w') as handle:
        handle.write('---\n- name: Keep a copy of the flag file as the flags stage left it\n'
                     '  ansible.builtin.copy:\n    src: %s\n    dest: %s\n    remote_src: true\n'
                     '    mode: preserve\n' % (d.flag_file, seen))
    failed = run_deploy(d, '3.0.0', failsafe_flags_after_tasks=hook, **flags)
    assert failed.returncode != 0, failed.stdout[-5000:]
    assert os.path.exists(seen), 'the flags stage did not run: ' + failed.stdout[-5000:]
    assert_evaluates_as_said(seen)
    with open(seen) as handle:
        assert json.load(handle)['flags'] == expected
    assert incident(d)['outcome'] == 'rolled_back'
    assert d.journal()['status'] == 'rolled_back' and d.current() == 'releases/1.0.0'
    with open(d.flag_file, 'rb') as handle:
        assert handle.read() == original
    assert stat.S_IMODE(os.stat(d.flag_file).st_mode) == 0o640
    for key, (dummy, dummy, enabled) in SAID.items():
        assert openfeature_details(d.flag_file, key=key, default=not enabled).value is (not enabled), key

    # The same settings in a deploy that commits: each feature is as said once the deploy is done.
    done = run_deploy(d, '2.0.0', **flags)
    assert done.returncode == 0, done.stdout[-5000:]
    assert d.journal()['status'] == 'committed' and d.current() == 'releases/2.0.0'
    assert_evaluates_as_said(d.flag_file)
    with open(d.flag_file) as handle:
        assert json.load(handle)['flags'] == expected
