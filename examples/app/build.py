#!/usr/bin/env python3
# -*- coding: utf-8 -*-
# Copyright: Contributors to failsafe.deploy
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Build the example app's release archives.

Writes app-<version>.tar.gz for each release into dist/ (or --out). The archives are reproducible: entries sorted,
one fixed mtime ($SOURCE_DATE_EPOCH or a constant), owner and group 0/root, fixed modes, gzip header without name or
time. Building twice gives byte-identical files. Layout, with no wrapping directory:

    app.py
    release.json          {"mode": "...", "version": "..."}
    static/style.css
    static/filler/...     only with --files N
"""

import argparse
import gzip
import io
import json
import os
import sys
import tarfile
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.join(HERE, 'src')
DEFAULT_OUT = os.path.join(HERE, 'dist')
# 2024-01-01T00:00:00Z, used unless SOURCE_DATE_EPOCH says otherwise.
DEFAULT_MTIME = 1704067200

# version -> behaviour (see src/app.py)
RELEASES = (
    ('1.0.0', 'good'),
    ('2.0.0', 'good'),
    ('3.0.0', 'unhealthy'),
    ('4.0.0', 'crash'),
    ('5.0.0', 'errors'),
    ('6.0.0', 'flaky'),
    ('7.0.0', 'slow'),
)
MODES = ('good', 'crash', 'unhealthy', 'errors', 'flaky', 'slow', 'flagged')


def source_mtime():
    value = os.environ.get('SOURCE_DATE_EPOCH')
    return int(value) if value else DEFAULT_MTIME


def filler_content(index):
    """Deterministic text of filler file number index, 512 to 4 KiB long."""
    size = 512 + (index * 977) % 3584
    line = 'filler asset %05d: static content shipped with every release of the example app.\n' % index
    return (line * (size // len(line) + 1))[:size].encode('ascii')


def release_entries(version, mode, files=0):
    """Map archive path -> (bytes, mode) for one release."""
    entries = {}
    with open(os.path.join(SRC, 'app.py'), 'rb') as handle:
        entries['app.py'] = (handle.read(), 0o755)
    release = json.dumps({'mode': mode, 'version': version}, sort_keys=True, indent=2) + '\n'
    entries['release.json'] = (release.encode('utf-8'), 0o644)
    static = os.path.join(SRC, 'static')
    for dirpath, dirnames, filenames in os.walk(static):
        dirnames.sort()
        for name in sorted(filenames):
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, SRC).replace(os.sep, '/')
            with open(full, 'rb') as handle:
                entries[rel] = (handle.read(), 0o644)
    for index in range(1, files + 1):
        entries['static/filler/asset-%05d.txt' % index] = (filler_content(index), 0o644)
    return entries


def _directories(paths):
    dirs = set()
    for path in paths:
        parts = path.split('/')[:-1]
        for i in range(1, len(parts) + 1):
            dirs.add('/'.join(parts[:i]))
    return dirs


def _info(name, mtime, mode, kind=tarfile.REGTYPE, size=0):
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.mtime = mtime
    info.uid = info.gid = 0
    info.uname = info.gname = 'root'
    info.size = size
    return info


def write_archive(path, entries, mtime):
    """Write a reproducible .tar.gz of entries (path -> (bytes, mode)) atomically to path."""
    items = [(name, None, 0o755) for name in _directories(entries)]
    items.extend((name, data, mode) for name, (data, mode) in entries.items())
    items.sort(key=lambda item: item[0])
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix='.%s.' % os.path.basename(path), dir=directory)
    try:
        with os.fdopen(fd, 'wb') as raw:
            with gzip.GzipFile(filename='', mode='wb', fileobj=raw, mtime=0, compresslevel=9) as gz:
                with tarfile.open(fileobj=gz, mode='w', format=tarfile.GNU_FORMAT) as tar:
                    for name, data, mode in items:
                        if data is None:
                            tar.addfile(_info(name, mtime, mode, tarfile.DIRTYPE))
                        else:
                            tar.addfile(_info(name, mtime, mode, size=len(data)), io.BytesIO(data))
            raw.flush()
            os.fsync(raw.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def build(out_dir=DEFAULT_OUT, files=0, releases=RELEASES):
    """Build every release into out_dir; returns the archive paths in release order."""
    os.makedirs(out_dir, exist_ok=True)
    mtime = source_mtime()
    paths = []
    for version, mode in releases:
        path = os.path.join(out_dir, 'app-%s.tar.gz' % version)
        write_archive(path, release_entries(version, mode, files), mtime)
        paths.append(path)
    return paths


def _release_arg(text):
    version, sep, mode = text.partition('=')
    if not sep or not version or mode not in MODES:
        raise argparse.ArgumentTypeError('expected VERSION=MODE with MODE one of %s' % ', '.join(MODES))
    return version, mode


def main(argv=None):
    parser = argparse.ArgumentParser(description='Build reproducible release archives of the example app.')
    parser.add_argument('--out', default=DEFAULT_OUT, help='output directory (default: %(default)s)')
    parser.add_argument('--files', type=int, default=0, metavar='N',
                        help='add N filler files under static/filler/ (for benchmarks)')
    parser.add_argument('--release', type=_release_arg, action='append', metavar='VERSION=MODE',
                        help='build only these releases instead of the standard five (repeatable)')
    args = parser.parse_args(argv)
    if args.files < 0:
        parser.error('--files must not be negative')
    for path in build(args.out, args.files, args.release or RELEASES):
        print(path)
    return 0


if __name__ == '__main__':
    sys.exit(main())
