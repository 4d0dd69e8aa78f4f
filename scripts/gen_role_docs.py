# Copyright: Contributors to failsafe.deploy
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Writes each role's meta/argument_specs.yml, meta/main.yml and README.md from the commented roles/*/defaults/main.yml.

The settings several roles read have one home, roles/common/defaults/main.yml (and its internal vars/main.yml): every
other role depends on failsafe.deploy.common, and its docs list the shared settings it reads (found in its files,
and in the shared values those name) beside its own.

Run after changing a role's defaults: python scripts/gen_role_docs.py (needs PyYAML, which the venv has).
``--check`` writes nothing and exits 1 when a generated file is stale, two options of an entry point share one
description, or a documentation macro would break on a template (the docs gate runs it).
"""
import json
import os
import re
import sys

import yaml

ROLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'roles')
COMMON = 'common'
SHORT = {
    'common': ('The settings the failsafe.deploy roles share (names, paths, health checks, service), defined once; '
               'every other role depends on it.'),
    'preflight': ('Take the deploy lock, check disk, quarantine and checks, recover a dead run, snapshot and open the '
                  'transaction.'),
    'snapshot': 'Snapshot every path the deploy will touch and record it in the journal.',
    'release': 'Upload and stage the release beside the others, with shared paths linked in.',
    'migrate': ('Back up the database and run the release\'s migrations as a layer of the transaction (optional: off '
                'unless failsafe_migrate_enabled).'),
    'activate': 'Write configuration, switch current atomically to the new release and restart the service.',
    'verify': 'Run health checks against the new release; a failure triggers the rollback.',
    'commit': 'Mark the release verified, close the transaction, release the lock and prune.',
    'flags': ('Set feature flags as a layer of the transaction (flagd flag files, Unleash), undone first by a '
              'rollback; the kill switch of the escalation ladder.'),
    'rollback': ('Undo the transaction in the journal: restore the snapshot, return to the last verified release, '
                 'restart, check health and prove the restore.'),
    'traffic': 'Set which servers of a load balancer (HAProxy or nginx) take traffic, in a transaction of its own.',
    'infra': ('Apply infrastructure (Terraform, CloudFormation) before the code, in a transaction of its own on the '
              'host with the credentials; a rollback undoes it last.'),
}
# The README's opening paragraph and the page the role's description points to, where they are not the steps'.
INTRO = {
    'traffic': ('Applies a `traffic` layer on the load balancer host, in a transaction of layers only: open, apply, '
                'check through the load balancer, commit. HAProxy through its admin socket (weights and '
                '`ready`/`drain`/`maint`, no reload; the server-state-file is rewritten so a reload keeps the '
                'state), nginx through an upstream include file checked with `nginx -t` before a graceful reload. '
                'The previous traffic state is the undo: a rollback puts it back before any code is rolled back. '
                'Bad input (an unknown server, weights that do not add up, a refusing socket, a configuration that '
                'fails `haproxy -c` or `nginx -t`) changes nothing. `playbooks/blue_green.yml` and '
                '`playbooks/switch_back.yml` use it; see [traffic and blue-green](../../docs/traffic.md). '
                '`ansible-doc -t role failsafe.deploy.traffic` shows the same variables.'),
}
INTRO['infra'] = (
    'Applies `terraform` and `cloudformation` layers on the host where the operator\'s credentials are (the '
    'controller by default), in a transaction of layers only, once per deploy: after preflight and before the '
    'release, so the code and the database find the infrastructure they need. Each project\'s live configuration '
    'and state are recorded first; the new configuration is applied and proven by an empty plan. Each stack\'s '
    'template, parameters, tags and resources are recorded first (or that it did not exist); the new template is '
    'applied through a change set. `deploy.yml` runs the role again with '
    '`failsafe_infra_step: commit` after the code committed; until then a failure anywhere rolls the '
    'infrastructure back in the last stage of the rollback, after the code and the database. See '
    '[infrastructure](../../docs/infrastructure.md). `ansible-doc -t role failsafe.deploy.infra` shows the same '
    'variables.')
INTRO['common'] = (
    'Holds the one default of every setting that more than one role reads: the deployment\'s name and paths, the '
    'release id, the lock, the snapshot paths, the health checks and their timing, the rollback\'s checks and the '
    'service. It has no tasks: each step role depends on it (meta/main.yml), so a setting means the same in '
    'preflight, verify, rollback and the others, and a play sets it once. Each step role\'s README lists the shared '
    'settings it reads. `ansible-doc -t role failsafe.deploy.common` shows the same variables.')
DOC_PAGE = {'traffic': 'docs/traffic.md', 'infra': 'docs/infrastructure.md'}
CHOICES = {'failsafe_service_manager': ['supervisor', 'systemd', 'none'], 'failsafe_traffic_driver': ['haproxy', 'nginx'],
           'failsafe_confirm_mechanism': ['auto', 'systemd', 'process'], 'failsafe_infra_step': ['apply', 'commit']}
# Defaults of null: the type the variable takes when set.
NULL_TYPES = {'failsafe_traffic_total': 'int', 'failsafe_release_max_size': 'bytes'}
REQUIRED = {'release': {'failsafe_release_archive'}}
# Defaults that are templates standing for a list or dict, by (role, variable): shown in the README only.
TEMPLATE_DEFAULTS = {}
DICT_LISTS = ('failsafe_config_files', 'failsafe_verify_checks', 'failsafe_rollback_checks', 'failsafe_confirm_checks',
              'failsafe_traffic_servers', 'failsafe_traffic_checks', 'failsafe_flags', 'failsafe_flags_kill_switch',
              'failsafe_infra_terraform', 'failsafe_infra_cloudformation')
TEMPLATE_LISTS = ('failsafe_rollback_checks', 'failsafe_confirm_checks')


class IndentDumper(yaml.SafeDumper):
    """Indents sequences under their key (yamllint/ansible-lint `indentation: indent-sequences`)."""

    def increase_indent(self, flow=False, indentless=False):
        return super().increase_indent(flow, False)


def _type_of(val):
    if isinstance(val, bool):
        return 'bool'
    if isinstance(val, int):
        return 'int'
    if isinstance(val, list):
        return 'list'
    if isinstance(val, dict):
        return 'dict'
    return 'str'


def _read_defaults(path):
    """The values of a commented defaults file and the comment above each."""
    with open(path, encoding='utf-8') as f:
        lines = f.read().splitlines()
    data = yaml.safe_load('\n'.join(lines)) or {}
    comments, pending = {}, []
    for number, line in enumerate(lines, 1):
        if line.startswith('#'):
            pending.append(line.lstrip('# ').strip())
        elif re.match(r'^[a-z_]+:', line):
            key = line.split(':', 1)[0]
            if not pending:
                # One text for several variables reads as if they were the same thing: each gets its own.
                raise SystemExit('%s:%d: %s has no comment of its own above it' % (path, number, key))
            comments[key] = ' '.join(pending)
            pending = []
    return data, comments


def _yaml_of(path):
    with open(path, encoding='utf-8') as f:
        return yaml.safe_load(f) or {}


def shared_settings_read_by(role):
    """The settings of the common role's defaults that ``role`` reads: those its own files name, and those the
    shared values it reads name in turn (failsafe_service_name names failsafe_name)."""
    shared = _yaml_of(os.path.join(ROLES, COMMON, 'defaults', 'main.yml'))
    values = dict(shared, **_yaml_of(os.path.join(ROLES, COMMON, 'vars', 'main.yml')))
    texts = []
    for folder, dummy, files in os.walk(os.path.join(ROLES, role)):
        if os.path.basename(folder) != 'meta':
            for name in files:
                if name != 'README.md':
                    with open(os.path.join(folder, name), encoding='utf-8') as f:
                        texts.append(f.read())
    text = '\n'.join(texts)
    found, todo = set(), [k for k in values if re.search(r'\b%s\b' % k, text)]
    while todo:
        key = todo.pop()
        if key not in found:
            found.add(key)
            value = json.dumps(values[key])
            todo += [k for k in values if re.search(r'\b%s\b' % k, value)]
    return [k for k in shared if k in found]


def write_specs(role):
    """meta/argument_specs.yml and meta/main.yml of one role, from its commented defaults (and the common role's
    for the shared settings it reads)."""
    d = os.path.join(ROLES, role)
    data, comments = _read_defaults(os.path.join(d, 'defaults', 'main.yml'))
    if role != COMMON:
        shared, shared_comments = _read_defaults(os.path.join(ROLES, COMMON, 'defaults', 'main.yml'))
        keys = shared_settings_read_by(role)
        data = dict([(k, shared[k]) for k in keys] + list(data.items()))
        comments.update((k, shared_comments[k]) for k in keys)
    opts = {}
    for key, val in data.items():
        t = NULL_TYPES.get(key, 'str') if val is None else _type_of(val)
        o = {'description': [comments[key]], 'type': t}
        if t == 'list':
            o['elements'] = 'dict' if key in DICT_LISTS else 'str'
        if key in TEMPLATE_LISTS:
            o['type'] = 'list'
            o['elements'] = 'dict'
        if key in CHOICES:
            o['choices'] = CHOICES[key]
        if key in REQUIRED.get(role, ()):
            o['required'] = True
        elif val is None:
            pass
        elif isinstance(val, str) and '{{' in val and o['type'] != 'str':
            # A template standing for a list or dict is no valid default of that type. The README shows it; the
            # description says it in words (a template inside C() breaks at its first closing parenthesis).
            TEMPLATE_DEFAULTS[(role, key)] = val
        else:
            o['default'] = val
        opts[key] = o
    spec = {'argument_specs': {'main': {
        'short_description': SHORT[role],
        'description': [SHORT[role], 'Part of the failsafe.deploy transaction; see %s.' % DOC_PAGE.get(role, 'docs/transaction.md')],
        'options': opts}}}
    if role == 'activate':
        spec['argument_specs']['service'] = {
            'short_description': 'Restart the service on the release current points to.',
            'description': ['Restarts the service under supervisor or systemd; used by activate and rollback.'],
            'options': dict((k, v) for k, v in opts.items()
                            if k.startswith('failsafe_service') or k.startswith('failsafe_supervisor'))}
    _emit(os.path.join(d, 'meta', 'argument_specs.yml'),
          '---\n' + yaml.dump(spec, Dumper=IndentDumper, sort_keys=False, width=110, default_flow_style=False))
    meta = {'galaxy_info': {
        'author': 'failsafe.deploy maintainers', 'description': SHORT[role], 'license': 'GPL-3.0-or-later',
        'min_ansible_version': '2.19',
        'platforms': [{'name': 'Debian', 'versions': ['all']}, {'name': 'Ubuntu', 'versions': ['all']},
                      {'name': 'EL', 'versions': ['all']}],
        'galaxy_tags': ['deployment', 'rollback']},
        'dependencies': [] if role == COMMON else [{'role': 'failsafe.deploy.%s' % COMMON}]}
    _emit(os.path.join(d, 'meta', 'main.yml'),
          '---\n' + yaml.dump(meta, Dumper=IndentDumper, sort_keys=False, default_flow_style=False))
    return spec


EXAMPLES = {
    'common': """- name: Deploy, fail safe
  hosts: app
  gather_facts: false
  vars:
    # read by every step role that needs them (each depends on failsafe.deploy.common)
    failsafe_name: shop
    failsafe_app_root: /srv/shop
    failsafe_verify_checks:
      - url: http://127.0.0.1:8080/health
  roles:
    - role: failsafe.deploy.preflight
    # ... then snapshot, release, activate, verify and commit (see playbooks/deploy.yml)""",
    'traffic': """- name: Send all traffic to green, drain blue
  hosts: lb
  gather_facts: false
  roles:
    - role: failsafe.deploy.traffic
      vars:
        failsafe_traffic_driver: haproxy
        failsafe_traffic_haproxy_socket: /run/haproxy/admin.sock
        failsafe_traffic_haproxy_backend: app
        failsafe_traffic_servers:
          - {name: green, state: ready, weight: 100}
          - {name: blue, state: drain}
        failsafe_traffic_checks:
          - url: http://127.0.0.1/version
            body_regex: '^2\\.0\\.0$'""",
    'infra': """- name: Deploy with the infrastructure it needs
  hosts: app
  gather_facts: false
  vars:
    failsafe_infra_terraform:
      - project_path: /srv/infra/lb
        source: "{{ playbook_dir }}/infra/lb"
  tasks:
    - name: Apply the infrastructure first (on the controller)
      ansible.builtin.include_role:
        name: failsafe.deploy.infra
    # ... release, activate, verify, commit ...
    - name: Commit the infrastructure after the code
      ansible.builtin.include_role:
        name: failsafe.deploy.infra
      vars:
        failsafe_infra_step: commit""",
    'preflight': """- name: Open a deploy transaction
  hosts: app
  gather_facts: false
  roles:
    - role: failsafe.deploy.preflight
      vars:
        failsafe_name: app
        failsafe_release_id: 1.2.0
        failsafe_preflight_min_free_mb: 500""",
    'snapshot': """- name: Snapshot before change
  hosts: app
  gather_facts: false
  roles:
    - role: failsafe.deploy.preflight
    - role: failsafe.deploy.snapshot
      vars:
        failsafe_snapshot_extra_paths:
          - /etc/supervisor/conf.d/app.conf""",
    'release': """- name: Stage a release
  hosts: app
  gather_facts: false
  roles:
    - role: failsafe.deploy.preflight
    - role: failsafe.deploy.snapshot
    - role: failsafe.deploy.release
      vars:
        failsafe_release_id: 1.2.0
        failsafe_release_archive: dist/app-1.2.0.tar.gz
        failsafe_release_shared_paths:
          - log""",
    'activate': """- name: Switch to the staged release and restart
  hosts: app
  gather_facts: false
  roles:
    # ... preflight, snapshot and release first (see playbooks/deploy.yml)
    - role: failsafe.deploy.activate
      vars:
        failsafe_config_files:
          - dest: /srv/app/shared/config/app.json
            content: '{"port": 8080}'
            mode: '0640'
            owner: root
            group: app
        failsafe_service_command: /usr/bin/python3 /srv/app/current/app.py
        failsafe_service_environment:
          APP_RELEASE: "{{ failsafe_release_id }}"

# Only restart the service (the `service` entry point):
- name: Restart the application
  hosts: app
  gather_facts: false
  tasks:
    - name: Restart under supervisor
      ansible.builtin.include_role:
        name: failsafe.deploy.activate
        tasks_from: service""",
    'verify': """- name: Check the new release
  hosts: app
  gather_facts: false
  roles:
    # ... preflight, snapshot, release and activate first (see playbooks/deploy.yml)
    - role: failsafe.deploy.verify
      vars:
        failsafe_verify_checks:
          - name: health
            url: http://127.0.0.1:8080/health
            body_regex: '"status": *"ok"'
          - name: port
            type: tcp
            port: 8080""",
    'migrate': """- name: Deploy, fail safe
  hosts: app
  gather_facts: false
  roles:
    # ... preflight and release first; migrate before activate (see playbooks/deploy.yml)
    - role: failsafe.deploy.migrate
      vars:
        failsafe_migrate_enabled: "{{ inventory_hostname == groups['app'][0] }}"
        failsafe_migrate_engine: postgresql
        failsafe_migrate_database: shop
        failsafe_migrate_host: /var/run/postgresql
        failsafe_migrate_user: shop""",
    'commit': """- name: Deploy, fail safe
  hosts: app
  gather_facts: false
  roles:
    # ... preflight, snapshot, release, activate and verify first (see playbooks/deploy.yml)
    - role: failsafe.deploy.commit
      vars:
        failsafe_release_keep: 3
        failsafe_snapshot_keep: 3""",
    'flags': """- name: Deploy with a feature turned on, fail safe
  hosts: app
  gather_facts: false
  roles:
    # ... preflight, release and activate first (see playbooks/deploy.yml, which runs this role after activate)
    - role: failsafe.deploy.flags
      vars:
        failsafe_flags:
          - path: /etc/flagd/app.flagd.json
            flags:
              new-checkout:
                enabled: true
        failsafe_flags_kill_switch:
          - path: /etc/flagd/app.flagd.json
            flags:
              new-checkout:
                enabled: false""",
    'rollback': """- name: Roll back to the last verified state
  hosts: app
  gather_facts: false
  roles:
    - role: failsafe.deploy.rollback
      vars:
        failsafe_rollback_reason: manual rollback after a bad release""",
}


def _md(text):
    return text.replace('|', '\\|')


def _default_text(o):
    if o.get('required'):
        return '(required)'
    if 'default' not in o:
        return '(see description)'
    val = o['default']
    if isinstance(val, (list, dict)):
        text = json.dumps(val)
    elif isinstance(val, bool):
        text = 'true' if val else 'false'
    else:
        text = str(val)
    return '`%s`' % text if text != '' else '`""`'


def write_readme(role, spec):
    lines = ['# failsafe.deploy.%s' % role, '', SHORT[role], '',
             INTRO.get(role) or (
                 'One step of the failsafe.deploy transaction (preflight, snapshot, release, migrate, activate, verify, '
                 'commit; rollback undoes it), each one `failsafe.deploy.transaction` call on the host. '
                 '`playbooks/deploy.yml` (whose preflight takes the snapshot in the same call) and `playbooks/rollback.yml` '
                 'compose the steps; see [the deploy transaction](../../docs/transaction.md). '
                 '`ansible-doc -t role failsafe.deploy.%s` shows the same variables.' % role), '']
    for entry, data in spec['argument_specs'].items():
        title = 'Variables' if entry == 'main' else 'Variables of the `%s` entry point' % entry
        lines += ['## %s' % title, '']
        if entry != 'main':
            lines += [data['short_description'], '']
        lines += ['| Variable | Type | Default | Description |', '| --- | --- | --- | --- |']
        for key, o in data['options'].items():
            desc = ' '.join(o['description'])
            typ = o['type'] + (' of %s' % o['elements'] if 'elements' in o else '')
            default = _default_text(o)
            if (role, key) in TEMPLATE_DEFAULTS:
                default = '`%s`' % TEMPLATE_DEFAULTS[(role, key)]
            lines.append('| `%s` | %s | %s | %s |' % (key, typ, _md(default), _md(desc)))
        lines.append('')
    lines += ['## Example', '', '```yaml', '---', EXAMPLES[role], '```', '']
    _emit(os.path.join(ROLES, role, 'README.md'), '\n'.join(lines))


# A documentation macro ends at its first closing parenthesis: C(default([])) renders as "default([" and a stray ")".
_MACRO = re.compile(r'\b[BCIOVMLRU]\(([^)]*)\)')


def problems(role, spec):
    """What is wrong with a role's generated documentation: options sharing one text, macros a template breaks."""
    found = []
    for entry, data in spec['argument_specs'].items():
        seen = {}
        for key, o in data['options'].items():
            text = ' '.join(o['description'])
            if text in seen:
                found.append('%s/%s: %s and %s share one description' % (role, entry, seen[text], key))
            seen[text] = key
            for inner in _MACRO.findall(text):
                if '(' in inner or inner.count('{{') != inner.count('}}'):
                    found.append('%s/%s: %s: a macro breaks on %r' % (role, entry, key, inner))
            if text.count('{{') > text.count('}}'):
                found.append('%s/%s: %s: unbalanced template in its description' % (role, entry, key))
    return found


def _emit(path, text):
    """Write a generated file, or with --check only note that it differs from what is committed."""
    if CHECK['on']:
        try:
            with open(path, encoding='utf-8') as f:
                same = f.read() == text
        except FileNotFoundError:
            same = False
        if not same:
            CHECK['stale'].append(os.path.relpath(path, os.path.dirname(ROLES)))
        return
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'w', encoding='utf-8') as f:
        f.write(text)


CHECK = {'on': False, 'stale': []}


def main(argv):
    """Writes every role's docs; with --check writes nothing and exits 1 when they are stale or wrong."""
    CHECK['on'] = '--check' in argv
    found = []
    for role in sorted(os.listdir(ROLES)):
        spec = yaml.safe_load(yaml.dump(write_specs(role), Dumper=IndentDumper, sort_keys=False))
        write_readme(role, spec)
        found += problems(role, spec)
    found += ['%s is not what scripts/gen_role_docs.py writes: run it' % path for path in CHECK['stale']]
    for line in found:
        print(line)
    return 1 if found else 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
