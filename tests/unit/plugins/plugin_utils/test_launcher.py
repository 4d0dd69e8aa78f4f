# -*- coding: utf-8 -*-
# Copyright: Contributors to failsafe.deploy
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The rollback child: command line, environment, running with a log and a timeout, and the result protocol."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import json
import shlex
import os
import stat
import subprocess
import sys
import textwrap
import time

import pytest

from ansible import context
from ansible.utils.context_objects import CLIArgs

from ansible_collections.failsafe.deploy.plugins.plugin_utils import _launcher
from ansible_collections.failsafe.deploy.plugins.plugin_utils._redact import Redactor
from ansible_collections.failsafe.deploy.plugins.plugin_utils._summary import host_outcome


def cliargs(**overrides):
    base = {
        'inventory': ('/inv/prod.ini', '/inv/group_vars_plugin.yml', 'extra-host,'),
        'subset': 'web*',
        'extra_vars': ('release_version=1.4.2', '@/vars/secrets.yml', '{"db_password": "hunter2"}'),
        'remote_user': 'deploy',
        'private_key_file': '/keys/id_ed25519',
        'connection': 'ssh',
        'become': True,
        'become_method': 'sudo',
        'become_user': None,
        'forks': 20,
        'timeout': None,
        'ssh_common_args': '-o ServerAliveInterval=1',
        'ssh_extra_args': None,
        'vault_ids': ['prod@/keys/vault-pass'],
        'vault_password_files': [],
        'verbosity': 2,
        'check': False,
        'ask_pass': False,
    }
    base.update(overrides)
    return CLIArgs(base)


def test_build_command_from_cliargs():
    cmd = _launcher.build_command('/venv/bin/ansible-playbook', 'failsafe.deploy.rollback', cliargs(),
                                  ['web2', 'web1'], '/r/inc.rollback-vars.json')
    assert cmd[:2] == ['/venv/bin/ansible-playbook', 'failsafe.deploy.rollback']
    # every inventory source, in order
    assert [cmd[i + 1] for i, part in enumerate(cmd) if part == '--inventory'] == [
        '/inv/prod.ini', '/inv/group_vars_plugin.yml', 'extra-host,']
    # the scope replaces the original --limit
    assert cmd[cmd.index('--limit') + 1] == 'web2,web1'
    assert cmd.count('--limit') == 1 and 'web*' not in cmd
    for flag, value in (('--user', 'deploy'), ('--private-key', '/keys/id_ed25519'), ('--connection', 'ssh'),
                        ('--forks', '20'), ('--ssh-common-args', '-o ServerAliveInterval=1'),
                        ('--vault-id', 'prod@/keys/vault-pass'), ('--become-method', 'sudo')):
        assert cmd[cmd.index(flag) + 1] == value, flag
    assert '--become' in cmd and '-vv' in cmd
    for absent in ('--become-user', '--ssh-extra-args', '--timeout', '--vault-password-file', '--check'):
        assert absent not in cmd
    extra = [cmd[i + 1] for i, part in enumerate(cmd) if part == '--extra-vars']
    assert extra == ['release_version=1.4.2', '@/vars/secrets.yml', '{"db_password": "hunter2"}',
                     '@/r/inc.rollback-vars.json']   # ours last: it wins


def test_build_command_leaves_configured_defaults_to_the_configuration():
    cmd = _launcher.build_command('ap', 'pb.yml', cliargs(), ['h1'], '/v.json',
                                  defaults={'connection': 'ssh', 'forks': 5, 'become_method': 'sudo'})
    assert '--connection' not in cmd and '--become-method' not in cmd
    assert cmd[cmd.index('--forks') + 1] == '20'


def test_build_command_without_inventory_and_with_ipv6_single_host():
    cmd = _launcher.build_command('ap', 'pb.yml', CLIArgs({}), ['fe80::1'], '/v.json')
    assert '--inventory' not in cmd
    assert cmd[cmd.index('--limit') + 1] == 'fe80::1,'
    with pytest.raises(ValueError):
        _launcher.build_command('ap', 'pb.yml', CLIArgs({}), [], '/v.json')


def test_shown_command_hides_pass_through_extra_vars():
    cmd = _launcher.build_command('ap', 'pb.yml', cliargs(), ['h1'], '/r/own.json')
    shown = ' '.join(_launcher.shown_command(cmd))
    assert 'hunter2' not in shown and 'release_version' not in shown and 'secrets.yml' not in shown
    assert '@/r/own.json' in shown and '--limit h1' in shown


def test_interactive_options_are_named():
    assert _launcher.interactive_options(cliargs(ask_pass=True, ask_vault_pass=True)) == ['ask_pass',
                                                                                          'ask_vault_pass']
    assert _launcher.interactive_options(cliargs()) == []


def test_build_env_flags_recursion_and_scrubs_runner_variables():
    base = {'PATH': '/bin', 'ANSIBLE_STDOUT_CALLBACK': 'awx_display', 'JOB_ID': '7', 'FAILSAFE_WEBHOOK_URL': 'u',
            'ANSIBLE_FORCE_COLOR': '1', 'ANSIBLE_CALLBACKS_ENABLED': 'x'}
    env = _launcher.build_env(base, '/r/result.json', ['ansible.posix.profile_tasks', 'failsafe.deploy.auto_rollback'])
    assert env['FAILSAFE_ROLLBACK_CHILD'] == '1'
    assert env['FAILSAFE_ROLLBACK_RESULT'] == '/r/result.json'
    for key in ('ANSIBLE_STDOUT_CALLBACK', 'JOB_ID', 'ANSIBLE_FORCE_COLOR'):
        assert key not in env
    assert env['ANSIBLE_CALLBACKS_ENABLED'] == 'ansible.posix.profile_tasks,failsafe.deploy.auto_rollback'
    assert env['PATH'] == '/bin' and env['FAILSAFE_WEBHOOK_URL'] == 'u'
    assert base['JOB_ID'] == '7'   # the parent's environment is untouched
    # never an empty ANSIBLE_CALLBACKS_ENABLED (it crashes ansible-core 2.19)
    assert _launcher.build_env({}, '/r', [])['ANSIBLE_CALLBACKS_ENABLED'] == 'failsafe.deploy.auto_rollback'


def test_build_env_drops_the_runner_display_callback_directory(tmp_path):
    runner_dir = tmp_path / 'display_callback' / 'callback'
    runner_dir.mkdir(parents=True)
    (runner_dir / 'awx_display.py').write_text('# patches Display on import')
    other = tmp_path / 'mine'
    other.mkdir()
    env = _launcher.build_env({'ANSIBLE_CALLBACK_PLUGINS': '%s:%s' % (runner_dir, other)}, '/r', [])
    assert env['ANSIBLE_CALLBACK_PLUGINS'] == str(other)
    env = _launcher.build_env({'ANSIBLE_CALLBACK_PLUGINS': str(runner_dir)}, '/r', [])
    assert 'ANSIBLE_CALLBACK_PLUGINS' not in env


DSA_WARNING = ('import warnings; warnings.warn("DSA is deprecated and support will be removed in a future release. '
               'Use a more modern signature algorithm.", UserWarning); warnings.warn("one of our own", UserWarning)')


def test_the_child_does_not_print_the_cryptography_dsa_warning_but_keeps_other_warnings():
    # the warning cryptography 51+ prints when ansible-core 2.19 starts, raised as it raises it (a UserWarning
    # subclass), in a real interpreter started with the child's environment
    base = {'PATH': os.environ.get('PATH', '/usr/bin:/bin'), 'PYTHONWARNINGS': 'default::DeprecationWarning'}
    plain = subprocess.run([sys.executable, '-c', DSA_WARNING], env=dict(base), stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, check=True)
    assert 'DSA is deprecated' in plain.stderr
    env = _launcher.build_env(base, '/r', [])
    assert env['PYTHONWARNINGS'].startswith('default::DeprecationWarning,')   # the parent's filters are kept
    child = subprocess.run([sys.executable, '-c', DSA_WARNING], env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, check=True)
    assert 'DSA is deprecated' not in child.stderr and 'one of our own' in child.stderr
    assert _launcher.build_env(env, '/r', [])['PYTHONWARNINGS'] == env['PYTHONWARNINGS']   # added once


def test_write_rollback_vars(tmp_path):
    path = str(tmp_path / 'v.json')
    hosts = {'web1': {'state_dir': '/s', 'name': 'app', 'txid': 't1', 'release': 'r2', 'previous_release': 'r1'}}
    _launcher.write_rollback_vars(path, 'run-1', hosts, 'inc-1')
    # failsafe_hosts=all: the rollback plays cover every host of the --limit, even one outside the deploy's pattern
    assert json.loads(open(path).read()) == {'failsafe_hosts': 'all', 'failsafe_rollback_run_id': 'run-1',
                                             'failsafe_rollback_hosts': hosts, 'failsafe_rollback_incident': 'inc-1',
                                             'failsafe_rollback_connection': {}}
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_write_rollback_vars_carries_the_connection_keywords_of_hosts_that_have_some(tmp_path):
    path = str(tmp_path / 'v.json')
    hosts = {'web1': {'name': 'app'}, 'web2': {'name': 'app'}}
    connection = {'web1': {'connection': 'local', 'become': True}, 'web2': {}}
    _launcher.write_rollback_vars(path, 'run-1', hosts, 'inc-1', connection=connection)
    assert json.loads(open(path).read())['failsafe_rollback_connection'] == {
        'web1': {'connection': 'local', 'become': True}}


def test_write_rollback_vars_lists_the_stages_of_hosts_with_more_than_code(tmp_path):
    path = str(tmp_path / 'v.json')
    hosts = {'web1': {'name': 'app'}, 'lb1': {'name': 'app'}, 'db1': {'name': 'app'}}
    stages = {'web1': ['code'], 'lb1': ['traffic'], 'db1': ['code', 'database']}
    _launcher.write_rollback_vars(path, 'run-1', hosts, 'inc-1', stages=stages)
    assert json.loads(open(path).read())['failsafe_rollback_stages'] == {
        'lb1': ['traffic'], 'db1': ['code', 'database']}
    _launcher.write_rollback_vars(path, 'run-1', hosts, 'inc-1', stages={'web1': ['code']})
    assert 'failsafe_rollback_stages' not in json.loads(open(path).read())


def load_play(ds):
    from ansible.parsing.dataloader import DataLoader
    from ansible.playbook.play import Play
    return Play.load(dict(ds, hosts='all'), loader=DataLoader())


@pytest.mark.parametrize('ds, expected', [
    ({}, {}),
    ({'connection': 'local'}, {'connection': 'local'}),
    ({'become': True, 'become_user': 'app', 'become_method': 'su'},
     {'become': True, 'become_user': 'app', 'become_method': 'su'}),
    ({'become': False}, {'become': False}),   # an explicit "no" is a setting too: it beats a -b of the command line
    ({'user': 'deploy'}, {'remote_user': 'deploy'}),   # the old name of remote_user
    ({'remote_user': '{{ deploy_user }}'}, {'remote_user': '{{ deploy_user }}'}),
    ({'gather_facts': False, 'serial': 2}, {}),
], ids=['none', 'connection', 'become', 'become-false', 'user', 'template', 'other-keywords'])
def test_play_connection_names_only_the_keywords_the_play_sets(monkeypatch, ds, expected):
    # The command line's values are the attributes' defaults: they must not pass for the play's own settings.
    monkeypatch.setattr(context, 'CLIARGS', CLIArgs({'connection': 'ssh', 'become': True, 'become_method': 'sudo',
                                                     'become_user': 'root', 'remote_user': 'ops'}))
    play = load_play(ds)
    assert _launcher.play_connection(play) == expected


def test_play_connection_of_an_object_without_keywords_is_empty():
    assert _launcher.play_connection(object()) == {}


@pytest.mark.parametrize('settings, expected', [
    ({'become': 'yes', 'connection': 'local'}, {'become': True, 'connection': 'local'}),
    ({'become': 0, 'remote_user': 1000}, {'become': False, 'remote_user': '1000'}),
    ({'become_user': None, 'other': 'x'}, {}),
])
def test_normalize_connection(settings, expected):
    assert _launcher.normalize_connection(settings) == expected


@pytest.mark.parametrize('settings', [{'become': 'maybe'}, {'connection': ['local']}, {'become_user': True}])
def test_normalize_connection_refuses_what_is_no_keyword_value(settings):
    with pytest.raises((TypeError, ValueError)):
        _launcher.normalize_connection(settings)


@pytest.mark.parametrize('value, expected', [
    ('{{ x }}', True), ('{% if a %}local{% endif %}', True), ('local', False), (True, False), (None, False)])
def test_is_template(value, expected):
    assert _launcher.is_template(value) is expected


def test_default_ansible_playbook_is_beside_the_python(tmp_path):
    fake_python = tmp_path / 'python'
    fake_python.write_text('')
    assert _launcher.default_ansible_playbook(str(fake_python)) != str(tmp_path / 'ansible-playbook')
    script = tmp_path / 'ansible-playbook'
    script.write_text('#!/bin/sh\n')
    script.chmod(0o755)
    assert _launcher.default_ansible_playbook(str(fake_python)) == str(script)


def _script(tmp_path, body):
    path = tmp_path / 'child.py'
    path.write_text('import os, sys, time, subprocess\n' + textwrap.dedent(body))
    return [sys.executable, str(path)]


def _alive(pid):
    try:
        with open('/proc/%d/stat' % pid) as handle:
            return handle.read().split(')')[-1].split()[0] not in ('Z', 'X')
    except OSError:
        return False


def test_run_logs_and_echoes_output_with_stdin_closed(tmp_path):
    cmd = _script(tmp_path, '''
        print("stdin:", repr(sys.stdin.read()))
        print("flag:", os.environ.get("FAILSAFE_ROLLBACK_CHILD"))
        print("token=abc123456 in output", file=sys.stderr)
        sys.exit(3)
    ''')
    echoed = []
    log = str(tmp_path / 'logs' / 'rollback.log')
    red = Redactor()
    result = _launcher.run(cmd, _launcher.build_env(os.environ, '/r', []), log, timeout=30, echo=echoed.append,
                           redact=red.text, header='# header')
    assert result.rc == 3 and not result.timed_out and result.error is None
    assert "stdin: ''" in echoed and 'flag: 1' in echoed
    assert any('token=********' in line for line in echoed)
    text = open(log).read()
    assert text.startswith('# header\n')
    assert "stdin: ''" in text and 'abc123456' not in text
    assert 'exit code 3' in text
    assert result.duration < 30


def test_run_kills_the_whole_process_group_at_the_timeout(tmp_path):
    pidfile = tmp_path / 'grandchild.pid'
    cmd = _script(tmp_path, '''
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        open(%r, "w").write(str(child.pid))
        print("started", flush=True)
        time.sleep(60)
    ''' % str(pidfile))
    start = time.time()
    result = _launcher.run(cmd, dict(os.environ), str(tmp_path / 'r.log'), timeout=1.5)
    assert time.time() - start < 12
    assert result.timed_out and 'did not finish within 1.5 s' in result.error
    assert result.rc is not None and result.rc != 0
    grandchild = int(pidfile.read_text())
    deadline = time.time() + 5
    while _alive(grandchild) and time.time() < deadline:
        time.sleep(0.1)
    assert not _alive(grandchild)
    assert 'started' in open(str(tmp_path / 'r.log')).read()


def test_run_reports_a_missing_executable(tmp_path):
    result = _launcher.run([str(tmp_path / 'no-such-ansible-playbook')], {}, str(tmp_path / 'r.log'), timeout=5)
    assert result.rc is None and 'could not start' in result.error


def test_read_child_result(tmp_path):
    assert _launcher.read_child_result(str(tmp_path / 'missing.json')) is None
    bad = tmp_path / 'bad.json'
    bad.write_text('{not json')
    assert _launcher.read_child_result(str(bad)) is None
    good = tmp_path / 'good.json'
    good.write_text('{"hosts": {}}')
    assert _launcher.read_child_result(str(good)) == {'hosts': {}}


class Stats:
    def __init__(self, processed, failures=None, dark=None, rescued=None):
        self.processed = dict.fromkeys(processed, 1)
        self.failures = failures or {}
        self.dark = dark or {}
        self.rescued = rescued or {}

    def summarize(self, host):
        return {'failures': self.failures.get(host, 0), 'unreachable': self.dark.get(host, 0)}


def test_child_report_and_merge():
    report = _launcher.ChildReport(Redactor())
    report.on_result('web1', {'failsafe_rollback': {'target_release': 'r1', 'restored': ['/srv/app/current']}}, 'ok')
    report.on_result('web1', {'results': [{'failsafe_rollback': {'verified': True, 'token': 'abc'}}]}, 'ok')
    report.on_result('web2', {'failsafe_rollback': {'target_release': 'r1'}}, 'ok')
    report.on_result('web2', {'msg': 'restore failed'}, 'failed', task_name='Restore', message='restore failed')
    data = report.finish(Stats(['web1', 'web2', 'web3'], failures={'web2': 1}, dark={'web3': 1}))
    assert data['hosts']['web1']['status'] == 'ok'
    assert data['hosts']['web2']['status'] == 'failed'
    assert data['hosts']['web3']['status'] == 'unreachable'
    assert data['hosts']['web1']['failsafe_rollback'][1] == {'verified': True, 'token': '********'}
    merged = _launcher.merge_child_hosts(['web1', 'web2', 'web3', 'web4'], data)
    assert merged['web1'] == {'status': 'ok', 'verified': True, 'failed_tasks': [],
                              'restored': {'target_release': 'r1', 'restored': ['/srv/app/current'],
                                           'verified': True, 'token': '********'}}
    assert merged['web2']['status'] == 'failed'
    assert merged['web2']['failed_tasks'] == [{'task': 'Restore', 'status': 'failed', 'message': 'restore failed'}]
    assert merged['web3']['status'] == 'unreachable'
    assert merged['web4']['status'] == 'no_result'   # never assumed ok
    assert _launcher.merge_child_hosts(['web1'], None)['web1']['status'] == 'no_result'


def test_a_staged_rollback_adds_up_the_layers_of_every_stage_and_a_later_stage_hides_nothing():
    child = {'hosts': {'web1': {'status': 'ok', 'failed_tasks': [], 'failsafe_rollback': [
        {'stages': ['flags'], 'layers': [{'kind': 'flags', 'undone': True}], 'restored': [], 'target_release': None,
         'quarantined': False, 'verified': True, 'pending': ['code', 'database']},
        {'stages': ['code'], 'layers': [{'kind': 'files', 'undone': True}], 'restored': ['/srv/app/current'],
         'target_release': 'r1', 'quarantined': True, 'verified': True, 'pending': ['database']},
        {'stages': ['database'], 'layers': [{'kind': 'schema', 'undone': True}], 'restored': [],
         'target_release': None, 'quarantined': False, 'verified': True},
    ]}}}
    restored = _launcher.merge_child_hosts(['web1'], child)['web1']['restored']
    assert [layer['kind'] for layer in restored['layers']] == ['flags', 'files', 'schema']
    assert restored['restored'] == ['/srv/app/current'] and restored['target_release'] == 'r1'
    assert restored['quarantined'] is True and restored['stages'] == ['database']
    # the database stage undid the last of it: nothing is left pending
    assert 'pending' not in restored
    # a rollback that stopped after the code stage still has the database to undo
    child['hosts']['web1']['failsafe_rollback'].pop()
    assert _launcher.merge_child_hosts(['web1'], child)['web1']['restored']['pending'] == ['database']


def test_a_host_that_failed_with_stages_still_to_undo_is_not_back_on_a_release_nor_verified():
    # the flags stage undid its layer and said the host runs r2; the code stage then failed (its failure rescued
    # into the role's loud failure, so it left no report): the host is not on r2 any more, and nothing verified it
    child = {'hosts': {'web1': {'status': 'failed', 'failed_tasks': [{'task': 'Fail loudly', 'status': 'failed'}],
                                'failsafe_rollback': [
                                    {'stages': ['flags'], 'layers': [{'kind': 'flags', 'undone': True,
                                                                      'undid': 'flag(s) seen-2.2.0 restored'}],
                                     'failed_release': 'r2', 'running_release': 'r2', 'target_release': 'r2',
                                     'verified': True, 'pending': ['code']}]},
                       'web2': {'status': 'failed', 'failed_tasks': [{'task': 'After hook', 'status': 'failed'}],
                                'failsafe_rollback': [
                                    {'stages': ['code'], 'layers': [{'kind': 'release', 'undone': True}],
                                     'failed_release': 'r2', 'running_release': 'r1', 'target_release': 'r1',
                                     'verified': True}]}}}
    merged = _launcher.merge_child_hosts(['web1', 'web2'], child)
    assert merged['web1']['verified'] is None
    restored = merged['web1']['restored']
    assert [layer['kind'] for layer in restored['layers']] == ['flags'] and restored['pending'] == ['code']
    assert 'running_release' not in restored and 'target_release' not in restored and 'verified' not in restored
    assert restored['unfinished'] is True
    assert host_outcome(restored) == ('not rolled back: it failed with the code stage(s) still to undo; undone: '
                                      'flag(s) seen-2.2.0 restored')
    # a host whose rollback finished (nothing pending) and failed later, in a hook, is on the release it restored
    assert merged['web2']['verified'] is True and merged['web2']['restored']['running_release'] == 'r1'


def test_the_release_a_host_runs_after_a_staged_rollback_is_the_last_stages_even_none():
    # a first deploy: the flags stage read r3 from the current link, the code stage then took r3 out of service
    child = {'hosts': {'web1': {'status': 'ok', 'failed_tasks': [], 'failsafe_rollback': [
        {'stages': ['flags'], 'layers': [{'kind': 'flags', 'undone': True, 'undid': 'flag(s) f restored'}],
         'failed_release': 'r3', 'running_release': 'r3', 'target_release': 'r3', 'verified': True,
         'pending': ['code']},
        {'stages': ['code'], 'layers': [], 'failed_release': 'r3', 'running_release': None, 'target_release': None,
         'verified': True, 'nothing_deployed': True}]}}}
    restored = _launcher.merge_child_hosts(['web1'], child)['web1']['restored']
    assert restored['running_release'] is None
    assert host_outcome(restored) == 'runs no release (nothing deployed before r3); undone: flag(s) f restored'


def test_child_report_rescued_failure_is_ok():
    report = _launcher.ChildReport()
    report.on_result('web1', {'msg': 'x'}, 'failed', task_name='t')
    data = report.finish(Stats(['web1'], rescued={'web1': 1}))
    assert data['hosts']['web1']['status'] == 'ok'


def _options(cmd):
    """The connection, privilege and vault options of a command line (everything from the first of them on, up to
    the verbosity or the extra vars)."""
    flags = [flag for dummy, flag, dummy2 in _launcher._PASS_THROUGH]
    start = min(i for i, part in enumerate(cmd) if part in flags)
    end = min([i for i, part in enumerate(cmd) if part in ('-e', '--extra-vars', '-vv') or part.startswith('--ask')]
              + [len(cmd)])
    return cmd[start:end]


def test_operator_command_carries_the_runs_inventory_limit_and_options_of_the_one_pass_through_list():
    args = cliargs(ask_vault_pass=True)
    cmd = _launcher.operator_command('failsafe.deploy.rollback', args,
                                     extra_vars={'failsafe_rollback_run_id': 'run-1', 'failsafe_state_dir': '/s d'})
    assert cmd[:2] == ['ansible-playbook', 'failsafe.deploy.rollback']
    assert [cmd[i + 1] for i, part in enumerate(cmd) if part == '-i'] == [
        '/inv/prod.ini', '/inv/group_vars_plugin.yml', 'extra-host,']
    assert cmd[cmd.index('--limit') + 1] == 'web*'   # the run's own limit
    # the same options the rollback child gets, from the same list
    child = _launcher.build_command('ap', 'pb.yml', args, ['h1'], '/v.json')
    assert _options(cmd) == _options(child)
    assert '--become' in cmd and cmd[cmd.index('--user') + 1] == 'deploy'
    assert '--ask-vault-pass' in cmd   # the operator answers the prompt
    # the run's extra vars are never repeated: only the ones given
    line = _launcher.command_line(cmd)
    for secret in ('hunter2', 'secrets.yml', 'release_version'):
        assert secret not in line
    assert shlex.split(line) == cmd
    extra = [cmd[i + 1] for i, part in enumerate(cmd) if part == '-e']
    assert extra == ['failsafe_rollback_run_id=run-1', '{"failsafe_state_dir": "/s d"}']


def test_operator_command_for_named_hosts_limits_to_them_and_leaves_defaults_to_the_configuration():
    cmd = _launcher.operator_command('failsafe.deploy.rollback', cliargs(), hosts=['web2', 'web1'],
                                     defaults={'connection': 'ssh', 'forks': 5})
    assert cmd[cmd.index('--limit') + 1] == 'web2,web1' and cmd.count('--limit') == 1
    assert '--connection' not in cmd and cmd[cmd.index('--forks') + 1] == '20'
    assert '-e' not in cmd and '--extra-vars' not in cmd
    bare = _launcher.operator_command('failsafe.deploy.recover', CLIArgs({}))
    assert bare == ['ansible-playbook', 'failsafe.deploy.recover']


def test_location_vars_are_the_only_extra_vars_taken_from_the_run(monkeypatch):
    # ansible keeps the extra vars it parsed first on load_extra_vars itself: read this run's, not an earlier test's
    from ansible.utils import vars as ansible_vars
    monkeypatch.setattr(ansible_vars.load_extra_vars, 'extra_vars', {}, raising=False)
    monkeypatch.setattr(context, 'CLIARGS', CLIArgs({'extra_vars': (
        'failsafe_state_dir=/srv/state release_version=1.4.2', '{"db_password": "hunter2", "failsafe_name": "app"}')}))
    assert _launcher.location_vars() == {'failsafe_state_dir': '/srv/state', 'failsafe_name': 'app'}
