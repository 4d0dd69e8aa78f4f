# -*- coding: utf-8 -*-
# Copyright: Contributors to failsafe.deploy
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The metric gate's helpers: instance expressions, waves of a serial play, settings and the pause for a person.
The gate against a real Prometheus: tests/behaviour/test_metric_gate_runs.py and test_canary.py."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import os
import re

import pytest

from ansible_collections.failsafe.deploy.plugins.action.metric_gate import _waves
from ansible_collections.failsafe.deploy.plugins.plugin_utils import _metric_gate as mg


def test_instance_regex_matches_exactly_the_instances():
    expression = mg.instance_regex(['10.0.0.11:8080', 'web-2:9100'])
    # inside a PromQL double-quoted string the backslashes are doubled; once unquoted it is an exact alternation
    assert expression == '10\\\\.0\\\\.0\\\\.11:8080|web-2:9100'
    unquoted = re.compile('^(?:%s)$' % expression.replace('\\\\', '\\'))
    assert unquoted.match('10.0.0.11:8080') and unquoted.match('web-2:9100')
    assert not unquoted.match('10x0.0.11:8080') and not unquoted.match('10.0.0.11:80801')


def test_expand_replaces_both_placeholders():
    query = mg.expand('a{instance=~"$canary"} / b{instance=~"$baseline"}', ['h1:1'], ['h2:1', 'h3:1'])
    assert query == 'a{instance=~"h1:1"} / b{instance=~"h2:1|h3:1"}'


def test_waves_of_a_serial_play():
    everyone = ['h1', 'h2', 'h3', 'h4', 'h5']
    assert _waves({'ansible_play_hosts_all': everyone, 'ansible_play_batch': ['h1']}) == (
        ['h1'], ['h1'], ['h2', 'h3', 'h4', 'h5'])
    assert _waves({'ansible_play_hosts_all': everyone, 'ansible_play_batch': ['h2', 'h3']}) == (
        ['h1', 'h2', 'h3'], ['h2', 'h3'], ['h4', 'h5'])
    assert _waves({'ansible_play_hosts_all': everyone, 'ansible_play_batch': ['h4', 'h5']}) == (
        everyone, ['h4', 'h5'], [])


@pytest.mark.parametrize('params,error', [
    ({'prometheus_url': 'http://p', 'count': 1}, 'at least one entry'),
    ({'prometheus_url': 'http://p', 'count': 0, 'thresholds': [{'name': 'a', 'query': 'q', 'max': 1}]}, 'count'),
    ({'prometheus_url': 'http://p', 'count': 1, 'thresholds': [{'name': 'a', 'query': 'q', 'max': 1},
                                                               {'name': 'a', 'query': 'q', 'max': 2}]}, 'unique'),
    ({'prometheus_url': 'ftp://p', 'count': 1, 'thresholds': [{'name': 'a', 'query': 'q', 'max': 1}]}, 'http://'),
])
def test_bad_settings_are_refused_before_any_query(params, error):
    with pytest.raises(mg.GateError, match=error):
        mg.run_gate(params, ['c'], ['b'], sleep=lambda s: None)


def test_a_pause_without_decision_aborts_at_its_timeout_never_promotes(tmp_path):
    path = str(tmp_path / 'decisions' / 'run.decision')
    clock = iter(range(0, 1000, 5))
    decision, waited, timed_out = mg.wait_for_decision(path, {'verdict': 'marginal', 'reason': 'r'}, timeout=30,
                                                       sleep=lambda s: None, clock=lambda: next(clock))
    assert (decision, timed_out) == ('abort', True) and waited >= 30
    assert not os.path.exists(path + '.paused')


def test_a_decision_left_from_an_earlier_pause_does_not_decide_this_one(tmp_path):
    path = str(tmp_path / 'run.decision')
    with open(path, 'w') as handle:
        handle.write('promote\n')
    seen = []

    def sleep(seconds):
        # while waiting: the stale decision is gone and the pause is announced; then a person aborts
        seen.append((os.path.exists(path), os.path.exists(path + '.paused')))
        with open(path, 'w') as handle:
            handle.write('abort\n')

    decision, dummy, timed_out = mg.wait_for_decision(path, {'verdict': 'marginal', 'reason': 'r'}, sleep=sleep)
    assert (decision, timed_out) == ('abort', False)
    assert seen == [(False, True)]
    assert not os.path.exists(path) and not os.path.exists(path + '.paused')


# ---------------------------------------------------------------------------------------------------------------
# a threshold over several series: the lowest is judged against the min, the highest against the max

def _series(*values):
    return [({'instance': 'web%d:8080' % (i + 1), 'job': 'app'}, v) for i, v in enumerate(values)]


def _threshold(monkeypatch, answer, **bounds):
    """The threshold's analysis after a gate of 2 measurements whose every instant query returns ``answer``."""
    monkeypatch.setattr(mg.Prometheus, 'query', lambda self, promql, at=None: list(answer))
    params = {'prometheus_url': 'http://prometheus.invalid:9090', 'count': 2, 'interval': 0,
              'thresholds': [dict(name='success_rate', query='app_success_ratio', **bounds)]}
    gate = mg.run_gate(params, ['c:1'], ['b:1'], sleep=lambda s: None)
    analysis = gate['analyses'][0]
    assert gate['verdict'] == analysis['verdict']
    return analysis


def test_a_series_below_the_minimum_fails_though_another_one_is_the_highest(monkeypatch):
    # web3 is neither the first series nor the highest: a pick of either hides it
    analysis = _threshold(monkeypatch, _series(0.9, 0.95, 0.3, 0.8), min=0.5, max=1.0)
    assert analysis['verdict'] == 'fail', analysis
    assert analysis['values'] == [0.3, 0.3] and analysis['breaches'] == 2
    assert [(b['series'], b['bound'], b['worst']) for b in analysis['breaching_series']] == [
        ('{instance="web3:8080", job="app"}', 'min', 0.3)]
    assert 'web3:8080' in analysis['reason'] and 'below the min 0.5' in analysis['reason']
    assert 'web1:8080' not in analysis['reason'] and 'web2:8080' not in analysis['reason']


def test_a_series_above_the_maximum_fails_though_it_is_not_the_first(monkeypatch):
    for bounds in ({'min': 0.5, 'max': 1.0}, {'max': 1.0}):
        analysis = _threshold(monkeypatch, _series(0.6, 1.4, 0.7), **bounds)
        assert analysis['verdict'] == 'fail', (bounds, analysis)
        assert analysis['values'] == [1.4, 1.4]
        assert [(b['series'], b['bound']) for b in analysis['breaching_series']] == [
            ('{instance="web2:8080", job="app"}', 'max')]
        assert 'web2:8080' in analysis['reason'] and 'above the max 1' in analysis['reason']


def test_a_series_below_a_lone_minimum_fails_though_it_is_not_the_first(monkeypatch):
    analysis = _threshold(monkeypatch, _series(5.0, 0.2, 3.0), min=1.0)
    assert analysis['verdict'] == 'fail' and analysis['values'] == [0.2, 0.2]
    assert 'web2:8080' in analysis['reason']


def test_every_series_within_both_bounds_passes_and_names_none(monkeypatch):
    analysis = _threshold(monkeypatch, _series(0.6, 0.99, 0.51), min=0.5, max=1.0)
    assert analysis['verdict'] == 'pass', analysis
    assert analysis['breaching_series'] == [] and 'web' not in analysis['reason']


# ---------------------------------------------------------------------------------------------------------------
# a comparison with most of its samples missing

def _ranges(monkeypatch, canary, baseline):
    def query_range(self, promql, start, end, step):
        return [({}, list(canary if 'canary' in promql else baseline))]
    monkeypatch.setattr(mg.Prometheus, 'query_range', query_range)


def _comparison_gate(**entry):
    comparison = {'name': 'latency', 'canary_query': 'lat{role="canary"}', 'baseline_query': 'lat{role="base"}',
                  'critical': True, 'min_samples': 3}
    comparison.update(entry)
    return mg.run_gate({'prometheus_url': 'http://prometheus.invalid:9090', 'count': 1, 'interval': 0,
                        'window': 30, 'step': 1, 'comparisons': [comparison]}, ['c:1'], ['b:1'],
                       sleep=lambda s: None)


def test_a_critical_comparison_with_27_of_30_canary_samples_missing_fails_the_gate(monkeypatch):
    _ranges(monkeypatch, [0.2, 0.21, 0.19] + [float('nan')] * 27, [0.2 + i * 0.001 for i in range(30)])
    gate = _comparison_gate()
    metric = gate['analyses'][0]['metrics'][0]
    assert gate['verdict'] == 'fail' and metric['status'] == 'fail', metric
    assert metric['canary']['dropped'] == 27 and metric['thresholds']['min_valid_share'] == 0.5
    assert '27 of 30 canary samples missing' in metric['reason'] and 'no_data=fail' in metric['reason']
    assert 'latency' in gate['reason']
    # the option reaches the analysis: an operator who accepts a tenth of the samples gets them judged
    assert _comparison_gate(min_valid_share=0.1)['verdict'] == 'pass'


@pytest.mark.parametrize('share', [-0.1, 1.5])
def test_a_valid_share_out_of_range_is_refused_before_any_query(monkeypatch, share):
    def query_range(self, *args):
        raise AssertionError('queried')
    monkeypatch.setattr(mg.Prometheus, 'query_range', query_range)
    with pytest.raises(mg.GateError, match='min_valid_share'):
        _comparison_gate(min_valid_share=share)


def test_the_documented_comparison_options_are_the_argument_spec():
    import yaml
    from ansible_collections.failsafe.deploy.plugins.modules import metric_gate
    documented = yaml.safe_load(metric_gate.DOCUMENTATION)['options']['comparisons']['suboptions']
    assert sorted(documented) == sorted(metric_gate.COMPARISON_SPEC)
    for name, spec in metric_gate.COMPARISON_SPEC.items():
        assert documented[name].get('default') == spec.get('default'), name
        assert documented[name]['type'] == spec['type'], name
