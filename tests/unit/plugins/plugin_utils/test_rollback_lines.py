# -*- coding: utf-8 -*-
# Copyright: Contributors to failsafe.deploy
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""What the controller says of each host's rollback: the lines under the ROLLED BACK banner, the Markdown and HTML
reports and the rolled_back alert name the release the host runs after it and what every layer of every stage
undid, from the host's rollback results as the rollback run returns them (one per stage of a staged rollback)."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

from ansible_collections.failsafe.deploy.plugins.plugin_utils._html import render_html
from ansible_collections.failsafe.deploy.plugins.plugin_utils._incident import render_markdown, rolled_back_summary
from ansible_collections.failsafe.deploy.plugins.plugin_utils._launcher import merge_child_hosts
from ansible_collections.failsafe.deploy.plugins.plugin_utils._summary import rollback_host_lines

# A staged rollback as the host's two calls report it: the code stage, then the database stage (whose report, made
# after the code stage, names no path and undid no release).
CODE = {'txid': 'tx1', 'failed_release': '5.0', 'target_release': '4.0', 'running_release': '4.0',
        'restored': ['/srv/app/current', '/srv/app/shared/app.ini'], 'quarantined': True, 'verified': True,
        'stages': ['code'], 'pending': ['database'],
        'layers': [{'kind': 'files', 'undone': True, 'paths': 2, 'undid': '2 path(s) restored'},
                   {'kind': 'release', 'undone': True, 'undid': 'release switched back from 5.0 to 4.0'},
                   {'kind': 'service', 'undone': True, 'action': 'restarted', 'undid': 'service restarted'}]}
DATABASE = {'txid': 'tx1', 'failed_release': '5.0', 'target_release': '4.0', 'running_release': '4.0',
            'restored': [], 'quarantined': False, 'verified': True, 'stages': ['database'],
            'layers': [{'kind': 'database', 'undone': True, 'stage': 'database',
                        'undid': 'database app.db migrated back (undid 0002) to 0001'}]}


def _hosts():
    return merge_child_hosts(['web1', 'web2'], {'hosts': {
        'web1': {'status': 'ok', 'failsafe_rollback': [CODE, DATABASE], 'failed_tasks': []},
        'web2': {'status': 'failed', 'failsafe_rollback': [], 'failed_tasks': [{'task': 'Undo'}]}}})


def test_the_banner_line_of_a_staged_rollback_sums_up_every_stage_and_names_the_running_release():
    assert rollback_host_lines(_hosts()) == [
        '  web1: runs release 4.0 (5.0 rolled back); undone: 2 path(s) restored, release switched back from 5.0 to '
        '4.0, service restarted, database app.db migrated back (undid 0002) to 0001']


def test_a_host_that_kept_its_release_or_has_none_is_named_so():
    kept = {'failed_release': '3.0', 'target_release': None, 'running_release': '2.0', 'removed_release': '3.0',
            'layers': [{'kind': 'files', 'undone': True, 'undid': '0 path(s) restored (none had changed)'}]}
    nothing = {'failed_release': '1.0', 'target_release': None, 'nothing_deployed': True, 'layers': [],
               'removed_partial': '1.0'}
    layers_only = {'layers': [{'kind': 'flags', 'undone': True, 'undid': 'flag(s) a restored'}]}
    older = {'failed_release': '3.0', 'target_release': '2.0', 'layers': [
        {'kind': 'files', 'undone': True}, {'kind': 'service', 'undone': True, 'action': 'restarted'}]}
    hosts = dict((name, {'status': 'ok', 'restored': restored}) for name, restored in (
        ('a', kept), ('b', nothing), ('c', layers_only), ('d', older)))
    assert rollback_host_lines(hosts) == [
        '  a: runs release 2.0 (3.0 rolled back); undone: 0 path(s) restored (none had changed), staged release 3.0 '
        'removed',
        '  b: runs no release (nothing deployed before 1.0); undone: half-staged copy of release 1.0 removed',
        '  c: layers only; undone: flag(s) a restored',
        '  d: runs release 2.0 (3.0 rolled back); undone: files undone, service restarted']
    assert rolled_back_summary('deploy failed on a', ['a'], hosts) == 'deploy failed on a; rolled back a to release 2.0'


def test_the_reports_name_the_running_release_and_what_each_stage_undid():
    incident = {'incident_id': 'inc-x', 'outcome': 'rolled_back', 'summary': {}, 'timeline': [],
                'rollback': {'hosts': _hosts()}}
    md = render_markdown(incident)
    assert '| web1 | ok | 4.0 | 5.0 | files, release, service, database | 2 | yes | - |' in md
    assert ('- **web1** runs release 4.0 (5.0 rolled back); undone: 2 path(s) restored, release switched back from '
            '5.0 to 4.0, service restarted, database app.db migrated back (undid 0002) to 0001') in md
    assert '**web2**' not in md
    page = render_html(incident)
    assert 'Runs release' in page and 'database app.db migrated back (undid 0002) to 0001' in page
