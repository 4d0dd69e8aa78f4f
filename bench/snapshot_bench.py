# -*- coding: utf-8 -*-
# Copyright: Contributors to failsafe.deploy
# SPDX-License-Identifier: GPL-3.0-or-later
"""Snapshot cost on a generated app tree, against cp -a, rsync -a and tar, and once through the real module."""

import json
import os
import shutil
import subprocess
import sys

from common import BENCH, du_kb, ratio, run, stats, write_cfg


def make_tree(root, files, total_bytes):
    """files files of about total_bytes/files bytes each, 100 per directory, each with unique content."""
    size = max(64, total_bytes // files)
    block = os.urandom(1024 * 1024 + size)
    for i in range(files):
        d = os.path.join(root, 'd%03d' % (i // 100))
        if i % 100 == 0:
            os.makedirs(d, exist_ok=True)
        off = (i * 7919) % (len(block) - size)
        with open(os.path.join(d, 'f%05d.bin' % i), 'wb') as handle:
            handle.write(('%d:' % i).encode() + os.urandom(16) + block[off:off + size - 32])


def change(root, files, fraction, salt):
    """Rewrite fraction of the files (same size, new content). Returns how many."""
    count = max(1, int(files * fraction))
    step = max(1, files // count)
    for k in range(count):
        i = (k * step + salt) % files
        path = os.path.join(root, 'd%03d' % (i // 100), 'f%05d.bin' % i)
        size = os.path.getsize(path)
        with open(path, 'r+b') as handle:
            handle.write(os.urandom(min(size, 4096)))
    return count


class SnapshotBench(object):
    def __init__(self, ctx):
        self.ctx = ctx
        self.work = os.path.join(ctx.work, 'snapshot')
        self.tree = os.path.join(self.work, 'tree')
        self.env = {'PYTHONPATH': ctx.collections}

    def worker(self, *args):
        proc = subprocess.run([sys.executable, os.path.join(BENCH, 'snapshot_worker.py')] + list(args),
                              env=dict(os.environ, **self.env), capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise RuntimeError('snapshot worker failed: %s' % proc.stderr[-2000:])
        return json.loads(proc.stdout)

    def fresh(self, name):
        path = os.path.join(self.work, name)
        shutil.rmtree(path, ignore_errors=True)
        return path

    def run(self):
        files, size = self.ctx.snap_files, self.ctx.snap_bytes
        os.makedirs(self.work, exist_ok=True)
        shutil.rmtree(self.tree, ignore_errors=True)
        make_tree(self.tree, files, size)
        tree_kb = du_kb(self.tree)
        m = dict((k, []) for k in ('first', 'unchanged', 'changed_1pct', 'restore_1pct', 'cp_a', 'rsync_a',
                                   'rsync_a_unchanged', 'tar'))
        disk = dict((k, []) for k in ('first', 'unchanged', 'changed_1pct', 'cp_a', 'rsync_a', 'tar'))
        rss, counters = [], {}
        for rep in range(self.ctx.repeats):
            store = self.fresh('store')
            r = self.worker('capture', store, 's1', self.tree)
            m['first'].append(r['seconds'])
            disk['first'].append(du_kb(store))
            rss.append(r['maxrss_kb'])
            before = du_kb(store)
            r = self.worker('capture', store, 's2', self.tree)
            m['unchanged'].append(r['seconds'])
            disk['unchanged'].append(du_kb(store) - before)
            counters['unchanged'] = r['counters']
            change(self.tree, files, 0.01, rep)
            before = du_kb(store)
            r = self.worker('capture', store, 's3', self.tree)
            m['changed_1pct'].append(r['seconds'])
            disk['changed_1pct'].append(du_kb(store) - before)
            counters['changed_1pct'] = r['counters']
            change(self.tree, files, 0.01, rep + 1)
            r = self.worker('restore', store, 's3')
            m['restore_1pct'].append(r['seconds'])
            rss.append(r['maxrss_kb'])
            # baselines, each into a fresh folder on the same disk
            for name, cmd in (('cp_a', ['cp', '-a', self.tree + '/.', None]),
                              ('rsync_a', ['rsync', '-a', self.tree + '/', None])):
                dest = self.fresh(name)
                os.makedirs(dest)
                res = run(cmd[:-1] + [dest])
                assert res['rc'] == 0, name
                m[name].append(res['seconds'])
                disk[name].append(du_kb(dest))
            res = run(['rsync', '-a', self.tree + '/', os.path.join(self.work, 'rsync_a')])
            m['rsync_a_unchanged'].append(res['seconds'])
            tar = os.path.join(self.work, 'tree.tar')
            res = run(['tar', '-cf', tar, '-C', self.tree, '.'])
            assert res['rc'] == 0, 'tar'
            m['tar'].append(res['seconds'])
            disk['tar'].append(du_kb(tar))
            for name in ('cp_a', 'rsync_a'):
                shutil.rmtree(os.path.join(self.work, name), ignore_errors=True)
            os.unlink(tar)
        out = {'files': files, 'bytes': size, 'tree_kb': tree_kb, 'repeats': self.ctx.repeats,
               'seconds': dict((k, stats(v)) for k, v in m.items()),
               'extra_disk_kb': dict((k, stats(v)) for k, v in disk.items()),
               'store_counters': counters, 'store_peak_rss_mb': round(max(rss) / 1024.0, 1)}
        s = out['seconds']
        out['ratios'] = {
            'unchanged_vs_first_time': ratio(s['unchanged'], s['first']),
            'unchanged_vs_first_disk': ratio(out['extra_disk_kb']['unchanged'], out['extra_disk_kb']['first'])
            if out['extra_disk_kb']['unchanged']['median'] else 0.0,
            'first_vs_cp_a': ratio(s['first'], s['cp_a']), 'first_vs_rsync_a': ratio(s['first'], s['rsync_a']),
            'first_vs_tar': ratio(s['first'], s['tar']),
            'unchanged_vs_rsync_a_unchanged': ratio(s['unchanged'], s['rsync_a_unchanged']),
            'changed_1pct_vs_first': ratio(s['changed_1pct'], s['first']),
            'restore_1pct_vs_cp_a': ratio(s['restore_1pct'], s['cp_a']),
        }
        r = out['ratios']
        out['target'] = {'time_ratio_max': 0.05, 'disk_ratio_max': 0.01,
                         'met_time': r['unchanged_vs_first_time'] <= 0.05,
                         'met_disk': r['unchanged_vs_first_disk'] <= 0.01}
        out['module'] = self.module()
        return out

    def module(self):
        """First and unchanged snapshot through the real module (ansible localhost), with the module's peak RSS."""
        store = self.fresh('store-module')
        self.cfg = write_cfg(os.path.join(self.work, 'module.cfg'), [])
        res = {}
        for name in ('first', 'unchanged'):
            cmd = [os.path.join(os.path.dirname(sys.executable), 'ansible'), 'localhost', '-c', 'local',
                   '-i', 'localhost,', '-e', 'ansible_python_interpreter=%s' % sys.executable,
                   '-m', 'failsafe.deploy.snapshot', '-a', json.dumps({'store': store, 'paths': [self.tree]})]
            r = run(cmd, env={'ANSIBLE_COLLECTIONS_PATH': self.ctx.collections, 'ANSIBLE_CONFIG': self.cfg},
                    log=os.path.join(self.work, 'module.log'), match='AnsiballZ_snapshot')
            if r['rc'] != 0:
                raise RuntimeError('snapshot module failed, see %s' % os.path.join(self.work, 'module.log'))
            res[name] = {'seconds': round(r['seconds'], 3), 'module_peak_rss_mb': round(r['peak_match_kb'] / 1024.0, 1),
                         'tree_peak_rss_mb': round(r['peak_rss_kb'] / 1024.0, 1)}
        res['unchanged_vs_first_time'] = round(res['unchanged']['seconds'] / res['first']['seconds'], 4)
        shutil.rmtree(store, ignore_errors=True)
        return res

    def cleanup(self):
        shutil.rmtree(self.work, ignore_errors=True)
