# -*- coding: utf-8 -*-
# Copyright: Contributors to failsafe.deploy
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Failure classification over realistic ansible failure results, and rescue detection on real play objects."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import pytest

from ansible.parsing.dataloader import DataLoader
from ansible.playbook.play import Play
from ansible.vars.manager import VariableManager

from ansible_collections.failsafe.deploy.plugins.plugin_utils._classify import (
    CAUSES, classify, enclosing_blocks, failure_text, first_line, guarding_blocks, rescue_block_for, rescue_owner)

CASES = [
    # (id, result, kwargs, expected cause)
    ('ssh unreachable',
     {'msg': 'Failed to connect to the host via ssh: ssh: connect to host 10.0.0.5 port 22: Connection timed out',
      'unreachable': True}, {'unreachable': True}, 'network'),
    ('ssh auth unreachable', {'msg': 'Failed to connect to the host via ssh: root@10.0.0.5: Permission denied '
                                     '(publickey,password).'}, {'unreachable': True}, 'network'),
    ('connection refused in uri',
     {'msg': 'Status code was -1 and not [200]: Request failed: <urlopen error [Errno 111] Connection refused>',
      'status': -1}, {'action': 'ansible.builtin.uri'}, 'network'),
    ('dns failure', {'msg': 'Failed to download: <urlopen error [Errno -2] Name or service not known>'},
     {'action': 'ansible.builtin.get_url'}, 'network'),
    ('undefined variable',
     {'msg': "The task includes an option with an undefined variable. 'release_version' is undefined"},
     {'action': 'ansible.builtin.template'}, 'missing_configuration'),
    ('undefined 2.19 wording', {'msg': "Finalization of task args for 'ansible.builtin.copy' failed: Error while "
                                       "resolving value for 'dest': 'app_root' is undefined"}, {},
     'missing_configuration'),
    ('missing required arguments', {'msg': 'missing required arguments: path'},
     {'action': 'failsafe.deploy.release'}, 'missing_configuration'),
    ('template not found', {'msg': "Could not find or access 'app.conf.j2'\nSearched in:\n\t/play/templates/"
                                   "app.conf.j2 on the Ansible Controller."},
     {'action': 'ansible.builtin.template'}, 'missing_configuration'),
    ('vars file not found', {'msg': "Unable to find 'vars/prod.yml' in expected paths (use -vvvvv to see paths)"},
     {'action': 'ansible.builtin.include_vars'}, 'missing_configuration'),
    ('disk full', {'msg': 'Failed to extract: [Errno 28] No space left on device: /srv/app/releases/r2/bin'},
     {'action': 'ansible.builtin.unarchive'}, 'infrastructure'),
    ('disk full from shell', {'rc': 1, 'stderr': 'cp: error writing /srv/app/x: No space left on device',
                              'msg': 'non-zero return code', 'cmd': 'cp a b'},
     {'action': 'ansible.builtin.shell'}, 'infrastructure'),
    ('permission denied', {'msg': "[Errno 13] Permission denied: b'/srv/app/.failsafe/ledger.json'"},
     {'action': 'failsafe.deploy.release'}, 'infrastructure'),
    ('read-only fs', {'msg': "[Errno 30] Read-only file system: '/srv/app/current'"}, {}, 'infrastructure'),
    ('oom', {'rc': 137, 'msg': 'non-zero return code', 'stderr': 'java: Cannot allocate memory'},
     {'action': 'ansible.builtin.command'}, 'infrastructure'),
    ('health check module', {'msg': 'health check failed after 10 attempts: HTTP 503', 'attempts': []},
     {'action': 'failsafe.deploy.health_check'}, 'health'),
    ('health check connection refused still health',
     {'msg': 'health check failed after 3 attempts: [Errno 111] Connection refused'},
     {'action': 'failsafe.deploy.health_check'}, 'health'),
    ('verify-tagged command', {'rc': 1, 'msg': 'non-zero return code', 'stderr': 'smoke test: 2 of 5 failed',
                               'cmd': ['/usr/local/bin/smoke']},
     {'action': 'ansible.builtin.command', 'tags': ['verify']}, 'health'),
    ('verify role', {'msg': 'Assertion failed'}, {'action': 'ansible.builtin.assert', 'role': 'failsafe.deploy.verify'},
     'health'),
    ('verify task name', {'msg': 'Status code was 500 and not [200]: HTTP Error 500'},
     {'action': 'ansible.builtin.uri', 'task_name': 'Verify the application answers'}, 'health'),
    ('command rc', {'rc': 2, 'msg': 'non-zero return code', 'stderr': 'migrate: column already exists',
                    'cmd': ['./manage.py', 'migrate']}, {'action': 'ansible.builtin.command'}, 'script_error'),
    ('script rc', {'rc': 1, 'msg': 'non-zero return code', 'stdout': 'step 3 failed'},
     {'action': 'script'}, 'script_error'),
    ('module traceback', {'msg': 'MODULE FAILURE\nSee stdout/stderr for the exact error',
                          'module_stderr': 'Traceback (most recent call last):\n  File "x", line 1\nKeyError: x',
                          'rc': 1}, {'action': 'community.general.thing'}, 'script_error'),
    ('invalid release id refused by the open phase',
     {'msg': "Refusing to deploy: invalid release id '../../../tmp/evil': use only letters, digits, '.', '_' and '-' "
             "(not '.' or '..'). Nothing was changed.", 'refused': 'input', 'input_error': 'invalid release id'},
     {'action': 'failsafe.deploy.transaction'}, 'input'),
    ('invalid release id refused by an assert', {'msg': "invalid release id '../x': use only letters, digits"},
     {'action': 'ansible.builtin.assert', 'role': 'failsafe.deploy.preflight'}, 'input'),
    ('archive not on the controller', {'msg': 'failsafe_release_archive /tmp/app-9.tar.gz is not a file on the '
                                              'controller. Nothing was changed.'},
     {'action': 'ansible.builtin.assert'}, 'input'),
    ('malformed checks refused', {'msg': "Refusing to deploy: check 'health': unknown option(s) urll. Nothing was "
                                         "changed.", 'refused': 'input', 'input_error': 'malformed health checks'},
     {'action': 'failsafe.deploy.transaction'}, 'input'),
    ('flag key that does not exist', {'msg': "flag key 'new-chekout' does not exist in the flag file: nothing was "
                                             "changed (set create: true to create it)"},
     {'action': 'failsafe.deploy.transaction'}, 'input'),
    ('sqlite file missing', {'msg': 'cannot reach the SQLite database /srv/app/shared/app.db: no such file'},
     {'action': 'failsafe.deploy.transaction', 'role': 'failsafe.deploy.migrate'}, 'input'),
    ('sqlite file missing in preflight', {'msg': 'Refusing to deploy: the SQLite database /srv/db/app.db does not '
                                                 'exist (failsafe_migrate_database), so the migrate step could not run.'},
     {'action': 'ansible.builtin.assert', 'role': 'failsafe.deploy.migrate'}, 'input'),
    ('migrate database not set', {'msg': 'Refusing to deploy: failsafe_migrate_database is empty, and the migrate '
                                         'step is on (failsafe_migrate_enabled)'},
     {'action': 'ansible.builtin.assert', 'role': 'failsafe.deploy.migrate'}, 'input'),
    ('nginx config syntax', {'msg': 'the nginx configuration /etc/nginx/nginx.conf fails "nginx -t" before any change '
                                    '(rc 1): unexpected "}" in /etc/nginx/conf.d/up.conf:7; nothing was changed'},
     {'action': 'failsafe.deploy.transaction'}, 'input'),
    ('app config syntax in a crash log',
     {'msg': 'demo-app did not start under supervisor (demo-app: ERROR (spawn error)). Its log is /l/app.log. It '
             'ends with: yaml.scanner.ScannerError: syntax error in /srv/app/shared/config/app.yml line 3'},
     {'action': 'failsafe.deploy.transaction'}, 'config_error'),
    ('crash on start', {'msg': 'demo-app did not start under supervisor (demo-app: ERROR (spawn error)). Its log is '
                               '/l/app.log. It ends with: SystemExit: 3'},
     {'action': 'failsafe.deploy.transaction', 'role': 'failsafe.deploy.activate'}, 'start_failure'),
    ('crash on start under systemd', {'msg': 'app did not start under systemd (rc 1): Job for app.service failed. '
                                             'See journalctl -u app.'},
     {'action': 'failsafe.deploy.transaction'}, 'start_failure'),
    ('crash on start for want of a library', {'msg': "demo-app did not start under supervisor (ERROR). It ends with: "
                                                     "ModuleNotFoundError: No module named 'flask'"},
     {'action': 'failsafe.deploy.transaction'}, 'infrastructure'),
    ('failed migration', {'msg': 'migration 0002_add_orders failed: near "TABLEE": syntax error; its transaction '
                                 'was rolled back. Applied before it in this run: 0001_init.',
                          'failed_migration': '0002_add_orders'},
     {'action': 'failsafe.deploy.transaction', 'role': 'failsafe.deploy.migrate'}, 'script_error'),
    ('failed alembic upgrade', {'msg': 'alembic upgrade failed (rc 1): sqlalchemy.exc.OperationalError'},
     {'action': 'failsafe.deploy.transaction'}, 'script_error'),
    ('plain fail', {'msg': 'release r2 is not allowed on Fridays'}, {'action': 'ansible.builtin.fail'}, 'unknown'),
    ('empty', {}, {}, 'unknown'),
]


@pytest.mark.parametrize('result, kwargs, expected', [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_classify_realistic_failures(result, kwargs, expected):
    cls = classify(result, **kwargs)
    assert cls.cause == expected, cls
    assert cls.cause in CAUSES
    assert cls.evidence


def test_classify_looks_into_loop_results():
    result = {'msg': 'One or more items failed', 'results': [
        {'item': 'a', 'rc': 0}, {'item': 'b', 'msg': 'Could not find or access b.j2', 'failed': True}]}
    assert classify(result, action='ansible.builtin.template').cause == 'missing_configuration'


def test_failure_text_is_bounded():
    text = failure_text({'stdout': 'x' * 100000, 'msg': 'boom'}, limit=1000)
    assert len(text) < 1100
    assert 'boom' in text


@pytest.mark.parametrize('result, expected', [
    ({'msg': 'first\nsecond'}, 'first'),
    ({'stderr': 'warming up\nERROR: disk full'}, 'ERROR: disk full'),
    ({'rc': 3}, 'non-zero return code 3'),
    ({'censored': 'hidden'}, 'output hidden (no_log)'),
    ({'msg': 'y' * 500}, 'y' * 297 + '...'),
])
def test_first_line(result, expected):
    assert first_line(result) == expected


# --- rescue detection on real ansible play objects -----------------------------------------------------------

PLAY = {
    'name': 'p', 'hosts': 'all', 'gather_facts': False,
    'tasks': [
        {'name': 'plain', 'debug': {'msg': 'x'}},
        {'name': 'guarded', 'block': [
            {'name': 'in block', 'debug': {'msg': 'x'}},
            {'name': 'nested', 'block': [{'name': 'deep in block', 'debug': {'msg': 'x'}}]},
        ], 'rescue': [
            {'name': 'in rescue', 'debug': {'msg': 'x'}},
        ], 'always': [
            {'name': 'in always', 'debug': {'msg': 'x'}},
        ]},
        {'name': 'unguarded block', 'block': [{'name': 'in block without rescue', 'debug': {'msg': 'x'}}]},
        {'name': 'outer', 'block': [
            {'name': 'inner', 'block': [{'name': 'inner block task', 'debug': {'msg': 'x'}}],
             'rescue': [{'name': 'inner rescue task', 'debug': {'msg': 'x'}}]},
        ], 'rescue': [{'name': 'outer rescue task', 'debug': {'msg': 'x'}}]},
    ],
}


def _tasks_by_name():
    loader = DataLoader()
    play = Play.load(PLAY, variable_manager=VariableManager(loader=loader), loader=loader)
    found = {}

    def walk(items):
        for item in items:
            if hasattr(item, 'block') and hasattr(item, 'rescue'):
                walk(item.block or [])
                walk(item.rescue or [])
                walk(item.always or [])
            else:
                found[item.get_name()] = item
    walk(play.compile())
    return found


@pytest.fixture(scope='module')
def tasks():
    return _tasks_by_name()


@pytest.mark.parametrize('name, rescued', [
    ('plain', False),
    ('in block', True),
    ('deep in block', True),
    ('in rescue', False),
    ('in always', False),
    ('in block without rescue', False),
    ('inner block task', True),
    ('inner rescue task', True),   # the outer block rescues a failing inner rescue
    ('outer rescue task', False),
])
def test_rescue_detection_on_real_blocks(tasks, name, rescued):
    task = tasks[name]
    assert (rescue_block_for(task) is not None) is rescued
    assert bool(guarding_blocks(task)) is rescued


def test_rescue_owner_matches_the_guarding_block(tasks):
    guard = guarding_blocks(tasks['in block'])[0]
    assert rescue_owner(tasks['in rescue']) == guard
    assert guard in enclosing_blocks(tasks['deep in block'])
    assert rescue_owner(tasks['plain']) is None
    assert rescue_owner(tasks['in block']) is None


def test_rescue_detection_survives_task_copies(tasks):
    """The strategy hands callbacks copies of tasks and blocks: identity is by uuid."""
    copy = tasks['deep in block'].copy()
    assert copy is not tasks['deep in block']
    assert guarding_blocks(copy) == guarding_blocks(tasks['deep in block'])
    assert rescue_block_for(tasks['in rescue'].copy()) is None


# --- the real reason of a failed loop, and missing dependencies ------------------------------------------------

HEALTH_LOOP = {'msg': 'One or more items failed', 'failed': True, 'changed': False, 'results': [
    {'_ansible_item_label': 'ready', 'failed': False, 'msg': 'ok after 1 attempt'},
    {'_ansible_item_label': 'health', 'failed': True,
     'msg': "health check 'health' failed after 6 attempts: status 503 not in status_code [200]"},
]}


def test_first_line_of_a_failed_loop_is_the_failed_items_reason_named_by_its_label():
    assert first_line(HEALTH_LOOP) == "[health] health check 'health' failed after 6 attempts: status 503 not in " \
                                      "status_code [200]"


def test_first_line_of_a_failed_loop_without_labels_is_the_failed_items_reason():
    result = {'msg': 'One or more items failed', 'results': [{'failed': True, 'msg': 'Could not find b.j2'}]}
    assert first_line(result) == 'Could not find b.j2'


def test_first_line_keeps_a_real_message_of_a_loop():
    result = {'msg': 'release r2 is not allowed', 'results': [{'failed': True, 'msg': 'other'}]}
    assert first_line(result) == 'release r2 is not allowed'


@pytest.mark.parametrize('message, library', [
    ("Failed to import the required Python library (jmespath) on host's Python /usr/bin/python3. This is required "
     "for json_query. Please read the module documentation and install it in the appropriate location.", 'jmespath'),
    ("Traceback (most recent call last):\nModuleNotFoundError: No module named 'psycopg2'", 'psycopg2'),
])
def test_a_missing_python_library_is_infrastructure_naming_it_even_in_a_health_check(message, library):
    cls = classify({'msg': message, 'failed': True}, action='failsafe.deploy.health_check',
                   task_name='Check the health of the new release', role='failsafe.deploy.verify')
    assert cls == ('infrastructure', 'missing dependency: %s' % library)


def test_a_missing_dependency_in_a_failed_loop_item_is_found():
    result = {'msg': 'One or more items failed', 'results': [
        {'failed': True, '_ansible_item_label': 'health',
         'msg': 'Failed to import the required Python library (jmespath) on h. This is required for json_query.'}]}
    assert classify(result, action='failsafe.deploy.health_check').cause == 'infrastructure'
    assert first_line(result).startswith('[health] Failed to import the required Python library (jmespath)')


def test_failed_metric_gate_is_a_metric_regression():
    result = {'failed': True, 'msg': 'metric gate failed: error_rate: 3 of 3 measurement(s) failed (limit 0)',
              'failsafe_metric_gate': {'verdict': 'fail', 'analyses': []}}
    assert classify(result, action='failsafe.deploy.metric_gate', task_name='Judge the wave') == (
        'health', 'metric gate failed')
    # a gate whose settings were refused judged nothing: not a regression
    bad = {'failed': True, 'msg': 'metric gate settings: give at least one entry in thresholds or comparisons'}
    assert classify(bad, action='failsafe.deploy.metric_gate', task_name='Gate').cause != 'health'


@pytest.mark.parametrize('result, evidence', [
    ({'msg': "Refusing to deploy: invalid release id 'a/b'", 'refused': 'input', 'input_error': 'invalid release id'},
     'invalid release id'),
    ({'msg': 'failsafe_release_archive /x.tgz is not a file on the controller.'}, 'release archive not found'),
    ({'msg': 'migration 0002 failed: boom'}, 'migration failed'),
    ({'msg': 'app did not start under supervisor (ERROR).'}, 'service did not start'),
    ({'msg': 'app did not start under supervisor (app: ERROR (spawn error)). Its log is /var/log/app.log. It ends '
             'with: Traceback (most recent call last): | ZeroDivisionError: division by zero'},
     'service did not start: ZeroDivisionError: division by zero'),
    ({'msg': 'app did not start under supervisor (app: ERROR (spawn error)). It ends with: starting | error: '
             '/etc/app/app.ini: invalid INI: Source contains parsing errors'},
     'configuration refused at start: error: /etc/app/app.ini: invalid INI: Source contains parsing errors'),
])
def test_the_evidence_names_what_was_wrong(result, evidence):
    assert classify(result).evidence == evidence


@pytest.mark.parametrize('msg, cause', [
    ('app did not start under supervisor (app: ERROR (spawn error)). It ends with: Traceback | KeyError: x',
     'start_failure'),
    ('app did not start under systemd (rc 1): exit-code. See journalctl -u app.', 'start_failure'),
    ('app did not start under supervisor (ERROR). It ends with: nginx: [emerg] unknown directive "lisen" in '
     '/etc/nginx/app.conf:3', 'config_error'),
    ('app did not start under supervisor (ERROR). It ends with: yaml.scanner.ScannerError: mapping values are not '
     'allowed here', 'config_error'),
])
def test_a_service_that_did_not_start_is_a_start_failure_or_a_configuration_it_refused(msg, cause):
    assert classify({'failed': True, 'msg': msg}, action='failsafe.deploy.transaction').cause == cause
