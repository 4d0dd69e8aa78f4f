# Copyright: Contributors to failsafe.deploy
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Writes each role's meta/argument_specs.yml, meta/main.yml and README.md from the commented roles/*/defaults/main.yml.

Run after changing a role's defaults: python scripts/gen_role_docs.py (needs PyYAML, which the venv has).
"""
import json
import os
import re

import yaml

ROLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'roles')
SHORT = {
    'preflight': 'Take the deploy lock, check disk and quarantine, recover a dead run, open the transaction.',
    'snapshot': 'Snapshot every path the deploy will touch and record it in the journal.',
    'release': 'Upload and stage the release beside the others, with shared paths linked in.',
    'activate': 'Write configuration, switch current atomically to the new release and restart the service.',
    'verify': 'Run health checks against the new release; a failure triggers the rollback.',
    'commit': 'Mark the release verified, close the transaction, release the lock and prune.',
    'rollback': ('Undo the transaction in the journal: restore the snapshot, return to the last verified release, '
                 'restart, check health and prove the restore.'),
}
REQUIRED = {'release': {'failsafe_release_archive'}}
DICT_LISTS = ('failsafe_config_files', 'failsafe_verify_checks', 'failsafe_rollback_checks')


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


def write_specs(role):
    """meta/argument_specs.yml and meta/main.yml of one role, from its commented defaults."""
    d = os.path.join(ROLES, role)
    path = os.path.join(d, 'defaults', 'main.yml')
    with open(path, encoding='utf-8') as f:
        lines = f.read().splitlines()
    data = yaml.safe_load('\n'.join(lines)) or {}
    comments, pending = {}, []
    for line in lines:
        if line.startswith('#'):
            pending.append(line.lstrip('# ').strip())
        elif re.match(r'^[a-z_]+:', line):
            key = line.split(':', 1)[0]
            comments[key] = ' '.join(pending) if pending else comments.get('_last', '')
            comments['_last'] = comments[key]
            pending = []
    opts = {}
    for key, val in data.items():
        t = _type_of(val)
        o = {'description': [comments.get(key) or key], 'type': t}
        if t == 'list':
            o['elements'] = 'dict' if key in DICT_LISTS else 'str'
        if key == 'failsafe_rollback_checks':
            o['type'] = 'list'
            o['elements'] = 'dict'
        if key == 'failsafe_service_manager':
            o['choices'] = ['supervisor', 'systemd', 'none']
        if key in REQUIRED.get(role, ()):
            o['required'] = True
        elif isinstance(val, str) and '{{' in val and o['type'] != 'str':
            # A template standing for a list or dict is no valid default of that type: name it in the text instead.
            o['description'].append('Defaults to C(%s).' % val)
        else:
            o['default'] = val
        opts[key] = o
    spec = {'argument_specs': {'main': {
        'short_description': SHORT[role],
        'description': [SHORT[role], 'Part of the failsafe.deploy transaction; see docs/transaction.md.'],
        'options': opts}}}
    if role == 'activate':
        spec['argument_specs']['service'] = {
            'short_description': 'Restart the service on the release current points to.',
            'description': ['Restarts the service under supervisor or systemd; used by activate and rollback.'],
            'options': dict((k, v) for k, v in opts.items()
                            if k.startswith('failsafe_service') or k.startswith('failsafe_supervisor'))}
    os.makedirs(os.path.join(d, 'meta'), exist_ok=True)
    with open(os.path.join(d, 'meta', 'argument_specs.yml'), 'w', encoding='utf-8') as f:
        f.write('---\n')
        yaml.dump(spec, f, Dumper=IndentDumper, sort_keys=False, width=110, default_flow_style=False)
    meta = {'galaxy_info': {
        'author': 'failsafe.deploy maintainers', 'description': SHORT[role], 'license': 'GPL-3.0-or-later',
        'min_ansible_version': '2.17',
        'platforms': [{'name': 'Debian', 'versions': ['all']}, {'name': 'Ubuntu', 'versions': ['all']},
                      {'name': 'EL', 'versions': ['all']}],
        'galaxy_tags': ['deployment', 'rollback']}, 'dependencies': []}
    with open(os.path.join(d, 'meta', 'main.yml'), 'w', encoding='utf-8') as f:
        f.write('---\n')
        yaml.dump(meta, f, Dumper=IndentDumper, sort_keys=False, default_flow_style=False)


EXAMPLES = {
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
    'commit': """- name: Deploy, fail safe
  hosts: app
  gather_facts: false
  roles:
    # ... preflight, snapshot, release, activate and verify first (see playbooks/deploy.yml)
    - role: failsafe.deploy.commit
      vars:
        failsafe_release_keep: 3
        failsafe_snapshot_keep: 3""",
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
             'One step of the failsafe.deploy transaction (preflight, snapshot, release, activate, verify, commit; '
             'rollback undoes it). `playbooks/deploy.yml` and `playbooks/rollback.yml` compose the steps; see '
             '[the deploy transaction](../../docs/transaction.md). '
             '`ansible-doc -t role failsafe.deploy.%s` shows the same variables.' % role, '']
    for entry, data in spec['argument_specs'].items():
        title = 'Variables' if entry == 'main' else 'Variables of the `%s` entry point' % entry
        lines += ['## %s' % title, '']
        if entry != 'main':
            lines += [data['short_description'], '']
        lines += ['| Variable | Type | Default | Description |', '| --- | --- | --- | --- |']
        for key, o in data['options'].items():
            desc = ' '.join(d for d in o['description'] if not d.startswith('Defaults to C('))
            typ = o['type'] + (' of %s' % o['elements'] if 'elements' in o else '')
            default = _default_text(o)
            if 'default' not in o and not o.get('required'):
                default = '`%s`' % [d for d in o['description'] if d.startswith('Defaults to C(')][0][14:-2]
            lines.append('| `%s` | %s | %s | %s |' % (key, typ, _md(default), _md(desc)))
        lines.append('')
    lines += ['## Example', '', '```yaml', '---', EXAMPLES[role], '```', '']
    with open(os.path.join(ROLES, role, 'README.md'), 'w', encoding='utf-8') as f:
        f.write('\n'.join(lines))


def main():
    for role in sorted(os.listdir(ROLES)):
        write_specs(role)
        with open(os.path.join(ROLES, role, 'meta', 'argument_specs.yml'), encoding='utf-8') as f:
            write_readme(role, yaml.safe_load(f))


if __name__ == '__main__':
    main()
