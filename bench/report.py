# -*- coding: utf-8 -*-
# Copyright: Contributors to failsafe.deploy
# SPDX-License-Identifier: GPL-3.0-or-later
"""Renders results.json as results.md. Every number comes from the results; nothing here is a measurement."""

import time


def _s(st, unit='s', digits=2):
    if not st:
        return 'n/a'
    fmt = '%%.%df' % digits
    if st['n'] == 1:
        return (fmt + ' %s') % (st['median'], unit)
    return (fmt + ' %s (%s-%s)') % (st['median'], unit, fmt % st['min'], fmt % st['max'])


def _met(flag):
    return '**met**' if flag else '**missed**'


def _stamp(t):
    return time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(t))


def recovery_md(rows):
    out = ['## 1. Time to recover', '',
           'From the end of the failing task (last failed result of the health check) to every host back on the last '
           'verified release and answering healthy. Ours: the `auto_rollback` callback launching '
           '`failsafe.deploy.rollback` (one `failsafe.deploy.transaction` call per host); phases from the incident '
           'report (timeline `rollback_start`/`rollback_end`), the rollback process\'s start and the engine\'s own '
           'timings (verification: the slowest host\'s health checks and proof of the restore). Baseline: `bench/baseline_rollback.yml` (symlink back, '
           '`supervisorctl restart`, wait for `/health`) started as soon as a plain deploy of the same unhealthy '
           'release (`bench/playbooks/baseline_fail.yml`: upload, unpack, switch, restart, health check) exits '
           'failed. '
           'Median (min-max) of the repeats.', '',
           '| hosts | repeats | | total | detection | rollback playbook start | restore | verification | ratio |',
           '| --- | --- | --- | --- | --- | --- | --- | --- | --- |']
    for row in rows:
        for who, key in (('failsafe.deploy', 'ours'), ('baseline', 'baseline')):
            d = row[key]
            out.append('| %s | %s | %s | %s | %s | %s | %s | %s | %s |' % (
                row['hosts'] if key == 'ours' else '', row['repeats'] if key == 'ours' else '', who,
                _s(d['total']), _s(d['detection']), _s(d['playbook_start']), _s(d['restore']),
                _s(d['verification']), ('%.2f' % row['ratio']) if key == 'ours' and row['ratio'] else ''))
    ten = [r for r in rows if r['hosts'] == max(x['hosts'] for x in rows)][0]
    total = ten['ours']['total']['median']
    phases = dict((k, ten['ours'][k]['median']) for k in ('detection', 'playbook_start', 'restore', 'verification'))
    worst = max(phases, key=phases.get)
    out += ['', 'Aim (docs DESIGN "Speed"): detect, roll back and verify 10 hosts in about 3 s. On %d hosts: %.1f s, '
            '%s; the largest phase is %s (%.1f s of %.1f s). The restore phase is the one rollback call on every '
            'host: the SSH round trip and module start, the snapshot restore, the switch, the restart under '
            'supervisor (which waits `startsecs`, 2 s) and, here counted apart as verification, the health checks '
            'and the proof of the restore.'
            % (ten['hosts'], total, _met(total <= 3.0), worst, phases[worst], total)]
    if ten.get('target') is not None and ten.get('ratio') is not None:
        out.append('Target: time to recover on %d hosts at most %.1fx the baseline: %.2fx, %s.'
                   % (ten['hosts'], ten['target'], ten['ratio'], _met(ten.get('met'))))
    if ten.get('remote_runs_per_host'):
        out.append('Tasks run on each host by the rollback: %s (failsafe.deploy / baseline), counted in this run%s; '
                   'the restart under supervisor waits `startsecs` (2 s) on both sides.'
                   % (_runs(ten, ('ours', 'baseline')),
                      ' (target at most %d: %s)' % (ten['tasks_target'], _met(ten.get('tasks_met')))
                      if ten.get('tasks_target') else ''))
    out.append('')
    return out


def snapshot_md(d):
    s, disk, r = d['seconds'], d['extra_disk_kb'], d['ratios']
    out = ['## 2. Snapshot cost', '',
           'Tree: %d files, %.0f MB (%d kB on disk), generated in a temp dir on the same disk, page cache warm. '
           'Store called directly (module_utils, one fresh process per operation); %d repeat(s).'
           % (d['files'], d['bytes'] / 1048576.0, d['tree_kb'], d['repeats']), '',
           '| operation | time | extra disk |', '| --- | --- | --- |']
    names = (('first', 'first snapshot'), ('unchanged', 'unchanged re-snapshot'),
             ('changed_1pct', 're-snapshot after changing 1% of files'), ('restore_1pct', 'restore after changing 1%'),
             ('cp_a', 'baseline `cp -a` into a fresh folder'), ('rsync_a', 'baseline `rsync -a` into a fresh folder'),
             ('rsync_a_unchanged', 'baseline `rsync -a` again onto its unchanged copy'), ('tar', 'baseline `tar -cf`'))
    for key, label in names:
        extra_disk = _s(disk[key], 'kB', 0) if key in disk else ''
        out.append('| %s | %s | %s |' % (label, _s(s[key], digits=3), extra_disk))
    out += ['', 'Ratios (medians): ' + ', '.join('%s %.3f' % (k, v) for k, v in sorted(r.items()) if v is not None), '',
            'Target: unchanged re-snapshot <= 5%% of the first one\'s time: %.1f%%, %s; <= 1%% extra disk: %.2f%%, %s.'
            % (100 * r['unchanged_vs_first_time'], _met(d['target']['met_time']),
               100 * r['unchanged_vs_first_disk'], _met(d['target']['met_disk']))]
    c = d['store_counters'].get('unchanged', {})
    out.append('Unchanged re-snapshot work: %d files stat-checked, %d cache hits, %d files (%d bytes) re-hashed, '
               '%d new objects.' % (c.get('files', 0), c.get('cache_hits', 0), c.get('hashed', 0),
                                    c.get('bytes_hashed', 0), c.get('objects_new', 0)))
    if not d['target']['met_time']:
        out.append('What limits it: an unchanged re-snapshot still walks and stats every file and writes a full '
                   'manifest; its cost follows the number of files, not what changed.')
    m = d['module']
    out += ['', 'Through the real module (`ansible localhost -m failsafe.deploy.snapshot`, one run each, including '
            'ansible start-up): first %.2f s, unchanged %.2f s (ratio %.3f); module process peak RSS %.1f MB.'
            % (m['first']['seconds'], m['unchanged']['seconds'], m['unchanged_vs_first_time'],
               max(m['first']['module_peak_rss_mb'], m['unchanged']['module_peak_rss_mb'])), '']
    return out


def callback_md(d):
    out = ['## 3. Callback overhead', '',
           'A generated playbook of %d localhost tasks (debug, set_fact, command true), runs interleaved, %d each; '
           'CPU time is user + system of the whole process tree.' % (d['tasks'], d['repeats']), '',
           '| | wall time | CPU time | controller peak RSS |', '| --- | --- | --- | --- |',
           '| callback enabled | %s | %s | %s |' % (
               _s(d['enabled']), _s(d.get('cpu_enabled')), _s(d['controller_peak_rss_mb']['enabled'], 'MB', 0)),
           '| callback disabled | %s | %s | %s |' % (
               _s(d['disabled']), _s(d.get('cpu_disabled')), _s(d['controller_peak_rss_mb']['disabled'], 'MB', 0)),
           '',
           'Wall-time ratio %.3f (target <= 1.03: %s), %.2f ms per task; CPU-time ratio %s.'
           % (d['ratio'], _met(d['met']), d['per_task_ms'],
              '%.3f' % d['cpu_ratio'] if d.get('cpu_ratio') else 'n/a')]
    prof = d.get('profile')
    if prof:
        out.append('Inside the controller (one more enabled run under cProfile): the callback\'s handlers ran %d '
                   'times for %.3f s in all, %.3f ms per task, %.2f%% of that run\'s %.1f s.'
                   % (prof['callback_calls'], prof['callback_seconds'], prof['per_task_ms'], 100 * prof['share'],
                      prof['wall_seconds']))
        if not d['met'] and prof['share'] is not None and prof['share'] < 0.03:
            out.append('What limits the measurement: the callback itself costs %.2f%%, so the rest of the wall-time '
                       'difference is run-to-run variation (the runs of one side spread over up to %.1f%% of their '
                       'median).' % (100 * prof['share'], 100 * (d.get('noise') or 0)))
        elif not d['met']:
            out.append('What limits it: the callback\'s own work per event (%.3f ms per task).' % prof['per_task_ms'])
    out.append('')
    return out


def interpreter_md(d):
    out = ['## 11. The tooling\'s interpreter', '',
           'The callback benchmark\'s playbook of %d localhost tasks (the `auto_rollback` callback enabled) with the '
           'virtualenv\'s packages under each Python of its version on this machine, modules included, runs '
           'interleaved, %d each; CPU time is user + system of the whole process tree. `scripts/venv.sh` makes the '
           'virtualenvs from the distribution\'s build when there is one of the version of `python3`.'
           % (d['tasks'], d['repeats']), '',
           '| interpreter | version | wall time | CPU time | CPU time / virtualenv\'s |', '| --- | --- | --- | --- | --- |']
    for row in d['rows']:
        out.append('| %s (`%s`) | %s | %s | %s | %s |' % (
            row['side'], row['real_path'], row['version'], _s(row['wall']), _s(row['cpu']),
            '%.3f' % row['cpu_ratio_to_virtualenv'] if row.get('cpu_ratio_to_virtualenv') else 'n/a'))
    out.append('')
    return out


def _option_md(d, title, option, intro):
    """The demo's deploy with a callback option on and off: a section of 12. or 13."""
    out = [title, '', intro % (d['deploy'], d['repeats']),
           '', '| %s | wall time | CPU time | peak memory |' % option, '| --- | --- | --- | --- |']
    for row in d['rows']:
        out.append('| %s | %s | %s | %s |' % (row['side'], _s(row['wall']), _s(row['cpu']),
                                              _s(row['peak_rss_kb'], 'kB', 0)))
    out += ['', 'On against off: CPU time %s, wall time %s, peak memory %s.' % tuple(
        '%.3f' % d[key] if d.get(key) else 'n/a'
        for key in ('cpu_ratio_on_to_off', 'wall_ratio_on_to_off', 'peak_rss_ratio_on_to_off')), '']
    return out


def gc_freeze_md(d):
    return _option_md(
        d, '## 12. The callback\'s gc_freeze', 'gc_freeze',
        'The demo\'s deploy (`%s`: one local host, a private supervisord, the `auto_rollback` callback enabled; '
        '1.0.0 and 2.0.0 in turn, each a new release) with `FAILSAFE_GC_FREEZE` true (the default: garbage '
        'collected and the collector\'s objects frozen before each of the workers\' forks) and false, interleaved, '
        '%d run(s) a side; CPU time is user + system of the whole process tree (modules, supervisorctl and the app\'s '
        'restart included), memory the peak of the process tree.')


def payload_cache_md(d):
    return _option_md(
        d, '## 13. The callback\'s payload_cache', 'payload_cache',
        'The demo\'s deploy (`%s`, as in 12.) with `FAILSAFE_PAYLOAD_CACHE` true (the default: the payload of the '
        'transaction module, which an untimed first deploy built and kept in a store of this part\'s own, is copied '
        'into the run instead of built) and false (ansible-core builds it, as in every run without the callback), '
        'interleaved, %d run(s) a side; CPU time and memory as in 12.')


def scaling_md(rows):
    out = ['## 4. Fleet scaling', '',
           'A good deploy of the example app with 500 filler files (`failsafe.deploy.deploy`, callback enabled) '
           'against `bench/playbooks/baseline_deploy.yml` (upload archive, unpack to releases/<id>, switch symlink, '
           '`supervisorctl restart`), interleaved, on the same hosts. forks=30; a row with waves deploys that many '
           'hosts at a time on both sides (`serial`).', '',
           '| hosts | waves of | repeats | deploy | baseline | ratio | target <= %.1f | tasks run on each host '
           '(deploy / baseline) | target <= %d tasks | slowest tasks of the deploy (mean s) |'
           % (rows[0].get('target', 1.5) if rows else 1.5, rows[0].get('tasks_target', 10) if rows else 10),
           '| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |']
    for row in rows:
        slowest = '; '.join('%s %.1f' % (t['task'].split(' : ')[-1], t['seconds']) for t in row['slowest_tasks'])
        out.append('| %d | %s | %d | %s | %s | %.2f | %s | %s | %s | %s |' % (
            row['hosts'], row.get('serial') or 'all', row['repeats'], _s(row['deploy'], digits=1),
            _s(row['baseline'], digits=1), row['ratio'], _met(row['met']), _runs(row), _met(row.get('tasks_met')),
            slowest))
    if not all(r['met'] for r in rows):
        missed = [r for r in rows if not r['met']]
        trips = missed[-1].get('remote_runs_per_host') or {}
        mine, base = (trips.get('deploy') or {}).get('median'), (trips.get('baseline') or {}).get('median')
        slow = '; '.join('%s %.1f s' % (t['task'].split(' : ')[-1], t['seconds'])
                         for t in missed[-1]['slowest_tasks'])
        out += ['', 'What limits it (missed on %s hosts): a deploy runs %s tasks on each host (open with the snapshot, '
                'stage, activate, verify, commit) where the baseline runs %s, counted in this run, so the round trips '
                'are even; the difference is the work inside them, on a controller whose 2 CPUs serve every host. '
                'On %d hosts the slowest were: %s. Activation restarts under supervisor and waits its `startsecs` '
                '(2 s) as the baseline does, and also writes the configuration and supervisor files and records the '
                'layers; the open probes the running release and snapshots, and the verify runs the health checks: '
                'work the baseline does not do.'
                % (', '.join(str(r['hosts']) for r in missed), '%.0f' % mine if mine else 'n/a',
                   '%.0f' % base if base else 'n/a', missed[-1]['hosts'], slow)]
    out.append('')
    return out


def deploy_host_work_md(breakdown, transport=None):
    """The host's share of a good deploy, from the breakdown's runs (section 9), and the controller's, from the
    transport part's CPU time (section 10), to name what the ratio is made of."""
    calls = [r for r in breakdown.get('deploy') or [] if r.get('module') == 'transaction']
    if not calls:
        return []
    total = sum(r['seconds'] + r.get('interpreter_start', 0) for r in calls)
    cats = {}
    for r in calls:
        for name, seconds in r['categories'].items():
            cats[name] = cats.get(name, 0) + seconds
    service = cats.get('service layer (manager and waits)', 0)
    imports = cats.get('imports', 0) + sum(r.get('interpreter_start', 0) for r in calls)
    out = ['From the breakdown (section 9, one host): the %d transaction calls of a good deploy take %.2f s on the '
           'host; %.2f s of it is the service layer (the restart and its `startsecs` wait, which the baseline waits '
           'too), %.2f s the interpreter\'s start and imports (each call unpacks a %.0f KB AnsiballZ payload and '
           'imports the module_utils in it: ansible\'s compiled again in every call, the collection\'s loaded from the '
           'host\'s bytecode cache), %.2f s the health probes and %.2f s the rest. With the restart\'s '
           'wait left out, the host works %.2f s per deploy; the rest of a deploy\'s time over the baseline\'s is spent '
           'off the host, in the controller, which templates and sends five calls with their arguments for every '
           'host on its 2 CPUs (not broken down here).'
           % (len(calls), total, service, imports, max(r.get('payload_kb') or 0 for r in calls),
              cats.get('health probes', 0), max(total - service - imports - cats.get('health probes', 0), 0),
              total - service)]
    rows = [r for r in transport or [] if ((r.get('recommended') or {}).get('deploy_cpu') or {}).get('median')]
    if rows:
        row = rows[-1]
        cpu, wall = row['recommended']['deploy_cpu']['median'], row['recommended']['deploy']['median']
        out[-1] += (' On %d hosts (section 10, the recommended settings) the controller\'s process tree used %.1f '
                    'CPU-s for a good deploy of %.1f s, the %d hosts about %.1f s of their own work between them (%.2f s '
                    'each above, the restart\'s wait left out): on 2 CPUs the controller holds most of what the '
                    'deploy waits for.'
                    % (row['hosts'], cpu, wall, row['hosts'], row['hosts'] * (total - service), total - service))
    return out + ['']


def _runs(row, keys=('deploy', 'baseline')):
    trips = row.get('remote_runs_per_host') or {}
    vals = [(trips.get(k) or {}).get('median') for k in keys]
    return ' / '.join('%.0f' % v if v is not None else 'n/a' for v in vals)


def memory_md(results):
    out = ['## 5. Peak memory', '', '| what | peak RSS |', '| --- | --- |']
    for row in results.get('scaling') or []:
        out.append('| controller, good deploy on %d host%s (ansible-playbook process tree, callback on) | %s |'
                   % (row['hosts'], '' if row['hosts'] == 1 else 's', _s(row['controller_peak_rss_mb'], 'MB', 0)))
    for row in results.get('recovery') or []:
        out.append('| controller, failed deploy + automatic rollback on %d host%s (tree incl. the rollback) | %s |'
                   % (row['hosts'], '' if row['hosts'] == 1 else 's', _s(row['controller_peak_rss_mb'], 'MB', 0)))
    if results.get('callback'):
        out.append('| controller, %d-task localhost playbook, callback on / off | %s / %s |' % (
            results['callback']['tasks'], _s(results['callback']['controller_peak_rss_mb']['enabled'], 'MB', 0),
            _s(results['callback']['controller_peak_rss_mb']['disabled'], 'MB', 0)))
    if results.get('snapshot'):
        d = results['snapshot']
        out.append('| snapshot store (module_utils, own process maxrss), %d files / %.0f MB | %.1f MB |'
                   % (d['files'], d['bytes'] / 1048576.0, d['store_peak_rss_mb']))
        m = d['module']
        out.append('| snapshot module process (AnsiballZ), same tree | %.1f MB |'
                   % max(m['first']['module_peak_rss_mb'], m['unchanged']['module_peak_rss_mb']))
    out.append('')
    return out


def database_md(d):
    return ['## Database backup and restore (PostgreSQL)', '',
            'A generated database of %.0f MB on a private PostgreSQL 15 cluster. Ours: the database layer\'s backup '
            '(CREATE DATABASE ... TEMPLATE ... STRATEGY FILE_COPY, nothing else connected) plus its restore; with a '
            'client connected it falls back to pg_dump -Fd -j 2 plus pg_restore -j 2. Baseline: pg_dump -Fc plus '
            'pg_restore into a fresh database, in the same run.' % (d['db_bytes'] / 1024.0 ** 2), '',
            '| | backup + restore | |', '| --- | ---: | --- |',
            '| ours (template copy) | %s | backup %s, restore %s |'
            % (_s(d['ours']), _s(d['ours_backup']), _s(d['ours_restore'])),
            '| ours, a client connected (pg_dump -Fd -j 2) | %s | |' % _s(d['fallback']),
            '| pg_dump -Fc + pg_restore | %s | |' % _s(d['baseline']),
            '',
            'Ours is %.1fx as fast as pg_dump + pg_restore (aim: 10x, %s); the fallback %.1fx. Verifying a backup '
            'by the checksums of its schema and data takes %s.'
            % (d['speedup'] or 0, _met((d['speedup'] or 0) >= 10), d['fallback_speedup'] or 0,
               _s(d['verify_checksums'])), '']


SELF_REVERT_TARGET = 3.0
MECHANISMS = {'process': 'watchdog process (supervisor hosts)', 'systemd': 'systemd timer (systemd hosts)'}


def self_revert_md(rows, systemd_rows=None):
    rows = [dict(row, mechanism=row.get('mechanism', 'process')) for row in rows] + list(systemd_rows or [])
    out = ['## 6. Commit confirmed: the hosts revert by themselves', '',
           'A deploy whose controller is SIGKILLed right after every host switched (the verify step held on one '
           'host); no command runs after the kill. From the kill to every host back on the previous verified release '
           'and answering healthy. Each host reverts at its own deadline (`failsafe_confirm_timeout` from its '
           'activation), so most of the total is that wait; the last column is the host\'s own work after its '
           'deadline (restore, switch back, restart, health check, proof). Two mechanisms, measured in the same run: '
           'the fleet\'s hosts, the app under supervisor and the revert timer a watchdog process; and hosts whose '
           'PID 1 is systemd, the app a systemd unit (its unit file restored and reloaded by the revert) and the '
           'revert timer a transient systemd timer (`systemd-run`).', '',
           '| hosts | mechanism | deadline | kill to every host healthy | per host | host\'s revert after its '
           'deadline |',
           '| ---: | --- | ---: | ---: | ---: | ---: |']
    for row in rows:
        cells = (row['hosts'], MECHANISMS.get(row['mechanism'], row['mechanism']), row['confirm_timeout'],
                 _s(row['death_to_healthy']), _s(row['per_host_back']), _s(row['revert_after_deadline']))
        out.append('| %d | %s | %d s | %s | %s | %s |' % cells)
    out.append('')
    medians = [(MECHANISMS.get(row['mechanism'], row['mechanism']), (row.get('revert_after_deadline') or {}).get('median'))
               for row in rows]
    medians = [(name, median) for name, median in medians if median is not None]
    if medians:
        out += ['Target: a host\'s own revert after its deadline at most %.1f s median (2 s of it supervisor\'s '
                '`startsecs` or the unit\'s start): %s.' % (SELF_REVERT_TARGET, '; '.join(
                    '%s %.2f s, %s' % (name, median, _met(median <= SELF_REVERT_TARGET)) for name, median in medians)),
                '']
    for n in sorted(set(row['hosts'] for row in rows)):
        by = dict((row['mechanism'], row) for row in rows if row['hosts'] == n)
        if 'process' in by and 'systemd' in by:
            base = by['process']['revert_after_deadline']['median']
            if base:
                out += ['On %d hosts, the systemd timer / the watchdog process: host\'s revert after its deadline '
                        '%.2fx, kill to every host healthy %.2fx.'
                        % (n, by['systemd']['revert_after_deadline']['median'] / base,
                           by['systemd']['death_to_healthy']['median'] / by['process']['death_to_healthy']['median']),
                        '']
    return out


def _side_by_side_rows(rows, labels):
    """Table rows of a side-by-side part (bench/mitogen_bench.py): one line per (name, label) of each host count."""
    out = []
    for row in rows:
        for index, (name, label) in enumerate(labels):
            d = row[name]
            out.append('| %s | %s | %s | %s | %s | %s | %s |' % (
                row['hosts'] if not index else '', row['repeats'] if not index else '', label,
                _s(d['deploy']), _s(d['deploy_cpu']), _s(d['recovery']), _s(d['recovery_run'])))
    return out


def mitogen_md(rows):
    out = ['## 8. Mitogen: the default strategy and mitogen_linear', '',
           'The same deploys on the same fleet hosts, interleaved, under ansible\'s default strategy (`linear`) and '
           'under Mitogen\'s `mitogen_linear` (`ANSIBLE_STRATEGY_PLUGINS` at ansible_mitogen\'s strategy plugins); '
           'the rollback the callback launches runs under the strategy of its deploy. Good deploy: the whole '
           '`failsafe.deploy.deploy` run (wall time, and CPU time of the controller\'s process tree). Recovery: '
           'from the end of the failing health check to every host back on the last verified release and healthy, '
           'as in the time-to-recover row. Median (min-max) of the repeats.', '',
           '| hosts | repeats | strategy | good deploy | deploy CPU | recovery | failing run, rollback included |',
           '| ---: | ---: | --- | ---: | ---: | ---: | ---: |']
    out += _side_by_side_rows(rows, (('default', 'linear (default)'), ('mitogen', 'mitogen_linear')))
    for row in rows:
        out.append('')
        out.append('On %d host%s, mitogen_linear / default: good deploy %s, recovery %s.' % (
            row['hosts'], 's' if row['hosts'] != 1 else '', '%.2fx' % row['deploy_ratio'] if row.get('deploy_ratio') else 'n/a',
            '%.2fx' % row['recovery_ratio'] if row.get('recovery_ratio') else 'n/a'))
    return out + ['']


TRANSPORT_LABELS = (('recommended', 'recommended: pipelining, ControlPersist'),
                    ('no_pipelining', 'ansible\'s default: no pipelining'),
                    ('no_multiplexing', 'pipelining, no multiplexing'))


def transport_md(rows):
    out = ['## 10. Transport: SSH pipelining and multiplexing', '',
           'The same deploys on the same fleet hosts, interleaved, under the SSH settings examples/ansible.cfg '
           'recommends (`pipelining = true`; ansible\'s own `ControlMaster=auto -o ControlPersist=60s`, one SSH '
           'connection per host reused by every task), under ansible\'s default (`pipelining = false`: every module '
           'copied to a file on the host first, then run) and with pipelining but no multiplexing (`ssh_args = -C '
           '-o ControlMaster=no`: a new SSH connection per task). The rollback the callback launches runs with the '
           'settings of its deploy. Columns as in the Mitogen section. Median (min-max) of the repeats.', '',
           '| hosts | repeats | settings | good deploy | deploy CPU | recovery | failing run, rollback included |',
           '| ---: | ---: | --- | ---: | ---: | ---: | ---: |']
    out += _side_by_side_rows(rows, TRANSPORT_LABELS)
    for row in rows:
        out.append('')
        out.append('On %d host%s, against the recommended settings: %s.' % (
            row['hosts'], 's' if row['hosts'] != 1 else '', '; '.join(
                '%s good deploy %s, recovery %s' % (
                    label.split(':', maxsplit=1)[0], '%.2fx' % row['ratios_' + name]['deploy'] if row['ratios_' + name]['deploy'] else 'n/a',
                    '%.2fx' % row['ratios_' + name]['recovery'] if row['ratios_' + name]['recovery'] else 'n/a')
                for name, label in TRANSPORT_LABELS[1:])))
    return out + ['']


def breakdown_md(d, callback=None):
    cats = d['categories']
    out = ['## 9. Where a call\'s time goes: the breakdown', '',
           'Every module run on one fleet host (%s) during a good deploy, a failing deploy and its rollback, timed by '
           'category on the host (`bench/breakdown_bench.py`: an interpreter wrapper notes the AnsiballZ payload\'s '
           'size and a sitecustomize charges every moment of the run to the innermost category running, so a row\'s '
           'categories add up to its time). Interpreter start: from the process\'s start to the first line of '
           'Python that runs. Seconds, wall clock (waits included); one run each.' % d['host'], '',
           '| call | module | payload KB | interpreter start | run | %s |' % ' | '.join(cats),
           '| --- | --- | ---: | ---: | ---: |%s' % (' ---: |' * len(cats))]
    for label, key in (('deploy', 'deploy'), ('failing deploy', 'failing_deploy'), ('rollback', 'rollback')):
        for row in d.get(key) or []:
            out.append('| %s: %s | %s | %s | %.3f | %.3f | %s |' % (
                label, row['task'], row['module'], row['payload_kb'] if row['payload_kb'] is not None else 'n/a',
                row['interpreter_start'], row['seconds'],
                ' | '.join('%.3f' % row['categories'].get(c, 0.0) for c in cats)))
    runs = (d.get('deploy') or []) + (d.get('failing_deploy') or []) + (d.get('rollback') or [])
    total = sum(r['seconds'] + r['interpreter_start'] for r in runs)
    if total:
        sums = dict((c, sum(r['categories'].get(c, 0.0) for r in runs)) for c in cats)
        sums['interpreter start'] = sum(r['interpreter_start'] for r in runs)
        top = sorted(sums.items(), key=lambda kv: -kv[1])[:4]
        out += ['', 'Over these %d runs (%.1f s on the host): %s.' % (
            len(runs), total, ', '.join('%s %.1f s (%.0f%%)' % (k, v, 100.0 * v / total) for k, v in top))]
    rollback = d.get('rollback') or []
    if rollback:
        main = max(rollback, key=lambda r: r['seconds'])
        parts = sorted(main['categories'].items(), key=lambda kv: -kv[1])
        out.append('The rollback call (%s, %.2f s plus %.2f s interpreter start): %s.' % (
            main['task'], main['seconds'], main['interpreter_start'],
            ', '.join('%s %.2f s' % kv for kv in parts if kv[1] >= 0.005)))
    if callback and callback.get('profile'):
        prof = callback['profile']
        per_event = 1000.0 * prof['callback_seconds'] / max(prof['callback_calls'], 1)
        out.append('On the controller, the callback spends %.2f ms per event it receives (%d events, %.2f s of a '
                   '%.1f s run: the callback row).'
                   % (per_event, prof['callback_calls'], prof['callback_seconds'], prof['wall_seconds']))
    return out + ['']


def traffic_md(d):
    out = ['## 7. Traffic: blue-green and switch-back', '',
           'One app host with two slots behind a real load balancer (Debian\'s HAProxy 2.6, runtime API; nginx 1.22, '
           'include file and graceful reload), on this machine, under a steady load: a bounded client sending GET '
           '/version through the load balancer, one connection per request (keep-alive %s), counting every non-2xx '
           'answer and connection error. Blue-green: `playbooks/blue_green.yml` deploys 2.0.0 to the idle slot. '
           'Switch-back (target under %.1f s from the decision to traffic fully back, i.e. the first of 20 answers '
           'in a row from the old release): through `playbooks/switch_back.yml` (ansible-playbook\'s own start-up '
           'included), and the traffic layer called as the load balancer host runs it. Baseline in the same run: '
           '`playbooks/deploy.yml` deploying 2.1.0 to both slots one at a time (`failsafe_serial=1`), each restarted '
           'in place while the load balancer sends it traffic.'
           % ('on' if d.get('keep_alive') else 'off', d['target_switch_back_s']), '',
           '| load balancer | failed: blue-green deploy | failed: switch-backs | failed: rolling deploy (baseline) '
           '| switch-back, layer: done / traffic back | switch-back, playbook: traffic back | requests |',
           '| --- | --- | --- | --- | --- | --- | --- |']
    for name, r in sorted(d['drivers'].items()):
        out.append('| %s | %d of %d | %d | %d of %d | %s / %s | %s | %d |' % (
            name, r['bluegreen_failed'], r['bluegreen_requests'], r['switch_back_failed'], r['rolling_failed'],
            r['rolling_requests'], _s(r['switch_back_layer'], digits=3), _s(r['switch_back_layer_traffic'], digits=3),
            _s(r['switch_back_playbook_traffic']), r['requests']))
    out += ['', 'Switch-back under %.1f s from the decision to traffic fully back (traffic layer, every load '
            'balancer): %s.' % (d['target_switch_back_s'], _met(d.get('met'))), '']
    return out


def markdown(results):
    meta = results['meta']
    out = ['# Benchmarks', '',
           'Written by `make bench` (`scripts/bench.sh`, `bench/run.py`)%s. Run %s, %.0f s (%.1f min; budget 35 min: '
           '%s), on %s (%d CPUs), collection %s. Load average at start %s, at end %s%s.'
           % (' in smoke mode (tiny sizes; not representative)' if meta['smoke'] else '', _stamp(meta['started']),
              meta['seconds'], meta['seconds'] / 60.0, _met(meta['seconds'] <= 2100), meta['host'], meta['cpus'],
              meta['commit'], '/'.join('%.1f' % x for x in meta['loadavg_start']),
              '/'.join('%.1f' % x for x in meta['loadavg_end']),
              ': the machine was busy when the run started, which inflates the times'
              if meta['loadavg_start'][0] > meta['cpus'] / 2.0 else ' (the end includes the benchmark\'s own load)'),
           '']
    for key, func in (('recovery', recovery_md), ('snapshot', snapshot_md), ('callback', callback_md),
                      ('database', database_md), ('scaling', scaling_md), ('traffic', traffic_md)):
        if results.get(key):
            out += func(results[key])
            if key == 'scaling' and results.get('breakdown') and not all(r['met'] for r in results[key]):
                out += deploy_host_work_md(results['breakdown'], results.get('transport'))
    out += memory_md(results)
    if results.get('self_revert') or results.get('self_revert_systemd'):
        out += self_revert_md(results.get('self_revert') or [], results.get('self_revert_systemd'))
    if results.get('mitogen'):
        out += mitogen_md(results['mitogen'])
    if results.get('breakdown'):
        out += breakdown_md(results['breakdown'], results.get('callback'))
    if results.get('transport'):
        out += transport_md(results['transport'])
    if results.get('interpreter'):
        out += interpreter_md(results['interpreter'])
    if results.get('gc_freeze'):
        out += gc_freeze_md(results['gc_freeze'])
    if results.get('payload_cache'):
        out += payload_cache_md(results['payload_cache'])
    if results.get('errors'):
        out += ['## Errors', '']
        for key, text in sorted(results['errors'].items()):
            out += ['%s:' % key, '', '```', text.strip(), '```', '']
    parts = sorted(meta.get('part_seconds', {}).items())
    out.append('Part durations (s): %s.' % ', '.join('%s %s' % kv for kv in parts))
    for name, run in sorted((meta.get('merged') or {}).items()):
        load = '/'.join('%.1f' % x for x in run['loadavg_start'])
        # the parts of that run (recorded since runs of several parts were merged; before, one part per run)
        only = run.get('only') or [ONLY_PART.get(name, name)]
        out += ['', 'Part `%s` comes from a run of %s (`%s --merge`)%s: %s, %.0f s, collection %s, '
                'load average at start %s.' % (name, 'that part alone' if len(only) == 1 else 'only these parts',
                                               ' '.join('--only %s' % part for part in only),
                                               ' in smoke mode' if run.get('smoke') else '',
                                               _stamp(run['started']), run['seconds'], run['commit'], load)]
    return '\n'.join(out) + '\n'


# The results a --only part writes, when not named as the part is (bench/run.py PARTS)
ONLY_PART = {'scaling': 'fleet', 'recovery': 'fleet', 'self_revert': 'confirm', 'self_revert_systemd': 'confirm'}

README_START = '<!-- bench-summary: written by make bench from bench/results.json; do not edit -->'
README_END = '<!-- /bench-summary -->'


def summary_lines(results):
    """One line per benchmark for the README, every number from results."""
    meta, lines = results['meta'], []
    lines.append('Last full run: %s, %.1f min on %d CPUs, load average %s at start.'
                 % (_stamp(meta['started']), meta['seconds'] / 60.0, meta['cpus'],
                    '/'.join('%.1f' % x for x in meta['loadavg_start'])))
    lines.append('')
    rec = results.get('recovery')
    if rec:
        big = rec[-1]
        total = big['ours']['total']['median']
        lines.append('- [Time to recover](bench/results.md#1-time-to-recover): %d host%s back on the last verified '
                     'release and healthy %.1f s after the failure, %.2fx a bare symlink-and-restart playbook '
                     '(aim about 3 s: %s; target %.1fx: %s).'
                     % (big['hosts'], '' if big['hosts'] == 1 else 's', total, big['ratio'],
                        'met' if total <= 3.0 else 'missed', big.get('target', 1.0),
                        'met' if big.get('met') else 'missed'))
    snap = results.get('snapshot')
    if snap:
        r = snap['ratios']
        lines.append('- [Snapshot cost](bench/results.md#2-snapshot-cost): unchanged re-snapshot of %d files / %.0f MB '
                     'takes %.1f%% of the first one\'s time and %.2f%% extra disk (targets 5%% / 1%%: %s / %s).'
                     % (snap['files'], snap['bytes'] / 1048576.0, 100 * r['unchanged_vs_first_time'],
                        100 * r['unchanged_vs_first_disk'], 'met' if snap['target']['met_time'] else 'missed',
                        'met' if snap['target']['met_disk'] else 'missed'))
    cb = results.get('callback')
    if cb:
        prof = cb.get('profile') or {}
        lines.append('- [Callback overhead](bench/results.md#3-callback-overhead): %d-task playbook %.3fx wall time '
                     'with the callback enabled (target 1.03: %s)%s.'
                     % (cb['tasks'], cb['ratio'], 'met' if cb['met'] else 'missed',
                        '; the callback\'s own code is %.2f%% of the run' % (100 * prof['share'])
                        if prof.get('share') is not None else ''))
    sc = results.get('scaling')
    if sc:
        lines.append('- [Fleet scaling](bench/results.md#4-fleet-scaling): a good deploy takes %.2fx (%d host%s) to '
                     '%.2fx (%d hosts) a minimal copy-and-symlink playbook (target %.1f: %s), with %s tasks on '
                     'each host (target at most %d: %s).'
                     % (sc[0]['ratio'], sc[0]['hosts'], '' if sc[0]['hosts'] == 1 else 's', sc[-1]['ratio'],
                        sc[-1]['hosts'], sc[0].get('target', 1.5), 'met' if all(r['met'] for r in sc) else 'missed',
                        _runs(sc[-1], ('deploy',)), sc[0].get('tasks_target', 10),
                        'met' if all(r.get('tasks_met') for r in sc) else 'missed'))
    db = results.get('database')
    if db:
        lines.append('- [Database backup and restore](bench/results.md#database-backup-and-restore-postgresql): a '
                     '%.0f MB PostgreSQL database backed up and restored in %.2f s by template copy, %.1fx as fast as '
                     'pg_dump + pg_restore (aim 10x: %s).'
                     % (db['db_bytes'] / 1048576.0, db['ours']['median'], db['speedup'] or 0,
                        'met' if (db['speedup'] or 0) >= 10 else 'missed'))
    if sc or snap:
        parts = []
        if sc:
            parts.append('controller process tree %.0f MB (%d host%s) to %.0f MB (%d hosts)'
                         % (sc[0]['controller_peak_rss_mb']['median'], sc[0]['hosts'],
                            '' if sc[0]['hosts'] == 1 else 's', sc[-1]['controller_peak_rss_mb']['median'],
                            sc[-1]['hosts']))
        if snap:
            parts.append('snapshot module %.0f MB on %.0f MB' % (
                max(snap['module']['first']['module_peak_rss_mb'], snap['module']['unchanged']['module_peak_rss_mb']),
                snap['bytes'] / 1048576.0))
        lines.append('- [Peak memory](bench/results.md#5-peak-memory): %s.' % '; '.join(parts))
    tr = results.get('traffic')
    if tr:
        rows = sorted(tr['drivers'].items())
        lines.append('- [Traffic](bench/results.md#7-traffic-blue-green-and-switch-back): under steady load, failed '
                     'requests in a blue-green deploy and its switch-back %s, against %s for a plain rolling deploy; '
                     'switch-back to traffic fully back in %s (target under %.1f s: %s).'
                     % (', '.join('%d (%s)' % (r['bluegreen_failed'] + r['switch_back_failed'], n) for n, r in rows),
                        ', '.join('%d (%s)' % (r['rolling_failed'], n) for n, r in rows),
                        ', '.join('%.2f s (%s)' % (r['switch_back_layer_traffic']['median'], n) for n, r in rows),
                        tr['target_switch_back_s'], 'met' if tr.get('met') else 'missed'))
    return lines


def update_readme(path, results):
    """Replace the block between README_START and README_END in path; False when the markers are missing."""
    with open(path) as handle:
        text = handle.read()
    if README_START not in text or README_END not in text:
        return False
    head, rest = text.split(README_START, 1)
    tail = rest.split(README_END, 1)[1]
    with open(path, 'w') as handle:
        handle.write(head + README_START + '\n' + '\n'.join(summary_lines(results)) + '\n' + README_END + tail)
    return True
