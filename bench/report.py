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
           '`failsafe.deploy.rollback`; phases from the incident report (timeline `rollback_start`/`rollback_end`) '
           'and the rollback process\'s task timestamps. Baseline: `bench/baseline_rollback.yml` (symlink back, '
           '`supervisorctl restart`, wait for `/health`) started as soon as the failed `ansible-playbook` exits. '
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
            '%s; the largest phase is %s (%.1f s of %.1f s).'
            % (ten['hosts'], total, _met(total <= 3.0), worst, phases[worst], total), '']
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
    return ['## 3. Callback overhead', '',
            'A generated playbook of %d localhost tasks (debug, set_fact, command true), runs interleaved, %d each.'
            % (d['tasks'], d['repeats']), '',
            '| | time | controller peak RSS |', '| --- | --- | --- |',
            '| callback enabled | %s | %s |' % (_s(d['enabled']), _s(d['controller_peak_rss_mb']['enabled'], 'MB', 0)),
            '| callback disabled | %s | %s |' % (_s(d['disabled']),
                                                 _s(d['controller_peak_rss_mb']['disabled'], 'MB', 0)), '',
            'Ratio %.3f (target <= 1.03: %s); %.2f ms per task.' % (d['ratio'], _met(d['met']), d['per_task_ms']), '']


def scaling_md(rows):
    out = ['## 4. Fleet scaling', '',
           'A good deploy of the example app with 500 filler files (`failsafe.deploy.deploy`, callback enabled) '
           'against `bench/playbooks/baseline_deploy.yml` (upload archive, unpack to releases/<id>, switch symlink, '
           '`supervisorctl restart`), interleaved, on the same hosts. forks=30.', '',
           '| hosts | repeats | deploy | baseline | ratio | target <= 1.3 | slowest tasks of the deploy (mean s) |',
           '| --- | --- | --- | --- | --- | --- | --- |']
    for row in rows:
        slowest = '; '.join('%s %.1f' % (t['task'].split(' : ')[-1], t['seconds']) for t in row['slowest_tasks'])
        out.append('| %d | %d | %s | %s | %.2f | %s | %s |' % (
            row['hosts'], row['repeats'], _s(row['deploy'], digits=1), _s(row['baseline'], digits=1), row['ratio'],
            _met(row['met']), slowest))
    if not all(r['met'] for r in rows):
        out += ['', 'What limits it: the deploy runs many more tasks (journal, lock, snapshot, config, health checks), '
                'each a round trip per host; the slowest are listed per row.']
    out.append('')
    return out


def memory_md(results):
    out = ['## 5. Peak memory', '', '| what | peak RSS |', '| --- | --- |']
    for row in results.get('scaling') or []:
        out.append('| controller, good deploy on %d hosts (ansible-playbook process tree, callback on) | %s |'
                   % (row['hosts'], _s(row['controller_peak_rss_mb'], 'MB', 0)))
    for row in results.get('recovery') or []:
        out.append('| controller, failed deploy + automatic rollback on %d hosts (tree incl. the rollback) | %s |'
                   % (row['hosts'], _s(row['controller_peak_rss_mb'], 'MB', 0)))
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


def markdown(results):
    meta = results['meta']
    out = ['# Benchmarks', '',
           'Written by `make bench` (`scripts/bench.sh`, `bench/run.py`)%s. Run %s, %.0f s, on %s (%d CPUs), '
           'collection %s. Load average at start %s, at end %s: other work on the machine inflates the times.'
           % (' in smoke mode (tiny sizes; not representative)' if meta['smoke'] else '', _stamp(meta['started']),
              meta['seconds'], meta['host'], meta['cpus'], meta['commit'],
              '/'.join('%.1f' % x for x in meta['loadavg_start']),
              '/'.join('%.1f' % x for x in meta['loadavg_end'])), '']
    for key, func in (('recovery', recovery_md), ('snapshot', snapshot_md), ('callback', callback_md),
                      ('scaling', scaling_md)):
        if results.get(key):
            out += func(results[key])
    out += memory_md(results)
    if results.get('errors'):
        out += ['## Errors', '']
        for key, text in sorted(results['errors'].items()):
            out += ['%s:' % key, '', '```', text.strip(), '```', '']
    out.append('Part durations (s): %s.' % ', '.join('%s %s' % kv for kv in sorted(meta.get('part_seconds', {}).items())))
    return '\n'.join(out) + '\n'
