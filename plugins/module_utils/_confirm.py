# -*- coding: utf-8 -*-
# Private to this collection: not a public API.
# Copyright: Contributors to failsafe.deploy
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Commit confirmed: a host reverts an activation that nobody confirmed by its deadline.

The activation arms a revert timer on the host: a process of its own, detached from the SSH session (a transient
systemd timer where systemd runs, else a watchdog process in a session of its own), with the deadline recorded in
the journal (``journal['confirm']``). The commit disarms it. At the deadline, unless confirmed, the host runs the
engine's own single-call rollback locally, records in the journal that it reverted itself and why, and keeps the
incident facts (``self_revert.json``) for the next run to report.

Files, per deployment name under the state directory::

    <name>/confirm.lock          fcntl lock: the commit, a rollback and the revert are mutually exclusive
    <name>/self_revert.json      the facts of the last self-revert, and which run reported it
    <name>/confirm/runner.py     the watchdog's entry point (the engine's WATCHDOG_RUNNER, handed to ``arm``)
    <name>/confirm/payload-*.zip the collection's code the watchdog imports (a copy of the module's own payload:
                                 the module's temporary directory is gone when its task ends)
    <name>/confirm/<txid>.json   what the watchdog needs to roll back (mode 0600: checks may carry credentials)
    <name>/confirm/<txid>.log    the watchdog's output
    <name>/confirm/<txid>.alert  where the watchdog alerts when it reverts (mode 0600: the webhook URL is a secret);
                                 only while it is armed: removed at the commit, a rollback or the revert

The revert alerts by itself (``confirm_alert``: the deploy's webhook channel): a JSON POST of event
``self_reverted`` with an incident id of its own, sent by the watchdog with no controller alive. The facts say
whether it was delivered (``alert``), so that the next run's report names the same incident instead of paging again.
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import contextlib
import copy
import errno
import fcntl
import hashlib
import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
# Imported where they are used, not here: ast, importlib.machinery and zipfile build the watchdog's code (only when no
# AnsiballZ zip holds it: under Mitogen), urllib posts the self-revert's alert (only from the watchdog), uuid names
# its incident. Every transaction call on a host imports this module, and those imports were a good part of its
# start (urllib.request alone about 17 ms of CPU).

from ansible_collections.failsafe.deploy.plugins.module_utils._atomic import (
    atomic_write_bytes, read_json, write_json_atomic,
)
from ansible_collections.failsafe.deploy.plugins.module_utils._errors import EngineError, FailsafeError
from ansible_collections.failsafe.deploy.plugins.module_utils._journal import iso

DEFAULT_SECONDS = 300
MECHANISMS = ('auto', 'systemd', 'process')
LOCK_FILE = 'confirm.lock'
FACTS_FILE = 'self_revert.json'
SUBDIR = 'confirm'
PACKAGE = os.path.join('ansible_collections', 'failsafe', 'deploy', 'plugins', 'module_utils')
COLLECTION = 'ansible_collections.failsafe.deploy'
# The watchdog's entry points (the runner imports _confirm's watch and the engine's guarded_rollback): a payload
# built from sources holds these and whatever they import, at any depth.
ENTRY_POINTS = (COLLECTION + '.plugins.module_utils._confirm', COLLECTION + '.plugins.module_utils._engine')
# The packages above a module's code in a payload, as AnsiballZ writes them (ansible's own package is not shipped).
STUB_PACKAGES = {
    'ansible': "from pkgutil import extend_path\n__path__ = extend_path(__path__, __name__)\n",
    'ansible.module_utils': "from pkgutil import extend_path\n__path__ = extend_path(__path__, __name__)\n",
}
# What the rollback needs that the journal does not hold; copied from the activation's parameters.
ROLLBACK_KEYS = ('state_dir', 'name', 'app_root', 'service', 'checks', 'check_defaults', 'restart')
# The revert's own alert: seconds per attempt, attempts, and the pause before each further attempt.
ALERT_TIMEOUT = 5.0
ALERT_ATTEMPTS = 3
ALERT_BACKOFF = (1.0, 3.0)
ALERT_SOURCE = 'failsafe.deploy.watchdog'


class ConfirmError(FailsafeError):
    """The confirmation was refused (the host reverted, or the deadline passed); ``details`` for fail_json."""


def cause(seconds):
    return 'not confirmed within %s s' % seconds


# --- the host-side lock -------------------------------------------------------------------------------------------

_HELD = {}


@contextlib.contextmanager
def host_lock(ds):
    """Exclusive on this host for the commit, a rollback and the revert: whoever holds it first wins, the other sees
    its outcome. Re-entrant within a process (the watchdog's revert runs the engine's rollback, which takes it)."""
    path = os.path.join(ds.dir, LOCK_FILE)
    if _HELD.get(path):
        _HELD[path][1] += 1
        try:
            yield
        finally:
            _HELD[path][1] -= 1
        return
    if not os.path.isdir(ds.dir):
        yield  # no journal, no timer: nothing to exclude (and nothing is created for it)
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        _HELD[path] = [fd, 1]
        try:
            yield
        finally:
            del _HELD[path]
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


# --- journal and files --------------------------------------------------------------------------------------------

def _dir(ds):
    return os.path.join(ds.dir, SUBDIR)


def _params_path(ds, txid):
    return os.path.join(_dir(ds), '%s.json' % txid)


def _alert_path(ds, txid):
    return os.path.join(_dir(ds), '%s.alert' % txid)


def _update_confirm(ds, of_txid, **fields):
    """Merge fields into the journal's confirm record of transaction of_txid (nothing if the journal moved on)."""
    journal = ds.read_journal()
    if not journal or journal.get('txid') != of_txid:
        return None
    new = copy.deepcopy(journal)
    new.setdefault('confirm', {}).update(fields)
    ds.write_journal(new)
    return new['confirm']


def read_facts(ds):
    try:
        return read_json(os.path.join(ds.dir, FACTS_FILE), default=None)
    except ValueError:
        return None


def _write_facts(ds, facts):
    write_json_atomic(os.path.join(ds.dir, FACTS_FILE), facts, mode=0o600)


def unreported(ds, run_id, check_mode=False):
    """The facts of a self-revert no run has reported yet; marked reported by run_id (not in check mode)."""
    facts = read_facts(ds)
    if not facts or facts.get('reported_by'):
        return None
    if not check_mode:
        _write_facts(ds, dict(facts, reported_by=run_id, reported=time.time(), reported_iso=iso(time.time())))
    return facts


def report_once(ds, facts, run_id, check_mode=False):
    """``facts`` (a self-revert's), marked reported by run_id, unless another run reported them already (then None):
    a self-revert is reported, and paged, once."""
    if facts.get('reported_by') and facts['reported_by'] != run_id:
        return None
    return unreported(ds, run_id, check_mode=check_mode) or facts


def facts_of(ds, journal):
    """The self-revert facts of the transaction in the journal, if it reverted itself."""
    facts = read_facts(ds)
    if facts and journal and facts.get('txid') == journal.get('txid'):
        return facts
    return None


# --- the payload the watchdog imports -----------------------------------------------------------------------------

def _code_root():
    """The sys.path entry this collection's code was imported from: the module's AnsiballZ payload zip, or a
    directory holding ansible_collections/ (a checkout). None when the code was not imported from a path on this
    host: under Mitogen's strategies ``__file__`` is ``master:<path on the controller>`` and no payload file exists
    here."""
    here = __file__ or ''
    marker = os.sep + PACKAGE + os.sep
    if not os.path.isabs(here) or marker not in here:
        return None
    root = here[:here.index(marker)]
    return root if os.path.exists(root) else None


def _loader_of(module):
    return getattr(getattr(module, '__spec__', None), 'loader', None) or getattr(module, '__loader__', None)


@contextlib.contextmanager
def _standing_in(name, spec):
    """For a moment, ``sys.modules[name]`` is a bare package of ``spec``: the package whose place another module took
    when it was imported (ansible.module_utils.distro puts a distro module there), so that its own submodules import
    as they would below it."""
    if spec is None:
        yield
        return
    taken = sys.modules.get(name)
    stand_in = type(sys)(name)
    stand_in.__spec__, stand_in.__loader__, stand_in.__package__ = spec, spec.loader, name
    stand_in.__path__ = list(spec.submodule_search_locations or [])
    sys.modules[name] = stand_in
    try:
        yield
    finally:
        if taken is None:
            sys.modules.pop(name, None)
        else:
            sys.modules[name] = taken


def _module_named(name, stand_ins):
    """The module ``name`` as this process has it (imported now if it was not yet), or None when there is none."""
    module = sys.modules.get(name)
    if module is not None:
        return module
    try:
        with _standing_in(name.rpartition('.')[0], stand_ins.get(name.rpartition('.')[0])):
            __import__(name)
    except ImportError:
        return None
    return sys.modules.get(name)


def _source_of(name, module):
    """The source text of an imported module, from its loader (a path, a zip, Mitogen's importer of the controller's
    modules), or None when its loader cannot give it."""
    loader = _loader_of(module)
    get_source = getattr(loader, 'get_source', None)
    text = None
    if callable(get_source):
        try:
            text = get_source(name)
        except (ImportError, IOError, OSError):
            text = None
    by_name = getattr(loader, '_by_fullname', None)
    if text is None and isinstance(by_name, dict) and name in by_name:
        # Mitogen's importer of a module's module_utils (ansible_mitogen.runner.ModuleUtilsImporter) has no
        # get_source: it runs the source its file service fetched from the controller, and that service keeps it
        target = sys.modules.get('ansible_mitogen.target')
        fetch = getattr(target, 'get_small_file', None)
        if fetch is not None:
            text = fetch(getattr(loader, '_context', None), by_name[name][0])
    if isinstance(text, bytes):
        text = text.decode('utf-8')
    return text


def _spec_below_parent(name):
    """The spec of ``name`` as an import below its parent package finds it, for a module whose place in sys.modules
    another module took: from the parent's loader (Mitogen's importer keeps the source of every name it fetched from
    the controller), else on the parent's path. None when there is none (a module six.moves put there)."""
    import importlib.machinery  # pylint: disable=import-outside-toplevel
    parent = sys.modules.get(name.rpartition('.')[0])
    loader = _loader_of(parent)
    try:
        text = loader.get_source(name)
    except (AttributeError, ImportError, IOError, OSError):
        text = None
    if text is not None:
        try:
            filename = loader.get_filename(name) or ''
        except (AttributeError, ImportError):
            filename = ''
        return importlib.machinery.ModuleSpec(name, loader, is_package=os.path.basename(filename) == '__init__.py')
    try:
        spec = importlib.machinery.PathFinder.find_spec(name, list(getattr(parent, '__path__', None) or []))
    except (ImportError, IOError, OSError):
        return None
    return spec if spec is not None and callable(getattr(spec.loader, 'get_source', None)) else None


def _imports_of(name, tree, is_package):
    """Names an ast imports, at any depth: modules, and ``pkg.name`` for each ``from pkg import name`` (a module or
    a name in pkg: the caller tells)."""
    import ast  # pylint: disable=import-outside-toplevel
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, False
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ''
            if node.level:
                package = name if is_package else name.rpartition('.')[0]
                for dummy in range(node.level - 1):
                    package = package.rpartition('.')[0]
                base = package + ('.' + base if base else '')
            if base:
                yield base, False
            for alias in node.names:
                if alias.name != '*':
                    yield '%s.%s' % (base, alias.name) if base else alias.name, True


def _shipped(name):
    return name.startswith(COLLECTION + '.plugins.module_utils.') or name.startswith('ansible.module_utils.')


def code_sources(entry_points=ENTRY_POINTS):
    """{module name: (source, is_package)}: the code the watchdog imports, read from the modules this process
    imported (the modules of this collection and ansible.module_utils that the entry points import at any depth,
    inside functions too), and the packages above them (stubs for ansible's, empty ones down to this collection's
    module_utils, as AnsiballZ writes them). Raises ConfirmError naming a module whose source cannot be read."""
    import ast  # pylint: disable=import-outside-toplevel
    found = {}
    stand_ins = {}  # {package name: its spec} of packages whose place in sys.modules another module took
    todo = [(name, False) for name in entry_points]
    while todo:
        name, maybe_attribute = todo.pop()
        if name in found or not _shipped(name):
            continue
        parent = name.rpartition('.')[0]
        if maybe_attribute and name not in sys.modules:
            if parent in stand_ins:
                if stand_ins[parent].submodule_search_locations is None:
                    continue  # a name in a module
            else:
                holder = sys.modules.get(parent)
                value = getattr(holder, name.rpartition('.')[2], None) if holder is not None else None
                if value is not None and not isinstance(value, type(sys)):
                    continue  # a name defined in the package, not a module of it
                if holder is not None and not hasattr(holder, '__path__'):
                    continue  # ``from module import name``: a name in a module
        module = _module_named(name, stand_ins)
        if module is None:
            if maybe_attribute:
                continue
            raise ConfirmError('cannot ship the code of the commit-confirmed watchdog: %s is not importable here'
                               % name)
        if getattr(module, '__name__', name) != name and not name.startswith(COLLECTION):
            # another module under this name: one that replaced its package on import (ansible.module_utils.distro
            # by its _distro) is shipped as the package's source; one that six.moves put there has none
            spec = _spec_below_parent(name)
            if spec is None:
                continue
            stand_ins[name] = spec
            text, is_package = spec.loader.get_source(name), spec.submodule_search_locations is not None
        else:
            text = _source_of(name, module)
            is_package = hasattr(module, '__path__')
        if text is None:
            if getattr(module, '__file__', None) is None and not name.startswith(COLLECTION):
                continue  # made at run time by its package (six.moves): the package's source brings it
            raise ConfirmError('cannot ship the code of the commit-confirmed watchdog: the source of %s cannot be '
                               'read from its loader (%s); set failsafe_confirm to false, or run the deploy with '
                               'the default strategy' % (name, type(getattr(module, '__loader__', None)).__name__))
        found[name] = (text, is_package)
        todo.extend(_imports_of(name, ast.parse(text, name), is_package))
    for name in list(found):
        parts = name.split('.')
        for depth in range(1, len(parts)):
            package = '.'.join(parts[:depth])
            if package in found:
                continue
            if package in STUB_PACKAGES:
                found[package] = (STUB_PACKAGES[package], True)
            elif package.startswith('ansible_collections') and depth <= 5:
                found[package] = ('', True)
            else:
                module = _module_named(package, stand_ins)
                text = _source_of(package, module) if module is not None else None
                if text is None:
                    raise ConfirmError('cannot ship the code of the commit-confirmed watchdog: the source of '
                                       'package %s cannot be read' % package)
                found[package] = (text, True)
    return found


def payload_zip(sources):
    """The bytes of a zip of ``sources`` (``code_sources``) to put on sys.path: the same bytes for the same code."""
    import zipfile  # pylint: disable=import-outside-toplevel
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, 'w', zipfile.ZIP_DEFLATED) as archive:
        for name in sorted(sources):
            text, is_package = sources[name]
            path = name.replace('.', '/') + ('/__init__.py' if is_package else '.py')
            info = zipfile.ZipInfo(path, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, text.encode('utf-8'))
    return buf.getvalue()


# Run by the interpreter the watchdog will run with, on a payload built from sources before it is used: every
# module in it imports.
_PAYLOAD_CHECK = (
    'import sys, zipfile\n'
    'sys.path.insert(0, sys.argv[1])\n'
    'for path in sorted(zipfile.ZipFile(sys.argv[1]).namelist()):\n'
    '    name = path[:-len(".py")].replace("/", ".").replace(".__init__", "")\n'
    '    parent = sys.modules.get(name.rpartition(".")[0])\n'
    '    if parent is None or parent.__name__ == name.rpartition(".")[0]:\n'
    '        __import__(name)  # (not below a package that put another module in its place on import)\n'
)


def _check_payload(path):
    env = dict(os.environ)
    env.pop('PYTHONPATH', None)
    proc = subprocess.Popen([sys.executable or 'python3', '-c', _PAYLOAD_CHECK, path], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd='/', env=env)
    out = proc.communicate()[0].decode('utf-8', 'replace').strip()
    if proc.returncode != 0:
        raise ConfirmError('the code of the commit-confirmed watchdog built from this module\'s sources does not '
                           'import with %s (rc %s): %s' % (sys.executable, proc.returncode, out[-2000:]))


def _payload(ds):
    """A copy of the code root that outlives the module's task: the zip copied into the state directory (one copy
    per content), or the checkout's directory as it is. Where the code was not imported from a path on this host
    (Mitogen), a zip of its sources (``code_sources``), checked once by importing it."""
    root = _code_root()
    if root is not None and os.path.isdir(root):
        return root
    if root is not None:
        with open(root, 'rb') as handle:
            data = handle.read()
    else:
        data = payload_zip(code_sources())
    name = 'payload-%s.zip' % hashlib.sha256(data).hexdigest()[:16]
    dest = os.path.join(_dir(ds), name)
    if not os.path.isdir(_dir(ds)):
        os.makedirs(_dir(ds), 0o700)
    if not os.path.exists(dest):
        if root is None:
            trial = os.path.join(_dir(ds), '.%s.%d' % (name, os.getpid()))
            atomic_write_bytes(trial, data, mode=0o600)
            try:
                _check_payload(trial)
                os.rename(trial, dest)
            finally:
                _unlink(trial)
        else:
            atomic_write_bytes(dest, data, mode=0o600)
    for old in os.listdir(_dir(ds)):
        if old.startswith('payload-') and old.endswith('.zip') and old != name:
            _in_use = any(_payload_of(p) == os.path.join(_dir(ds), old) for p in _params_files(ds))
            if not _in_use:
                _unlink(os.path.join(_dir(ds), old))
    return dest


def prepare(ds, p, journal, check_mode=False):
    """The watchdog's code, made ready before the activation changes anything (``arm`` takes it as ``payload``):
    None when commit confirmed is off, in check mode, or when this transaction's watchdog is armed and waiting (a
    re-run of the activation keeps it, so nothing is shipped again). Raises ConfirmError when it cannot be shipped."""
    if check_mode or int(p.get('confirm_timeout') or 0) <= 0:
        return None
    if _waiting(journal.get('confirm') or {}, journal.get('txid'), ds):
        return None
    return _payload(ds)


def _waiting(confirm, txid, ds):
    """Whether the watchdog of transaction txid is armed and its process still waits for the deadline."""
    return confirm.get('txid') == txid and confirm.get('state') == 'armed' and alive(confirm, ds)


def _params_files(ds):
    try:
        names = os.listdir(_dir(ds))
    except OSError:
        return []
    return [os.path.join(_dir(ds), n) for n in names if n.endswith('.json')]


def _payload_of(path):
    try:
        return (read_json(path, default=None) or {}).get('payload')
    except ValueError:
        return None


def _unlink(path):
    try:
        os.unlink(path)
    except OSError as e:
        if e.errno != errno.ENOENT:
            raise


# --- the watchdog process -----------------------------------------------------------------------------------------

def _mechanism(wanted):
    if wanted not in MECHANISMS:
        raise ConfirmError('confirm_mechanism must be one of %s, not %r' % (', '.join(MECHANISMS), wanted))
    systemd = os.path.isdir('/run/systemd/system') and shutil.which('systemd-run') is not None
    if wanted == 'systemd' and not systemd:
        raise ConfirmError('confirm_mechanism=systemd, but systemd does not run this host (no /run/systemd/system '
                           'or no systemd-run)')
    if wanted == 'auto':
        return 'systemd' if systemd else 'process'
    return wanted


def _unit(ds, txid):
    return 'failsafe-confirm-%s-%s' % (re.sub(r'[^A-Za-z0-9_-]', '_', ds.name), txid.lower())


# The watchdog's own crash point for the crash-consistency tests: FAILSAFE_WATCHDOG_CRASH_AT (and _HOLD) in the
# arming module's environment become the watchdog's FAILSAFE_CRASH_AT (and _HOLD); the module's own crash point is not
# passed on, so that one crash point never fires in two processes.
WATCHDOG_CRASH_ENV = (('FAILSAFE_WATCHDOG_CRASH_AT', 'FAILSAFE_CRASH_AT'),
                      ('FAILSAFE_WATCHDOG_CRASH_HOLD', 'FAILSAFE_CRASH_HOLD'))


def _env(payload):
    env = dict((k, v) for k, v in os.environ.items() if not k.startswith('FAILSAFE_CRASH'))
    for theirs, ours in WATCHDOG_CRASH_ENV:
        if env.get(theirs):
            env[ours] = env.pop(theirs)
    if not os.path.isdir(payload):
        # a module's payload zip carries everything the watchdog imports; a directory (a checkout, a test run)
        # relies on the interpreter's path as it is, PYTHONPATH included
        env.pop('PYTHONPATH', None)
    return env


def _spawn(ds, txid, mechanism, seconds, params_path, code, payload):
    runner = os.path.join(_dir(ds), 'runner.py')
    try:
        with open(runner, 'rb') as handle:
            same = handle.read() == code
    except (IOError, OSError):
        same = False
    if not same:
        atomic_write_bytes(runner, code, mode=0o600)
    argv = [sys.executable or 'python3', runner, params_path]
    log = os.path.join(_dir(ds), '%s.log' % txid)
    if mechanism == 'systemd':
        unit = _unit(ds, txid)
        cmd = ['systemd-run', '--quiet', '--unit=%s' % unit, '--on-active=%ds' % max(1, int(seconds)),
               '--timer-property=AccuracySec=1s', '--property=StandardOutput=append:%s' % log,
               '--property=StandardError=append:%s' % log, '--'] + argv
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                env=_env(payload))
        out = proc.communicate()[0]
        if proc.returncode != 0:
            raise ConfirmError('systemd-run could not arm the revert timer %s (rc %s): %s'
                               % (unit, proc.returncode, out.decode('utf-8', 'replace').strip()))
        return {'unit': unit}
    with open(log, 'ab') as out:
        os.chmod(log, 0o600)
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, cwd='/',
                                close_fds=True, start_new_session=True, env=_env(payload))
    return {'pid': proc.pid}


def _cmdline(pid):
    try:
        with open('/proc/%d/cmdline' % int(pid), 'rb') as handle:
            return handle.read().split(b'\0')
    except (IOError, OSError, ValueError):
        return []


def _is_watchdog(pid, params_path):
    return params_path.encode('utf-8') in _cmdline(pid)


def alive(confirm, ds):
    """Whether the watchdog of an armed confirm record still waits (a process) or its timer is still set."""
    txid = confirm.get('txid')
    if confirm.get('pid'):
        return _is_watchdog(confirm['pid'], _params_path(ds, txid))
    if confirm.get('unit'):
        rc = subprocess.call(['systemctl', 'is-active', '--quiet', confirm['unit'] + '.timer'])
        return rc == 0
    return False


def _stop(confirm, ds):
    """End the watchdog of this confirm record (never this process itself)."""
    pid = confirm.get('pid')
    if pid and int(pid) != os.getpid() and _is_watchdog(pid, _params_path(ds, confirm.get('txid'))):
        try:
            os.kill(int(pid), signal.SIGTERM)
        except OSError:
            pass
    if confirm.get('unit'):
        subprocess.call(['systemctl', 'stop', confirm['unit'] + '.timer'], stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL)


# --- the revert's own alert -------------------------------------------------------------------------------------

def alert_settings(p):
    """Where the revert alerts (``confirm_alert``: the deploy's webhook channel), or None when it does not."""
    alert = p.get('confirm_alert')
    if not isinstance(alert, dict) or not alert.get('webhook_url'):
        return None
    return {'webhook_url': str(alert['webhook_url']), 'host': alert.get('host') or None,
            'timeout': float(alert.get('timeout') or ALERT_TIMEOUT)}


def _new_incident_id(t):
    """The same form as the controller's incident ids: ``inc-<UTC yyyymmddTHHMMSSZ>-<8 hex>``."""
    import uuid  # pylint: disable=import-outside-toplevel
    return 'inc-%s-%s' % (time.strftime('%Y%m%dT%H%M%SZ', time.gmtime(t)), uuid.uuid4().hex[:8])


def alert_body(facts, settings, name):
    """The JSON the revert posts: what the controller's alerts say (event, severity, incident, run, releases, host),
    and the revert's own facts."""
    ok = facts.get('outcome') == 'rolled_back'
    host = (settings or {}).get('host') or socket.gethostname()
    alert = facts.get('alert') or {}
    verified = (facts.get('rollback') or {}).get('verified')
    summary = '%s reverted release %s by itself (%s): %s' % (
        host, facts.get('release'), facts.get('cause'),
        'back on %s, restore proven' % (facts.get('previous_release') or 'no release') if ok and verified
        else 'back on %s' % (facts.get('previous_release') or 'no release') if ok
        else 'ITS ROLLBACK FAILED: %s' % facts.get('error'))
    return {'event': 'self_reverted', 'severity': 'error' if ok else 'critical', 'time': round(time.time(), 3),
            'at': iso(time.time()), 'incident_id': alert.get('incident_id'), 'run_id': facts.get('run_id'),
            'releases': [facts.get('release')], 'previous_releases': [facts.get('previous_release')],
            'host': host, 'hosts': [host], 'deployment': name, 'txid': facts.get('txid'),
            'cause': facts.get('cause'), 'reason': facts.get('reason'), 'outcome': facts.get('outcome'),
            'error': facts.get('error'), 'deadline': facts.get('deadline_iso'),
            'reverted_at': facts.get('finished_iso'), 'verified': verified, 'summary': summary,
            'source': ALERT_SOURCE}


def _no_redirect_opener():
    """An opener for which a redirect is an error: it would re-send the alert somewhere else."""
    import urllib.request  # pylint: disable=import-outside-toplevel

    class _NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, req, fp, code, msg, headers, newurl):
            return None

    return urllib.request.build_opener(_NoRedirect())


def post_alert(url, body, timeout=ALERT_TIMEOUT, attempts=ALERT_ATTEMPTS, backoff=ALERT_BACKOFF, sleep=time.sleep):
    """POST ``body`` as JSON to ``url``, retrying connection errors, timeouts, 429 and 5xx (never another 4xx).
    Returns ``{'status': delivered|failed, 'attempts', 'http_status', 'error'}``; never raises, never names the URL."""
    import urllib.error  # pylint: disable=import-outside-toplevel
    import urllib.request  # pylint: disable=import-outside-toplevel
    data = json.dumps(body, sort_keys=True, default=str).encode('utf-8')
    opener = _no_redirect_opener()
    error, status, tries = None, None, 0
    for attempt in range(max(1, int(attempts))):
        if attempt:
            sleep(backoff[min(attempt - 1, len(backoff) - 1)])
        tries += 1
        retry = True
        try:
            request = urllib.request.Request(url, data=data, method='POST', headers={
                'Content-Type': 'application/json', 'User-Agent': ALERT_SOURCE})
            with opener.open(request, timeout=timeout) as response:
                status = response.getcode()
                response.read(65536)
            if 200 <= status < 300:
                return {'status': 'delivered', 'attempts': tries, 'http_status': status, 'error': None}
            error = 'HTTP %s' % status
        except urllib.error.HTTPError as exc:
            status, error = exc.code, 'HTTP %s %s' % (exc.code, exc.reason)
            retry = exc.code == 429 or 500 <= exc.code <= 599
        except urllib.error.URLError as exc:
            error = 'connection failed: %s' % (exc.reason,)
        except Exception as exc:  # pylint: disable=broad-except
            # never raise out of an alert
            error = '%s: %s' % (type(exc).__name__, exc)
        if not retry:
            break
    return {'status': 'failed', 'attempts': tries, 'http_status': status,
            'error': (error or 'not delivered').replace(url, '<webhook>')}


def _send_alert(ds, txid, settings, facts):
    """Send the revert's alert (its incident id is in the facts already) and record the delivery in the facts."""
    result = post_alert(settings['webhook_url'], alert_body(facts, settings, ds.name), timeout=settings['timeout'])
    sent = time.time()
    with host_lock(ds):
        current = read_facts(ds) or {}
        if current.get('txid') == txid:
            current['alert'] = dict(current.get('alert') or {}, sent=sent, sent_iso=iso(sent), **result)
            _write_facts(ds, current)
            facts = current
    return facts


# --- arm, disarm, revert ------------------------------------------------------------------------------------------

def arm(ds, p, journal, runner, check_mode=False, payload=None):
    """Arm the revert timer of the open transaction in journal, unless it is already armed and waiting. Returns
    what was (or, in check mode, would be) armed. ``runner``: the watchdog's entry point, the source of a Python
    script that imports ``watch`` and the engine's guarded_rollback (the engine's WATCHDOG_RUNNER: this module never
    imports the engine, which imports it). ``payload``: the code the watchdog imports (``prepare``), found here when
    not given."""
    seconds = int(p.get('confirm_timeout') or 0)
    if seconds <= 0:
        return {'armed': False, 'msg': 'commit confirmed is off (confirm_timeout is 0)'}
    mechanism = _mechanism(p.get('confirm_mechanism') or 'auto')
    txid = journal.get('txid')
    if check_mode:
        return {'armed': False, 'would_arm': True, 'seconds': seconds, 'mechanism': mechanism,
                'msg': 'check mode: would arm a %s revert timer of %s s: unless the commit confirms transaction %s '
                       'by then, the host rolls it back by itself' % (mechanism, seconds, txid)}
    with host_lock(ds):
        current = ds.read_journal() or {}
        confirm = current.get('confirm') or {}
        if _waiting(confirm, txid, ds):
            return dict(confirm, armed=True, changed=False)
        if not os.path.isdir(_dir(ds)):
            os.makedirs(_dir(ds), 0o700)
        now = time.time()
        deadline = now + seconds
        params = dict((k, p.get(k)) for k in ROLLBACK_KEYS)
        params['app_root'] = current.get('app_root') or p.get('app_root')
        data = {'txid': txid, 'run_id': current.get('run_id'), 'seconds': seconds, 'deadline': deadline,
                'payload': payload or _payload(ds), 'params': params}
        params_path = _params_path(ds, txid)
        write_json_atomic(params_path, data, mode=0o600)
        settings = alert_settings(p)
        if settings:
            write_json_atomic(_alert_path(ds, txid), settings, mode=0o600)
        else:
            _unlink(_alert_path(ds, txid))
        record = {'txid': txid, 'state': 'armed', 'seconds': seconds, 'armed': now, 'armed_iso': iso(now),
                  'deadline': deadline, 'deadline_iso': iso(deadline), 'mechanism': mechanism,
                  'alert': ['webhook'] if settings else []}
        _update_confirm(ds, txid, **record)
        try:
            where = _spawn(ds, txid, mechanism, seconds, params_path, runner, data['payload'])
        except Exception:
            _update_confirm(ds, txid, state='off')
            _unlink(params_path)
            _unlink(_alert_path(ds, txid))
            raise
        record.update(where)
        _update_confirm(ds, txid, **where)
    return dict(record, armed=True, changed=True)


def disarm(ds, journal, state, why):
    """Stop the watchdog of the journal's transaction and note why (``confirmed`` by the commit, ``disarmed`` by a
    rollback). Under host_lock. A record that is not armed (reverting, reverted) is left as it is."""
    confirm = (journal or {}).get('confirm') or {}
    if confirm.get('state') != 'armed' or confirm.get('txid') != journal.get('txid'):
        return None
    _stop(confirm, ds)
    _unlink(_params_path(ds, confirm['txid']))
    _unlink(_alert_path(ds, confirm['txid']))
    now = time.time()
    return _update_confirm(ds, confirm['txid'], state=state, why=why, ended=now, ended_iso=iso(now))


REVERTED_STATES = ('reverting', 'reverted', 'revert_failed', 'revert_interrupted')
REVERTED_WORDS = {'reverting': 'being rolled back', 'reverted': 'rolled back',
                  'revert_failed': 'rolled back (and that rollback failed)',
                  'revert_interrupted': 'being rolled back (the host went down part-way; a rollback finished it)'}


def take_over_revert(ds, journal, why):
    """A revert the watchdog began and never finished (the host lost power or crashed part-way): the journal's
    confirm record still says ``reverting``, though no revert runs (the revert holds host_lock from its start to its
    end, and the caller holds it now, not inside that revert). The rollback about to run finishes the job; the record
    says the revert was interrupted and by what it was finished, instead of ``reverting`` for ever. Under host_lock."""
    confirm = (journal or {}).get('confirm') or {}
    if confirm.get('state') != 'reverting' or confirm.get('txid') != journal.get('txid') \
            or journal.get('status') not in ('open', 'rollback_failed'):
        return None
    _unlink(_params_path(ds, confirm['txid']))
    _unlink(_alert_path(ds, confirm['txid']))
    now = time.time()
    return _update_confirm(ds, confirm['txid'], state='revert_interrupted', why=why, ended=now, ended_iso=iso(now))


def refuse_reverted(ds, run_id, phase, **details):
    """Fail loudly when the host began reverting (or reverted) the transaction of run_id by itself: a phase of that
    run that reaches the host afterwards records nothing in it. Called under host_lock before a phase records its
    result (the revert holds that lock from its start to its end)."""
    journal = ds.read_journal() or {}
    confirm = journal.get('confirm') or {}
    ours = journal.get('run_id') == run_id and confirm.get('txid') == journal.get('txid')
    facts = read_facts(ds)
    if ours and confirm.get('state') in REVERTED_STATES:
        txid, release, state = journal.get('txid'), journal.get('release'), confirm.get('state')
    elif facts and facts.get('run_id') == run_id:
        txid, release, state = facts.get('txid'), facts.get('release'), 'reverted'
        confirm = {'seconds': facts.get('seconds'), 'deadline_iso': facts.get('deadline_iso'),
                   'reverting_iso': facts.get('started_iso')}
    else:
        return
    raise ConfirmError(
        'host reverted before confirmation: transaction %s (release %s, run %s) was %s by the host itself (%s, '
        'deadline %s, revert begun %s). This %s phase reached the host after that: its result is not recorded '
        '(its checks may have run against the release the host went back to), and the run must not go on.' % (
            txid, release, run_id, REVERTED_WORDS[state], cause(confirm.get('seconds')),
            confirm.get('deadline_iso'), confirm.get('reverting_iso'), phase),
        confirm=confirm, phase=phase, **details)


def check_confirmation(ds, journal, run_id, rollback):
    """The commit's check, under host_lock: refuse loudly when the host reverted before confirmation, or when the
    deadline has passed (then revert here and now, so that exactly one outcome stands whoever comes first).
    ``rollback``: the engine's guarded_rollback (passed in: the engine imports this module)."""
    confirm = (journal or {}).get('confirm') or {}
    if not journal or journal.get('run_id') != run_id or confirm.get('txid') != journal.get('txid'):
        return
    facts = facts_of(ds, journal)
    if confirm.get('state') in REVERTED_STATES or facts:
        raise ConfirmError(
            'host reverted before confirmation: transaction %s (release %s) was %s within %s s (deadline %s), so '
            'the host rolled it back by itself (%s).' % (
                journal.get('txid'), journal.get('release'), 'not confirmed', confirm.get('seconds'),
                confirm.get('deadline_iso'), (facts or {}).get('outcome') or confirm.get('state')),
            self_revert=facts, confirm=confirm)
    if confirm.get('state') == 'armed' and time.time() >= confirm.get('deadline', 0):
        facts = revert(ds, journal.get('txid'), rollback, by='the late confirmation')
        raise ConfirmError(
            'host reverted before confirmation: the confirmation of transaction %s came after its deadline %s (%s), '
            'so the host rolled it back (%s).' % (
                journal.get('txid'), confirm.get('deadline_iso'), cause(confirm.get('seconds')),
                (facts or {}).get('outcome')),
            self_revert=facts, confirm=confirm)


def _take_alert_settings(ds, txid):
    """The revert's alert settings of transaction txid, read and removed from the host (None when there are none)."""
    try:
        settings = read_json(_alert_path(ds, txid), default=None)
    except ValueError:
        settings = None
    _unlink(_alert_path(ds, txid))
    return settings if isinstance(settings, dict) and settings.get('webhook_url') else None


def revert(ds, txid, rollback, by='the watchdog', alert=False):
    """At the deadline, under host_lock: roll back transaction txid with the engine's rollback unless it was
    confirmed or closed, record it in the journal and keep the facts. Returns the facts, or None when there was
    nothing to revert. ``rollback``: the engine's guarded_rollback (passed in: the engine imports this module).
    ``alert``: the revert alerts by itself through the channels armed with it (the watchdog's revert; a late
    confirmation's revert is reported by the run that confirmed late). Its settings leave the host either way."""
    facts, settings = _revert(ds, txid, rollback, by)
    if facts is not None and alert and settings:
        facts = _send_alert(ds, txid, settings, facts)
    return facts


def _revert(ds, txid, rollback, by):
    from ansible_collections.failsafe.deploy.plugins.module_utils._layers import _run
    with host_lock(ds):
        settings = _take_alert_settings(ds, txid)
        journal = ds.read_journal() or {}
        confirm = journal.get('confirm') or {}
        armed = confirm.get('txid') == txid and confirm.get('state') == 'armed'
        if journal.get('txid') != txid or journal.get('status') != 'open' or not armed:
            _unlink(_params_path(ds, txid))
            return None, None
        try:
            data = read_json(_params_path(ds, txid), default=None)
        except ValueError:
            data = None
        if not data:
            _update_confirm(ds, txid, state='revert_failed', error='the parameters file %s is missing'
                            % _params_path(ds, txid))
            return None, None
        started = time.time()
        why = '%s: the host reverted itself (deadline %s, by %s)' % (cause(confirm.get('seconds')),
                                                                     confirm.get('deadline_iso'), by)
        _update_confirm(ds, txid, state='reverting', reverting=started, reverting_iso=iso(started), cause=why)
        # unconfirmed: quarantine only a release shown bad after its activation; check_delay 0: the deploy's
        # verify delay is not waited again before the first attempt of each check on the release restored
        p = dict(data['params'], reason=why, rollback_run_id=None, unconfirmed=True, check_delay=0)
        outcome, report, error = 'rolled_back', None, None
        try:
            report = rollback(p, _run)['failsafe_rollback']
        except EngineError as exc:
            outcome, error = 'rollback_failed', exc.msg
            report = (exc.details or {}).get('failsafe_rollback')
        finished = time.time()
        timeline = [
            {'event': 'opened', 'iso': journal.get('opened_iso')},
            {'event': 'armed', 'iso': confirm.get('armed_iso')},
            {'event': 'deadline', 'iso': confirm.get('deadline_iso')},
            {'event': 'revert started', 'iso': iso(started)},
            {'event': 'reverted' if outcome == 'rolled_back' else 'revert failed', 'iso': iso(finished)},
        ]
        facts = {'txid': txid, 'run_id': journal.get('run_id'), 'release': journal.get('release'),
                 'previous_release': journal.get('previous_release'), 'cause': cause(confirm.get('seconds')),
                 'reason': why, 'seconds': confirm.get('seconds'), 'deadline': confirm.get('deadline'),
                 'deadline_iso': confirm.get('deadline_iso'), 'by': by, 'started': started,
                 'started_iso': iso(started), 'finished': finished, 'finished_iso': iso(finished),
                 'outcome': outcome, 'error': error, 'rollback': report, 'timeline': timeline,
                 'reported_by': None}
        if settings and by == 'the watchdog':
            # the incident is named before the alert leaves: a run that reads the facts meanwhile links to it
            facts['alert'] = {'incident_id': _new_incident_id(finished), 'channels': ['webhook'],
                              'status': 'sending', 'source': ALERT_SOURCE}
        _write_facts(ds, facts)
        _update_confirm(ds, txid, state='reverted' if outcome == 'rolled_back' else 'revert_failed',
                        ended=finished, ended_iso=iso(finished), outcome=outcome, error=error)
        _unlink(_params_path(ds, txid))
    return facts, (settings if by == 'the watchdog' else None)


def watch(params_path, rollback):
    """The watchdog's body: sleep until the deadline, then revert with ``rollback`` (the engine's guarded_rollback,
    passed in by the engine's WATCHDOG_RUNNER) unless confirmed. Returns the exit status."""
    from ansible_collections.failsafe.deploy.plugins.module_utils._journal import DeployState
    data = read_json(params_path, default=None)
    if not data:
        return 0
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    while True:
        left = data['deadline'] - time.time()
        if left <= 0:
            break
        time.sleep(min(left, 5.0))
        if not os.path.exists(params_path):
            return 0  # disarmed
    if not os.path.exists(params_path):
        return 0  # disarmed, or the state directory is gone
    ds = DeployState(data['params']['state_dir'], data['params']['name'])
    facts = revert(ds, data['txid'], rollback, alert=True)
    if facts:
        sys.stdout.write('%s transaction %s: %s (%s)\n' % (iso(time.time()), data['txid'], facts['outcome'],
                                                           facts['reason']))
        if facts.get('alert'):
            sys.stdout.write('%s alert %s through %s: %s%s\n' % (
                iso(time.time()), facts['alert'].get('incident_id'), ', '.join(facts['alert'].get('channels') or []),
                facts['alert'].get('status'), ' (%s)' % facts['alert']['error'] if facts['alert'].get('error') else ''))
        return 0 if facts['outcome'] == 'rolled_back' else 1
    return 0
