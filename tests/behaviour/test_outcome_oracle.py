# -*- coding: utf-8 -*-
# Copyright: Contributors to failsafe.deploy
# SPDX-License-Identifier: GPL-3.0-or-later
"""Every word true: a scenario table run through the outcome oracle (oracle.py).

Four local demo sites on this machine, one per layer mix, each a host of one inventory (local connection, a private
supervisord, the real example app on a port of its own): ``code`` (code only), ``db`` (code and a SQLite database
migrated by the release's SQL files), ``flags`` (code and a flagd flag file the deploy sets) and ``own`` (an
operator's own playbook that snapshots and changes a configuration directory, with neither release nor service).

The rows run in order, each one deploy (and the recovery it needs) of all the hosts of its mixes at once, with the
auto_rollback callback and a report directory of its own: first deploys on empty sites, with a failure at each point
a first deploy can meet (a refused release id, open, stage, migrate, a release that crashes on start, a configuration
with a syntax error, flags, a release that fails its health check, the controller SIGKILLed right after the switch,
a host crash while staging that leaves the app stopped), each rolled back to nothing deployed (no current, nothing
answering, no release half installed, no health check of a release that is not there) so that the next row starts
from an empty site, then the good first release every later row starts from; then later deploys with a failure at
each point: input validation (a release id outside releases/, a flag key
the flag file lacks), open (after the snapshot), stage, migrate (a broken migration on the database host), activate
(a release that crashes on start, a configuration with a syntax error), flags (after the flags were set), verify (an
unhealthy release), commit (after it), the controller SIGKILLed right after the switch, and a host crash before and
after the switch that leaves the app stopped (recover.yml brings it back), a deploy whose rollback fails (a hook
deletes the directory of the release it replaces, then fails: ROLLBACK FAILED, exit 2, and a way out printed; the row
then restores the directory and runs that way out as printed, which must bring every host back); a good release, and
a release whose flagged feature breaks its health until the kill switch turns the flag off (mitigated). Each cell is a
(row, host): its expected host outcome, quarantine decision, cause class and deploy_outcome.py exit code are in the
table; the oracle derives the true outcome from the host alone and fails the cell on any word of the collection that
disagrees (see oracle.check_words), judged right after the row's run: every cell passes, none is marked as a known bug.
Each real incident report of a row is read as an operator reads it too (oracle.markdown_words): the Markdown
report's reason names a task that failed in the run's output, its likely cause the cause class, its per-host table
the release each host went back to, the paths restored and whether the restore was verified, and its timeline
folds every skipped step.

Cost: the three hosts of a row share one ansible-playbook run (about 36 runs for the whole table); the sites are
prepared once for the module and no step sleeps.
"""
import json
import os
import shlex
import shutil
import signal
import subprocess

import pytest
import yaml

from oracle import check_words, half_installed, history, ledger_of, observe, run_outcome, true_outcome, Words
from support import (DEMO, VENV_BIN, LocalDeploy, Receiver, add_migrations, assert_no_ignored_callback_errors,
                     load_example_build)

pytestmark = pytest.mark.slow

MIXES = ('code', 'db', 'flags')
FAIL = '''---
- name: Delete the directory of the release this deploy replaces (a hook gone wrong)
  ansible.builtin.file:
    path: "{{ failsafe_app_root }}/releases/{{ oracle_delete_release }}"
    state: absent
  when: oracle_delete_release is defined
- name: Fail here
  ansible.builtin.fail:
    msg: the {{ oracle_where | default('hook') }} fails
'''
OWN_PLAYBOOK = '''---
- name: Change a configuration directory, fail safe (no release, no service)
  hosts: own
  gather_facts: false
  vars:
    failsafe_release_id: "{{ own_release }}"
    failsafe_preflight_snapshot: true
    failsafe_snapshot_paths: ["{{ own_conf_dir }}"]
  roles:
    - failsafe.deploy.preflight
  tasks:
    - name: Write the new configuration
      ansible.builtin.copy:
        content: "level = {{ own_release }}\\n"
        dest: "{{ own_conf_dir }}/app.ini"
        mode: '0644'
    - name: A later step fails
      ansible.builtin.fail:
        msg: the new configuration broke something
      when: own_fail | default(false) | bool
    - name: Commit
      failsafe.deploy.transaction:
        phase: commit
        name: "{{ failsafe_name }}"
        state_dir: "{{ failsafe_state_dir }}"
        run_id: "{{ failsafe_run_id }}"
'''
MIGRATION = 'CREATE TABLE t%04d (id INTEGER PRIMARY KEY, name TEXT);'


def _e(**values):
    return ['-e', json.dumps(values)]


# name, phase, release mode, mixes, how (args/env/crash), expected: outcome, quarantined mixes, cause, exit code
ROWS = [
    # first deploys, on empty sites
    # first deploys, on empty sites: with no release to go back to, a rollback takes each host back to nothing
    # deployed (no current, nothing answering, no release half installed); each row leaves the sites so, for the next
    dict(name='first-input', mode='good', release='../x', outcome='refused', cause='input', exit=4),
    dict(name='first-open', mode='good', hook='preflight', outcome='rolled_back', cause='unknown', exit=1),
    dict(name='first-stage', mode='good', hook='release', outcome='rolled_back', cause='unknown', exit=1),
    dict(name='first-migrate', mode='good', broken_migration=True, outcome='rolled_back', cause='script_error',
         exit=1),
    # a release quarantined on the sites has a version of its own, so that first-deployed's 1.0.0 is not refused
    dict(name='first-activate-crash', mode='crash', version='4.0.0', outcome='rolled_back', quarantine=MIXES,
         cause='start_failure', exit=1),
    dict(name='first-activate-config', mode='good', version='1.0.1', args=_e(oracle_config_broken=True),
         outcome='rolled_back', quarantine=MIXES, cause='config_error', exit=1),
    dict(name='first-flags', mode='good', version='1.0.2', hook='flags', outcome='rolled_back', quarantine=MIXES,
         cause='unknown', exit=1),
    dict(name='first-verify', mode='unhealthy', outcome='rolled_back', quarantine=MIXES, cause='health', exit=1),
    dict(name='first-kill-after-activation', mode='good', crash='release.switched', outcome='rolled_back'),
    dict(name='first-host-crash-before-activation', mode='good', crash='release.staged-tmp', stop_app=True,
         outcome='rolled_back'),
    dict(name='first-deployed', mode='good', outcome='deployed', exit=0),
    # later deploys, from the verified release of the row before
    dict(name='later-input', mode='good', release='../x', outcome='refused', cause='input', exit=4),
    dict(name='later-flag-key', mode='good', args=_e(oracle_flag_key='no-such-flag'), outcome='refused',
         cause='input', exit=4),
    dict(name='later-open', mode='good', hook='preflight', outcome='rolled_back', cause='unknown', exit=1),
    dict(name='later-stage', mode='good', hook='release', outcome='rolled_back', cause='unknown', exit=1),
    dict(name='later-migrate', mode='good', broken_migration=True, outcome='rolled_back', cause='script_error',
         exit=1),
    dict(name='later-activate-crash', mode='crash', outcome='rolled_back', quarantine=MIXES, cause='start_failure',
         exit=1),
    dict(name='later-activate-config', mode='good', args=_e(oracle_config_broken=True), outcome='rolled_back',
         quarantine=MIXES, cause='config_error', exit=1),
    dict(name='later-flags', mode='good', hook='flags', outcome='rolled_back', quarantine=MIXES, cause='unknown',
         exit=1),
    dict(name='later-verify', mode='unhealthy', outcome='rolled_back', quarantine=MIXES, cause='health', exit=1),
    dict(name='later-kill-after-activation', mode='good', crash='release.switched', outcome='rolled_back'),
    dict(name='later-host-crash-before-activation', mode='good', crash='release.staged-tmp', stop_app=True,
         outcome='rolled_back'),
    dict(name='later-host-crash-after-activation', mode='good', crash='release.switched', stop_app=True,
         outcome='rolled_back'),
    # the after-verify hook deletes the directory of the release the deploy replaces, then fails: the rollback
    # switches back to a release that is not there, and the service cannot start on it (a failure in the verify role
    # is a health failure); the row then restores the directory from a backup and runs the way out the ROLLBACK
    # FAILED banner printed, which must bring every host back, so that the rows after it start from that release
    dict(name='later-rollback-fails', mode='good', hook='verify', delete_previous=True, outcome='rollback_failed',
         quarantine=MIXES, cause='health', exit=2),
    dict(name='later-deployed', mode='good', outcome='deployed', exit=0),
    dict(name='later-mitigated', mode='flagged', args=_e(oracle_flagged=True), outcome='mitigated', exit=0,
         hosts={'code': 'deployed', 'db': 'deployed', 'flags': 'mitigated'}),
    dict(name='later-commit', mode='good', hook='commit', outcome='deployed', after_commit=True, exit=3),
    # an operator's own playbook, with neither release nor service
    dict(name='own-input', own=True, release='../x', outcome='refused', cause='input', exit=4),
    dict(name='own-fails', own=True, fail=True, outcome='rolled_back', cause='unknown', exit=1),
    dict(name='own-deployed', own=True, outcome='deployed', exit=0),
]
CELLS = [pytest.param(row['name'], mix, id='%s-%s' % (row['name'], mix))
         for row in ROWS for mix in (('own',) if row.get('own') else MIXES)]


class Table:
    """The four sites, their inventory and the runs of the table."""

    def __init__(self, base, receiver):
        self.base = base
        self.receiver = receiver
        self.build = load_example_build()
        self.sites = {}
        for mix in MIXES + ('own',):
            site = LocalDeploy(os.path.join(base, mix), receiver)
            site.name, site.own, site.after, site.mix = 'demo-app', mix == 'own', None, mix
            self.sites[mix] = site
        self.report_dir = os.path.join(base, 'incidents')
        self.serial = 0
        self.results = {}
        flags = self.sites['flags']
        flags.flag_file = os.path.join(flags.dir, 'flags', 'app.flagd.json')
        os.makedirs(os.path.dirname(flags.flag_file))
        with open(flags.flag_file, 'w') as handle:
            json.dump({'flags': {'new-checkout': {'state': 'ENABLED', 'variants': {'on': True, 'off': False},
                                                  'defaultVariant': 'off', 'targeting': {}}}}, handle, indent=2)
        db = self.sites['db']
        db.db_path = os.path.join(db.dir, 'db', 'app.db')
        os.makedirs(os.path.dirname(db.db_path))
        open(db.db_path, 'wb').close()  # the SQLite file must exist before the first migration
        own = self.sites['own']
        own.own_paths = [os.path.join(own.dir, 'etc-myapp')]
        os.makedirs(own.own_paths[0])
        with open(os.path.join(own.own_paths[0], 'app.ini'), 'w') as handle:
            handle.write('level = info\n')
        self.hooks = os.path.join(base, 'fail.yml')
        with open(self.hooks, 'w') as handle:
            handle.write(FAIL)
        self.own_playbook = os.path.join(base, 'own.yml')
        with open(self.own_playbook, 'w') as handle:
            handle.write(OWN_PLAYBOOK)
        self.inventory = os.path.join(base, 'inventory.yml')
        self.write_inventory()
        self.env = dict(self.sites['code'].env, FAILSAFE_REPORT_DIR=self.report_dir,
                        FAILSAFE_SPOOL_PATH=os.path.join(self.report_dir, 'alerts.jsonl'))

    def write_inventory(self):
        with open(os.path.join(DEMO, 'inventory.yml')) as handle:
            demo = yaml.safe_load(handle)
        common = demo['all']['vars']
        for key in ('failsafe_demo_dir', 'failsafe_demo_port'):
            common.pop(key)
        common['failsafe_activate_before_tasks'] = os.path.join(DEMO, 'release-changes.yml')
        config = ('{"bind": "127.0.0.1", "port": {{ failsafe_demo_port }}, "label": "release {{ failsafe_release_id '
                  '}}"{{ oracle_flags_setting | default("") }}}')
        common['failsafe_config_files'] = [{
            'dest': '{{ failsafe_app_root }}/shared/config/app.json',
            'content': ('{%% if oracle_config_broken | default(false) | bool %%}bind = [{%% else %%}%s{%% endif %%}'
                        % config)}]
        hosts = {}
        for mix, site in self.sites.items():
            host = {'ansible_connection': 'local', 'ansible_python_interpreter': '{{ ansible_playbook_python }}',
                    'failsafe_demo_dir': site.dir, 'failsafe_demo_port': str(site.port)}
            hosts[mix] = host
        flags = self.sites['flags']
        hosts['flags'].update({
            'oracle_flags_setting': ', "flags_file": "%s"' % flags.flag_file,
            # every release sets a flag of its own, so that each deploy changes the flag file
            'failsafe_flags': (
                "{{ [{'path': '%s', 'create': oracle_flag_key is not defined and oracle_flagged is not defined, "
                "'flags': {oracle_flag_key: {'enabled': true}} if oracle_flag_key is defined else "
                "{'new-checkout': {'enabled': true}} if oracle_flagged is defined else "
                "{('seen-' ~ failsafe_release_id): {'enabled': true, 'variants': {'on': true, 'off': false}}}}] }}"
                % flags.flag_file),
            # the kill switch of the escalation ladder, where the row's release breaks a feature behind a flag
            'failsafe_flags_kill_switch': (
                "{{ [{'path': '%s', 'flags': {'new-checkout': {'state': 'DISABLED'}}}] if oracle_flagged is defined "
                "else [] }}" % flags.flag_file)})
        db = self.sites['db']
        hosts['db'].update({'failsafe_migrate_enabled': True, 'failsafe_migrate_engine': 'sqlite',
                            'failsafe_migrate_database': db.db_path})
        own = self.sites['own']
        hosts['own'].update({'own_conf_dir': own.own_paths[0], 'failsafe_state_dir': own.state_dir,
                             'failsafe_app_root': os.path.join(own.dir, 'no-app-here')})
        with open(self.inventory, 'w') as handle:
            yaml.safe_dump({'all': {'hosts': hosts, 'vars': common}}, handle, sort_keys=False)

    def release(self, row):
        """A fresh release id for the row, built into every site's dist (the database site's with migrations)."""
        self.serial += 1
        if row['name'].startswith('first-'):
            version = row.get('version') or {'unhealthy': '3.0.0'}.get(row['mode'], '1.0.0')
            self.serial = 1
        else:
            version = '%d.%d.0' % ({'good': 2, 'unhealthy': 3, 'crash': 4, 'flagged': 6}[row['mode']], self.serial)
        for mix in MIXES:
            dist = os.path.join(self.sites[mix].dir, 'dist')
            self.build.build(dist, 0, [(version, row['mode'])])
            if mix == 'db':
                files = {}
                for n in range(1, self.serial + 1):
                    files['%04d_t.up.sql' % n] = MIGRATION % n
                    files['%04d_t.down.sql' % n] = 'DROP TABLE t%04d;' % n
                if row.get('broken_migration'):
                    files['%04d_t.up.sql' % self.serial] = 'CREATE TABLE oops (;'
                add_migrations(os.path.join(dist, 'app-%s.tar.gz' % version), files)
        return version

    def run(self, argv, extra_env=None, raw=False):
        """ansible-playbook with the table's inventory and ``argv`` (with ``raw``: ``argv`` as it is)."""
        env = dict(self.env, **(extra_env or {}))
        cmd = argv if raw else ['ansible-playbook', '-i', self.inventory] + argv
        proc = subprocess.Popen(cmd, env=env, cwd=self.base, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, start_new_session=True)
        try:
            out, dummy = proc.communicate(timeout=900)
        finally:
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # what a killed controller left running
            except OSError:
                pass
        with open(os.path.join(self.base, 'runs.log'), 'a') as log:
            log.write('$ %s %s\n%s\nrc=%s\n' % (' '.join('%s=%s' % kv for kv in (extra_env or {}).items()),
                                                ' '.join(cmd), out, proc.returncode))
        assert_no_ignored_callback_errors(out, where=' '.join(cmd))
        return proc.returncode, out

    def stop_app(self, site):
        """The host came back without its app running. On a first deploy that crashed before its activation no app
        was ever loaded (supervisor knows no such program, or does not run yet): then nothing may answer."""
        conf = os.path.join(site.dir, 'supervisor', 'supervisord.conf')
        proc = subprocess.run([os.path.join(VENV_BIN, 'supervisorctl'), '-c', conf, 'stop', 'demo-app'],
                              capture_output=True, text=True, check=False) if os.path.exists(conf) else None
        said = (proc.stdout + proc.stderr) if proc else 'no supervisor configuration'
        if proc is None or 'no such process' in said or 'no such file' in said or 'refused connection' in said:
            assert observe(site)['served'] is None, said
        else:
            assert 'stopped' in said or 'not running' in said, said

    def play_row(self, row):
        mixes = ('own',) if row.get('own') else MIXES
        sites = dict((mix, self.sites[mix]) for mix in mixes)
        before = dict((mix, observe(site)) for mix, site in sites.items())
        before_history = dict((mix, history(site)) for mix, site in sites.items())
        # a report directory of the row's own, as a pipeline uses a fresh one per run (deploy_outcome.py reads the
        # newest report in it)
        self.report_dir = os.path.join(self.base, 'incidents', row['name'])
        self.env['FAILSAFE_REPORT_DIR'] = self.report_dir
        self.env['FAILSAFE_SPOOL_PATH'] = os.path.join(self.report_dir, 'alerts.jsonl')
        reports_before = set()
        alerts_before = len(self.receiver.events)
        if row.get('own'):
            self.serial += 1
            version = row.get('release') or 'config-%d' % self.serial
            argv = [self.own_playbook, '-e', 'own_release=%s' % version] + (
                _e(own_fail=True) if row.get('fail') else [])
        else:
            version = self.release(row)
            if row.get('release'):
                version = row['release']
            argv = ['failsafe.deploy.deploy', '--limit', ':'.join(MIXES), '-e', 'release_version=%s' % version] + \
                list(row.get('args', []))
            if row.get('hook'):
                argv += ['-e', 'failsafe_%s_after_tasks=%s' % (row['hook'], self.hooks),
                         '-e', 'oracle_where=%s' % row['hook']]
        result = {'version': version, 'before': before}
        if row.get('delete_previous'):
            previous = set(b['current'] for b in before.values())
            assert len(previous) == 1 and None not in previous, before
            result['previous'] = previous.pop()
            argv += ['-e', 'oracle_delete_release=%s' % result['previous']]
            for site in sites.values():  # the operator's backup, to restore after the row
                shutil.copytree(os.path.join(site.app_root, 'releases', result['previous']),
                                os.path.join(site.dir, 'backup-' + result['previous']), symlinks=True)
        if row.get('crash'):
            rc, out = self.run(argv, {'FAILSAFE_CRASH_AT': row['crash'], 'FAILSAFE_CRASH_SCOPE': 'controller'})
            result['deploy_rc'] = rc
            if row.get('stop_app'):
                for site in sites.values():
                    self.stop_app(site)  # the host came back without its app running
            rc, out = self.run(['failsafe.deploy.recover', '--limit', ':'.join(MIXES)])
            result['recover'] = (rc, out)
        else:
            rc, out = self.run(argv)
        for mix, site in sites.items():
            site.before, site.after = before[mix], observe(site)
        turned_on = dict(flags='new-checkout') if row.get('mode') == 'flagged' else {}
        result['truth'] = dict((mix, true_outcome(before[mix], sites[mix].after, version, own=sites[mix].own,
                                                  turned_on=turned_on.get(mix)))
                               for mix in mixes)
        result['words'] = Words(rc, out, self.report_dir, reports_before, self.receiver.events[alerts_before:],
                                self.inventory)
        result['history'] = before_history
        result['sites'] = sites
        # the words are judged now, before anything else touches the hosts (the ledger, history_info)
        result['wrong'] = dict((mix, judge(row, result, mix)) for mix in mixes)
        if row.get('delete_previous'):
            result['repair'] = self.repair(result)
        return result

    def repair(self, result):
        """After a rollback that failed because a release directory was deleted: the operator restores it from the
        backup and runs the way out the ROLLBACK FAILED banner printed, exactly as printed (recover.yml when it
        printed none). Returns what is still wrong with the hosts after it (the rows after this one start from
        there)."""
        wrong = []
        for site in result['sites'].values():
            os.rename(os.path.join(site.dir, 'backup-' + result['previous']),
                      os.path.join(site.app_root, 'releases', result['previous']))
        commands = result['words'].way_out()
        if commands:
            argv = shlex.split(commands[0])
        else:
            wrong.append('no way out was printed: recover.yml ran instead')
            argv = ['ansible-playbook', '-i', self.inventory, 'failsafe.deploy.recover', '--limit', ':'.join(MIXES)]
        self.env['FAILSAFE_REPORT_DIR'] += '-way-out'
        self.env['FAILSAFE_SPOOL_PATH'] = os.path.join(self.env['FAILSAFE_REPORT_DIR'], 'alerts.jsonl')
        rc, out = self.run(argv, raw=True)
        if rc != 0:
            wrong.append('the way out %r exited %s' % (argv, rc))
        for mix, site in result['sites'].items():
            after = observe(site)
            outcome, why = true_outcome(result['before'][mix], after, result['version'])
            if outcome != 'rolled_back':
                wrong.append('%s: after the way out the host shows %s (%s)' % (mix, outcome, why))
            last = (history(site).get('transactions') or [{}])[0]
            if (last.get('release'), last.get('status')) != (result['version'], 'rolled_back'):
                wrong.append('%s: after the way out history_info says the last transaction is %r' % (mix, last))
        return wrong

    def stop(self):
        for site in self.sites.values():
            site.stop()


@pytest.fixture(scope='module')
def table(tmp_path_factory):
    receiver = Receiver()
    t = Table(str(tmp_path_factory.mktemp('oracle')), receiver)
    try:
        yield t
    finally:
        t.stop()
        receiver.close()


def _crash_words(row, result):
    """A deploy whose controller died: the words are those of recover.yml, which must end the transaction."""
    wrong = []
    rc, out = result['recover']
    if result['deploy_rc'] == 0:
        wrong.append('the killed deploy exited 0')
    if rc != 0 or 'ROLLBACK FAILED' in out:
        wrong.append('recover.yml exited %s%s' % (rc, ' saying ROLLBACK FAILED' if 'ROLLBACK FAILED' in out else ''))
    for mix, site in result['sites'].items():
        ledger = ledger_of(site)
        left = half_installed(site.before, site.after, ledger)
        if left:
            wrong.append('%s: a release is left half installed in releases/: %r' % (mix, left))
        state = (ledger.get('releases', {}).get(result['version']) or {}).get('state')
        if state == 'failed':
            wrong.append('%s: release %s was quarantined though nothing showed it bad' % (mix, result['version']))
        seen = history(site)
        last = (seen.get('transactions') or [{}])[0]
        if (last.get('release'), last.get('status')) != (result['version'], 'rolled_back'):
            wrong.append('%s: history_info says the last transaction is %r' % (mix, last))
        if seen.get('current_release') != site.after['current']:
            wrong.append('%s: history_info says current %s, the host has %s' % (
                mix, seen.get('current_release'), site.after['current']))
    return wrong


def judge(row, result, mix):
    """Every word of the collection about the row's run that the hosts do not show, for the cell of ``mix``."""
    site = result['sites'][mix]
    if row.get('crash'):
        return _crash_words(row, result)
    if row.get('after_commit'):
        # a failure after the commit: the release stays, verified; nothing is rolled back
        words = result['words']
        wrong = []
        if words.reports:
            wrong.append('a failure after the commit wrote incident reports')
        if words.verdict_code != row['exit']:
            wrong.append('deploy_outcome.py exited %s, not %s' % (words.verdict_code, row['exit']))
        if (ledger_of(site).get('releases', {}).get(result['version']) or {}).get('state') != 'verified':
            wrong.append('%s: the committed release is not verified in the ledger' % mix)
        return wrong
    quarantine = dict((m, m in row.get('quarantine', ())) for m in result['sites'])
    expect = {'outcome': row['outcome'], 'cause': row.get('cause'), 'exit': row.get('exit'),
              'quarantine': quarantine}
    return check_words(result['words'], dict((m, t[0]) for m, t in result['truth'].items()), expect,
                       result['sites'], result['version'], result['history'])


@pytest.mark.parametrize('row_name,mix', CELLS)
def test_outcome_oracle(table, row_name, mix):  # pylint: disable=redefined-outer-name
    """Given the hosts as the rows before left them, when the row's deploy meets its failure (and the recovery it
    needs runs), then this host is in the state the cell expects, derived from the host alone, and every word of the
    collection about the run agrees with the hosts."""
    row = next(r for r in ROWS if r['name'] == row_name)
    if row_name not in table.results:
        table.results[row_name] = table.play_row(row)
    result = table.results[row_name]
    outcome, why = result['truth'][mix]
    log = 'see %s/runs.log' % table.base
    expected_host = row.get('hosts', {}).get(mix) or (
        row['outcome'] if row['outcome'] in ('deployed', 'refused', 'rollback_failed') else 'rolled_back')
    assert outcome == expected_host, '%s on %s: the host shows %s (%s), the table expects %s; %s' % (
        row_name, mix, outcome, why, expected_host, log)
    site = result['sites'][mix]
    if outcome == 'rolled_back' and not site.own:
        assert site.after['served'] == result['before'][mix]['served'], (site.after, log)
    wrong = result['wrong'][mix]
    assert not wrong, '%s on %s (%s): the collection said what the hosts do not show:\n- %s\n%s' % (
        row_name, mix, run_outcome(dict((m, t[0]) for m, t in result['truth'].items())), '\n- '.join(wrong), log)
    if 'repair' in result:
        assert not result['repair'], '%s: the repair after it left the hosts wrong:\n- %s\n%s' % (
            row_name, '\n- '.join(result['repair']), log)
