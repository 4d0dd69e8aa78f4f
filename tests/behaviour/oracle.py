# -*- coding: utf-8 -*-
# Copyright: Contributors to failsafe.deploy
# SPDX-License-Identifier: GPL-3.0-or-later
"""The outcome oracle: what really happened on each host, told from the host alone, against what the collection said.

``observe`` looks at one local demo site by itself, never through the collection: where ``current`` points, which
version answers the app's port (and with which configuration label), a hash of every file, mode, owner and link of
the captured paths, of the whole application root and state directory, the flag file, and a schema and data dump of
the SQLite database. ``true_outcome`` derives from two observations (before and after a scenario) what happened to
the host: ``deployed`` (the new release current and answering), ``refused`` (nothing at all changed, not even the
state directory), ``rolled_back`` (the captured state byte-identical to before and the previous release answering,
or nothing answering where nothing did), or ``rollback_failed`` (anything else). ``run_outcome`` folds the hosts.

``Words`` gathers everything the collection said about a run: the exit status, the PLAY RECAP, the callback's
closing banner, the incident reports (JSON and Markdown) written by that run, the alerts, the rollback summary lines
and the printed rollback command, the ROLLBACK FAILED banner and the way out it prints, scripts/deploy_outcome.py's
verdict and exit code, and history_info's view of each host. ``check_words`` compares them with the truth and
returns every mismatch as a sentence; ``markdown_words`` does so for what an incident's Markdown report says (its
reason, likely cause, per-host rollback table and timeline), and ``half_installed`` names what a rollback left in
releases/ that no release of the ledger owns.
"""
import json
import os
import re
import sqlite3
import subprocess
import sys
import urllib.error
import urllib.request

from support import ROOT, tree_digest

EXIT_CODES = {'deployed': 0, 'rolled_back': 1, 'rollback_failed': 2, 'unknown': 3, 'refused': 4}
EXIT_CODES['mitigated'] = 0
LABELS = {'rolled_back': 'ROLLED BACK', 'rollback_failed': 'ROLLBACK FAILED', 'refused': 'REFUSED BEFORE ANY CHANGE',
          'mitigated': 'MITIGATED'}
SUCCESS = ('deployed', 'mitigated')


def _http(port, path):
    try:
        with urllib.request.urlopen('http://127.0.0.1:%d%s' % (port, path), timeout=5) as answer:
            return answer.status, answer.read().decode().strip()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors='replace').strip()
    except (OSError, ValueError):
        return None, None


def sqlite_dump(path):
    """Schema and rows of a SQLite file, as SQL text (None when there is no file). The empty bookkeeping table of
    the collection's migrations is left out (a database migrated back to no migration may keep it); its rows, if
    any, are kept."""
    if not path or not os.path.exists(path):
        return None
    conn = sqlite3.connect('file:%s?mode=ro' % path, uri=True)
    try:
        skipped = ('CREATE TABLE failsafe_migrations', 'CREATE TABLE IF NOT EXISTS failsafe_migrations')
        return '\n'.join(line for line in conn.iterdump() if not line.startswith(skipped))
    finally:
        conn.close()


def flag_store(path):
    """The flag file as flagd reads it (its JSON value) and its mode: what a flag evaluation depends on."""
    if not path:
        return None
    try:
        with open(path, encoding='utf-8') as handle:
            return json.load(handle), os.stat(path).st_mode & 0o7777
    except FileNotFoundError:
        return 'absent'


def observe(site):
    """One host by itself: ``site`` has dir, port, app_root, state_dir, captured_paths and optionally flag_file,
    db_path, own_paths (the files an operator's own playbook changes)."""
    try:
        current = os.path.basename(os.readlink(os.path.join(site.app_root, 'current')))
    except OSError:
        current = None
    status, version = _http(site.port, '/version')
    health, dummy = _http(site.port, '/health')
    return {
        'current': current,
        'served': version if status == 200 else None,
        'healthy': health == 200,
        'captured': tree_digest(site.captured_paths),
        'everything': tree_digest([site.app_root, site.state_dir]),
        'releases': sorted(os.listdir(os.path.join(site.app_root, 'releases')))
        if os.path.isdir(os.path.join(site.app_root, 'releases')) else [],
        'flags': flag_store(getattr(site, 'flag_file', None)),
        'db': sqlite_dump(getattr(site, 'db_path', None)),
        'own': tree_digest(getattr(site, 'own_paths', [])),
    }


def flag_on(store, key):
    """Whether flagd (and the example app) sees the flag on: state ENABLED and its default variant's value true."""
    flag = ((store[0] if isinstance(store, tuple) else {}).get('flags') or {}).get(key) or {}
    return flag.get('state') == 'ENABLED' and (flag.get('variants') or {}).get(flag.get('defaultVariant')) is True


def true_outcome(before, after, new_release, own=False, turned_on=None):
    """What happened to the host, from its state alone: (outcome, why). ``turned_on``: a flag the deploy turns on
    in the host's flag file; the new release serving with that flag off is a deploy the kill switch mitigated."""
    if after == before:
        return 'refused', 'nothing on the host changed'
    if own:
        # an operator's own playbook: its files either hold the change or are back as they were
        if after['own'] == before['own']:
            return 'rolled_back', 'its files are byte-identical to before'
        return 'deployed', 'its files hold the change'
    if after['current'] == new_release and after['served'] == new_release and after['healthy']:
        if turned_on and not flag_on(after['flags'], turned_on):
            return 'mitigated', '%s answers with the flag %s off, which the deploy turned on' % (new_release,
                                                                                                 turned_on)
        return 'deployed', 'current is %s and the app answers %s' % (new_release, new_release)
    same = [k for k in ('captured', 'flags', 'db') if after[k] == before[k]]
    if len(same) == 3 and after['current'] == before['current'] and after['served'] == before['served'] \
            and after['healthy'] == before['healthy']:
        return 'rolled_back', 'back byte for byte on %s, answering %s' % (before['current'], before['served'])
    diffs = {k: (before[k] if k in ('current', 'served', 'healthy') else '...',
                 after[k] if k in ('current', 'served', 'healthy') else '...')
             for k in ('current', 'served', 'healthy', 'captured', 'flags', 'db') if after[k] != before[k]}
    return 'rollback_failed', 'neither the new release nor the state before: %r' % diffs


def run_outcome(host_outcomes):
    outcomes = set(host_outcomes.values())
    if outcomes == {'refused'}:
        return 'refused'
    if outcomes == {'deployed'}:
        return 'deployed'
    if outcomes <= set(SUCCESS):
        return 'mitigated'
    if 'rollback_failed' in outcomes or 'deployed' in outcomes or 'mitigated' in outcomes:
        return 'rollback_failed'  # a host left broken, or a mixed fleet
    return 'rolled_back'


class Words:
    """Everything the collection said about one run."""

    def __init__(self, rc, output, report_dir, reports_before, alerts, inventory):
        self.rc = rc
        self.output = output
        self.inventory = inventory
        self.alerts = alerts
        self.reports = []
        for name in sorted(os.listdir(report_dir)) if os.path.isdir(report_dir) else []:
            path = os.path.join(report_dir, name)
            if re.match(r'^inc-[^.]+\.json$', name) and path not in reports_before:
                with open(path, encoding='utf-8') as handle:
                    self.reports.append((path, json.load(handle)))
        verdict = subprocess.run([sys.executable, os.path.join(ROOT, 'scripts', 'deploy_outcome.py'), '--report-dir',
                                  report_dir, '--rc', str(rc)], capture_output=True, text=True, check=False)
        self.verdict_code = verdict.returncode
        self.verdict = dict(line.split('=', 1) for line in verdict.stdout.splitlines() if '=' in line)

    def recap(self):
        """{host: (failed, unreachable)} of the PLAY RECAP, or {} when the run printed none."""
        out = {}
        for m in re.finditer(r'^(\S+)\s+:\s+ok=\d+\s+changed=\d+\s+unreachable=(\d+)\s+failed=(\d+)', self.output,
                             re.M):
            out[m.group(1)] = (int(m.group(3)), int(m.group(2)))
        return out

    def banner(self):
        m = re.findall(r'^failsafe auto_rollback: (.*)$', self.output, re.M)
        return m[-1] if m else None

    def rollback_lines(self):
        """{host: (failed release, release it says the host went back to or None)} of the rollback's summary lines
        (the last one of each host: a staged rollback says the whole of it last)."""
        text = re.sub(r'^rollback \| ', '', self.output, flags=re.M)
        found = {}
        for m in re.finditer(r'\[(\S+?)\] => \{\s*"msg": "rolled back transaction \S+: (\S+) -> ([^;,"(]+)', text):
            target = m.group(3).strip()
            found[m.group(1)] = (m.group(2), None if target.startswith('nothing') or target == 'None' else target)
        return found

    def rollback_commands(self):
        return re.findall(r'(ansible-playbook failsafe\.deploy\.rollback [^"\n]*)', self.output)

    def failed_banner(self):
        """The incident id of the ROLLBACK FAILED banner, or None when the run printed none."""
        m = re.findall(r'^!!! ROLLBACK FAILED: incident (\S+)$', self.output, re.M)
        return m[-1] if m else None

    def way_out(self):
        """The commands the ROLLBACK FAILED banner prints as the way out."""
        return re.findall(r'^!!! Way out, once the cause is fixed: (ansible-playbook .+)$', self.output, re.M)


def failed_tasks(output):
    """{(host, task name)} of every task the run's own output shows failed on a host (``fatal: [host]`` or
    ``failed: [host]`` under its ``TASK [...]`` header; the rollback child's prefixed lines are not the run's)."""
    found, task = set(), None
    for line in output.splitlines():
        m = re.match(r'^TASK \[(.+?)\] \*+$', line)
        if m:
            task = m.group(1)
            continue
        m = re.match(r'^(?:fatal|failed): \[([^\]]+?)\]', line)
        if m and task:
            found.add((m.group(1).split(' -> ')[0], task))
    return found


def md_table(markdown, heading):
    """The rows (lists of cell texts) of the first table under the Markdown heading ``heading``, header row and
    separator left out; None when there is no such heading."""
    lines = markdown.splitlines()
    if heading not in lines:
        return None
    rows, seen = [], False
    for line in lines[lines.index(heading) + 1:]:
        if line.startswith('#'):
            break
        if line.startswith('|'):
            seen = True
            rows.append([c.strip().replace('\\|', '|') for c in re.split(r'(?<!\\)\|', line.strip())[1:-1]])
        elif seen:
            break
    return rows[2:]


def markdown_words(md_path, data, run, truth, sites, expect, output):
    """Every mismatch between an incident's Markdown report and the hosts (and the run's own output): the top's
    reason names a task that failed on a host and the likely cause the cause class the table expects, the per-host
    table names the release each host went back to, the paths restored (as a number, not raw JSON) and whether it
    was verified, and the timeline lists no skipped step as a row of its own."""
    wrong = []
    with open(md_path, encoding='utf-8') as handle:
        markdown = handle.read()
    top = dict((row[0], row[1]) for row in md_table(markdown, '## Summary') or [] if len(row) == 2)
    reason, likely = top.get('Reason', '-'), top.get('Likely cause', '-')
    if reason == '-':
        wrong.append('the Markdown report %s gives no reason' % md_path)
    elif run == 'refused':
        # a refusal names the hosts the preflight refused, as the run printed them
        refused = set(h for h, t in failed_tasks(output))
        if not reason.startswith('refused before any change on ') or not any(h in reason for h in refused):
            wrong.append('the Markdown report %s gives the reason %r, the run refused on %r' % (
                md_path, reason, sorted(refused)))
    elif run not in ('rollback_failed', 'mitigated'):
        # the reason is the run's first failure: a task that really failed on a host, as the run printed it
        named = [(h, t) for h, t in failed_tasks(output) if "'%s'" % t in reason and h in reason]
        if not named:
            wrong.append('the Markdown report %s gives the reason %r, which names none of the failed tasks %r' % (
                md_path, reason, sorted(failed_tasks(output))))
    elif 'rollback' not in reason.lower():
        wrong.append('the Markdown report %s of a failed rollback gives the reason %r' % (md_path, reason))
    if likely == '-' and run != 'mitigated':
        # (a mitigated run counts no failure: its reason says what the escalation ladder fixed, as the HTML's does)
        wrong.append('the Markdown report %s gives no likely cause' % md_path)
    elif expect.get('cause') and not likely.startswith('%s: ' % expect['cause']):
        wrong.append('the Markdown report %s gives the likely cause %r, the table expects the cause %s' % (
            md_path, likely, expect['cause']))
    per_host = md_table(markdown, '### Per host') or []
    rows = dict((row[0], row) for row in per_host if len(row) == 8)
    if len(rows) != len(per_host):
        wrong.append('the Markdown report %s has a per-host table that is not one host a row: %r' % (
            md_path, per_host))
    if run == 'refused':
        if rows or 'Not started' not in markdown:
            wrong.append('the Markdown report %s of a refusal lists a rollback: %r' % (md_path, per_host))
    hosts = (data.get('rollback') or {}).get('hosts') or {}
    for host, outcome in truth.items():
        site = sites[host]
        if run == 'refused' or host not in hosts:
            continue
        row = rows.get(host)
        if row is None:
            wrong.append('%s: the Markdown report %s has no row for its rollback' % (host, md_path))
            continue
        dummy, status, back, failed, layers, paths, verified, dummy2 = row
        if any(cell.startswith(('{', '[')) for cell in row):
            wrong.append('%s: the Markdown report %s shows raw data in its per-host row %r' % (host, md_path, row))
        restored = (hosts[host] or {}).get('restored') if isinstance(hosts[host], dict) else None
        restored = restored if isinstance(restored, dict) else {}
        if outcome == 'rolled_back':
            if verified != 'yes' or status != 'ok':
                wrong.append('%s: the Markdown report %s says result %s, verified %s; the host is rolled back' % (
                    host, md_path, status, verified))
            if not site.own and back != (site.after['served'] or '-'):
                wrong.append('%s: the Markdown report %s says back to release %s, the host serves %s' % (
                    host, md_path, back, site.after['served']))
            if 'files' in layers.split(', ') and not paths.isdigit():
                wrong.append('%s: the Markdown report %s restored files but gives the paths restored as %r' % (
                    host, md_path, paths))
            if paths.isdigit() and int(paths) != len(restored.get('restored') or []):
                wrong.append('%s: the Markdown report %s says %s paths restored, the rollback restored %d' % (
                    host, md_path, paths, len(restored.get('restored') or [])))
            roots = site.own_paths if site.own else site.captured_paths
            stray = [p for p in restored.get('restored') or [] if not any(
                p == r or p.startswith(r.rstrip('/') + '/') for r in roots)]
            if stray:
                wrong.append('%s: the report %s says paths were restored that are not the host\'s snapshot: %r' % (
                    host, md_path, stray))
        elif outcome == 'rollback_failed':
            if verified == 'yes':
                wrong.append('%s: the Markdown report %s says its rollback was verified, the host shows %s' % (
                    host, md_path, outcome))
            if not site.own and back not in ('-', site.after['served']):
                wrong.append('%s: the Markdown report %s says back to release %s, the host serves %s' % (
                    host, md_path, back, site.after['served']))
    # the timeline: no skipped step (a hook left empty, a task for another layer) as a row of its own, each host's
    # run of skipped steps folded into one row even where the other hosts' events interleave, and every skipped
    # step of the JSON report counted in a folded row
    open_runs, counted = {}, {}
    for row in [r for r in md_table(markdown, '## Timeline') or [] if len(r) == 6]:
        event, host, task, detail = row[2], row[3], row[4], row[5]
        if event == 'result' and 'status=skipped' in detail or event == 'task_start' and 'hook' in task:
            wrong.append('the Markdown report %s lists a skipped step in its timeline: %r' % (md_path, row))
        if event == 'skipped':
            if host in open_runs:
                wrong.append('the Markdown report %s lists the skipped steps of %s in two rows with nothing of that '
                             'host between them: %r and %r' % (md_path, host, open_runs[host], row))
            open_runs[host] = row
            m = re.match(r'^(\d+) steps? skipped$', task)
            counted[host] = counted.get(host, 0) + (int(m.group(1)) if m else 0)
        elif host == '-':
            open_runs.clear()
        else:
            open_runs.pop(host, None)
    skipped = {}
    for entry in data.get('timeline') or []:
        if entry.get('event') == 'result' and entry.get('status') == 'skipped':
            skipped[entry.get('host') or '-'] = skipped.get(entry.get('host') or '-', 0) + 1
    if counted != skipped:
        wrong.append('the Markdown report %s counts the skipped steps %r, its JSON report has %r' % (
            md_path, counted, skipped))
    return wrong


def half_installed(before, after, ledger):
    """The release directories a rolled back deploy left behind that no release of the ledger owns (a temp dir of a
    staging cut short, a release directory whose ledger entry is gone): a host back to what it was keeps only the
    releases it had and, for investigation or the next deploy, a release of the ledger (quarantined, or activated
    and reverted)."""
    known = (ledger or {}).get('releases') or {}
    return sorted(name for name in set(after['releases']) - set(before['releases'])
                  if name.startswith('.') or name not in known)


def ledger_of(site):
    """The release ledger of the host ({} when there is none)."""
    try:
        return site.ledger()
    except FileNotFoundError:
        return {}


def history(site, name='demo-app'):
    """history_info's view of the host (the module's own logic, called in this process)."""
    from ansible_collections.failsafe.deploy.plugins.modules.history_info import deployment
    return deployment(site.state_dir, name, site.app_root, 5, None, [])


def check_words(words, truth, expect, sites, new_release, before_history):
    """Every mismatch between the run's words and the truth (and the cell's expectations), as sentences.
    ``truth``: {host: outcome}; ``expect``: {'outcome', 'cause', 'exit', 'quarantine': {host: bool}}."""
    wrong = []
    run = run_outcome(truth)
    if run != expect['outcome']:
        wrong.append('the hosts show %s, the table expects %s' % (run, expect['outcome']))
    # the exit status of ansible-playbook and of deploy_outcome.py
    if (words.rc == 0) != (run in SUCCESS):
        wrong.append('ansible-playbook exited %s though the run was %s' % (words.rc, run))
    if expect.get('exit') is not None and words.verdict_code != expect['exit']:
        wrong.append('deploy_outcome.py exited %s (%s), the table expects %s' % (
            words.verdict_code, words.verdict.get('outcome'), expect['exit']))
    if words.verdict_code != EXIT_CODES.get(run):
        wrong.append('deploy_outcome.py says %s (exit %s), the hosts show %s' % (
            words.verdict.get('outcome'), words.verdict_code, run))
    # the recap: a failed or unreachable host exactly when the run did not deploy
    recap = words.recap()
    if recap:
        if any(sum(v) for h, v in recap.items() if h in truth) != (run not in SUCCESS):
            wrong.append('the PLAY RECAP %r does not fit a run that %s' % (recap, run))
    # the incident reports: none for a deploy, one with the true outcome otherwise
    outcomes = [data.get('outcome') for dummy, data in words.reports]
    if run == 'deployed':
        if outcomes:
            wrong.append('a deployed run wrote incident reports %r' % outcomes)
        if words.banner() and 'no failure' not in words.banner():
            wrong.append('a deployed run ends with the banner %r' % words.banner())
    else:
        if outcomes != [run]:
            wrong.append('the incident reports say %r, the hosts show %s' % (outcomes, run))
        for path, data in words.reports:
            label = (data.get('summary') or {}).get('outcome_label') or ''
            if not label.startswith(LABELS[run]):
                wrong.append('the report %s is labelled %r, the hosts show %s' % (path, label, run))
            md_path = path[:-len('.json')] + '.md'
            with open(md_path, encoding='utf-8') as handle:
                markdown = handle.read()
            if LABELS[run] not in markdown:
                wrong.append('the Markdown report %s never says %s' % (md_path, LABELS[run]))
            causes = (data.get('summary') or {}).get('causes')
            if expect.get('cause') and causes != [expect['cause']]:
                wrong.append('the report gives the causes %r, the table expects %r' % (causes, [expect['cause']]))
            wrong += markdown_words(md_path, data, run, truth, sites, expect, words.output)
        banner = words.banner() or ''
        if words.rc is not None and words.rc >= 0 and not banner.startswith(LABELS[run]):
            wrong.append('the closing banner says %r, the hosts show %s' % (banner, run))
    # the alerts: a refusal or a deploy alerts nothing of a rollback; a rollback says it rolled back
    kinds = [a.get('event') for a in words.alerts]
    if run in ('refused',) + SUCCESS and set(kinds) & {'deploy_failed', 'rolled_back', 'rollback_failed'}:
        wrong.append('the %s run sent the alerts %r' % (run, kinds))
    if run == 'mitigated' and 'failure_rescued' not in kinds:
        wrong.append('the mitigated run sent the alerts %r, none that says the failure was mitigated' % kinds)
    if run == 'rolled_back' and 'rolled_back' not in kinds:
        wrong.append('the rolled back run sent the alerts %r' % kinds)
    if run == 'rolled_back' and 'rollback_failed' in kinds:
        wrong.append('the rolled back run alerted rollback_failed')
    if run == 'rollback_failed' and ('rollback_failed' not in kinds or 'rolled_back' in kinds):
        wrong.append('the run whose rollback failed sent the alerts %r' % kinds)
    # a failed rollback: the loud banner, and the way out it prints for the hosts left broken
    if run == 'rollback_failed':
        broken = sorted(h for h, o in truth.items() if o not in ('rolled_back', 'refused'))
        if not words.failed_banner():
            wrong.append('the run whose rollback failed printed no ROLLBACK FAILED banner')
        elif words.reports and words.failed_banner() != words.reports[-1][1].get('incident_id'):
            wrong.append('the ROLLBACK FAILED banner names incident %s, the report %s' % (
                words.failed_banner(), words.reports[-1][1].get('incident_id')))
        commands = words.way_out()
        if len(commands) != 1:
            wrong.append('the ROLLBACK FAILED banner printed %d ways out: %r' % (len(commands), commands))
        for command in commands:
            if '-i %s' % words.inventory not in command:
                wrong.append('the printed way out lacks the inventory: %r' % command)
            limit = re.search(r'--limit (\S+)', command)
            named = sorted(h for h in (limit.group(1) if limit else '').split(',') if h)
            if named != broken:
                wrong.append('the printed way out is for the hosts %r, the hosts left broken are %r' % (named, broken))
    # per host: the rollback summary line, the ledger's quarantine, history_info
    lines = words.rollback_lines()
    for host, outcome in truth.items():
        site = sites[host]
        after = site.after
        if host in lines:
            failed, target = lines[host]
            served = after['served']
            if target != served and not (site.own and target is None):
                wrong.append('%s: the summary says "%s -> %s", the host serves %s' % (host, failed, target, served))
        if outcome == 'rolled_back' and not site.own and words.rc is not None and words.rc > 0 \
                and host not in lines:
            wrong.append('%s was rolled back and no summary line says so' % host)
        # the report's rollback of the host: the release it says the host is back to, and whether the restore was
        # verified (a host whose rollback failed is not)
        for path, data in words.reports:
            info = ((data.get('rollback') or {}).get('hosts') or {}).get(host)
            restored = (info or {}).get('restored') if isinstance((info or {}).get('restored'), dict) else {}
            back = restored['running_release'] if 'running_release' in restored else restored.get('target_release')
            if back is not None and back != after['served'] and not site.own:
                wrong.append('%s: the report %s says the host is back to release %s, the host serves %s' % (
                    host, path, back, after['served']))
            if restored.get('checks') and not site.own and getattr(site, 'before', None) \
                    and site.before['current'] is None and after['current'] is None:
                wrong.append('%s: the report %s says its rollback checked the health of a release, with none to go '
                             'back to: %r' % (host, path, restored['checks']))
            if outcome == 'rollback_failed' and (info or {}).get('verified'):
                wrong.append('%s: the report %s says its rollback was verified, the host shows %s' % (
                    host, path, outcome))
            with open(path[:-len('.json')] + '.md', encoding='utf-8') as handle:
                said = re.findall(r'^- \*\*%s\*\* (.*)$' % re.escape(host), handle.read(), re.M)
            for line in said if not site.own else ():
                runs = re.match(r'runs release ([^\s;(]+)', line)
                if runs and runs.group(1) != after['served']:
                    wrong.append('%s: the Markdown report says it %r, the host serves %s' % (
                        host, line, after['served']))
                if line.startswith('runs no release (nothing deployed before') and \
                        before_history[host].get('current_release') is not None:
                    wrong.append('%s: the Markdown report says it %r, release %s was deployed before' % (
                        host, line, before_history[host].get('current_release')))
        if not site.own:
            ledger = ledger_of(site)
            left = half_installed(site.before, after, ledger) \
                if outcome == 'rolled_back' and getattr(site, 'before', None) else []
            if left:
                wrong.append('%s is rolled back with a release left half installed in releases/: %r' % (host, left))
            state = (ledger.get('releases', {}).get(new_release) or {}).get('state')
            want = expect['quarantine'].get(host, False)
            if (state == 'failed') != want:
                wrong.append('%s: release %s is %s in the ledger; the table expects quarantined=%s' % (
                    host, new_release, state, want))
        seen = history(site, site.name)
        if outcome == 'refused':
            if seen.get('transactions') != before_history[host].get('transactions'):
                wrong.append('%s refused, yet history_info lists new transactions' % host)
        else:
            last = (seen.get('transactions') or [{}])[0]
            want_status = {'deployed': 'committed', 'mitigated': 'committed', 'rolled_back': 'rolled_back',
                           'rollback_failed': 'rollback_failed'}.get(outcome)
            if want_status and last.get('status') != want_status:
                wrong.append('%s: history_info says the last transaction is %s, the host shows %s' % (
                    host, last.get('status'), outcome))
            if not site.own and seen.get('current_release') != after['current']:
                wrong.append('%s: history_info says current %s, the host has %s' % (
                    host, seen.get('current_release'), after['current']))
    # the printed rollback command of a committed deploy carries the inventory and this run's id
    if run in SUCCESS and not all(s.own for s in sites.values()):
        commands = words.rollback_commands()
        if not commands:
            wrong.append('the committed deploy printed no rollback command')
        for command in commands:
            if '-i %s' % words.inventory not in command:
                wrong.append('the printed rollback command lacks the inventory: %r' % command)
    return wrong
