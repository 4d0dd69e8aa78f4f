# -*- coding: utf-8 -*-
# Copyright: Contributors to failsafe.deploy
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The metric analysis with known distributions, cross-checked against scipy.stats.mannwhitneyu (the reference
implementation: a test dependency only)."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import random

import pytest

from ansible_collections.failsafe.deploy.plugins.plugin_utils import _analysis as an
from ansible_collections.failsafe.deploy.tests.requires import require_module

try:
    # Imported once, when the module is collected: ansible-test units runs every test in a forked process, and an
    # import made inside a test (about a second of CPU for scipy.stats) would be made again by each of them.
    import scipy.stats  # noqa: F401  pylint: disable=unused-import
except ImportError:
    pass   # the fixture below ends the cross-checks with the reason


@pytest.fixture
def stats():
    """scipy.stats, the reference implementation (requirements-dev.txt, tests/unit/requirements.txt); only the
    cross-checks need it."""
    return require_module('scipy.stats', 'scipy is missing: the reference Mann-Whitney U the analysis is checked against')


def _rng(seed):
    return random.Random(seed)


def _normal(seed, n, mu, sigma):
    rng = _rng(seed)
    return [rng.gauss(mu, sigma) for dummy in range(n)]


# The case Kayenta let pass (kayenta#780): the canary 100 times the baseline on 7 of 10 samples.
SEVEN_BASE = _normal(51, 10, 1.0, 0.05)
SEVEN_CANARY = [100.0 * v for v in _normal(52, 7, 1.0, 0.05)] + _normal(53, 3, 1.0, 0.05)

# ---------------------------------------------------------------------------------------------------------------
# Mann-Whitney U agrees with scipy

CASES = [
    ('identical small', [1.0, 2.0, 3.0, 4.0], [1.5, 2.5, 3.5, 4.5]),
    ('shifted small exact', [10.0, 11.0, 12.0, 13.0, 14.0], [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]),
    ('ties small', [1.0, 1.0, 2.0, 3.0], [1.0, 2.0, 2.0, 5.0]),
    ('all equal', [2.0] * 6, [2.0] * 6),
    ('large normal', _normal(1, 40, 100, 10), _normal(2, 35, 100, 10)),
    ('large shifted', _normal(3, 30, 110, 10), _normal(4, 30, 100, 10)),
    ('seven of ten', SEVEN_CANARY, SEVEN_BASE),
    ('one vs many', [5.0], _normal(8, 20, 4, 1)),
    ('integers with ties', [0, 0, 1, 1, 2, 3, 3, 3, 4, 9], [0, 1, 1, 1, 2, 2, 2, 3, 3, 3, 4]),
]


@pytest.mark.parametrize('alternative', ['two-sided', 'greater', 'less'])
@pytest.mark.parametrize('case', CASES, ids=[c[0] for c in CASES])
def test_mann_whitney_matches_scipy(case, alternative, stats):
    dummy, x, y = case
    u, p = an.mann_whitney_u(x, y, alternative=alternative)
    ref = stats.mannwhitneyu(x, y, alternative=alternative)
    assert u == pytest.approx(float(ref.statistic), abs=1e-9)
    assert p == pytest.approx(float(ref.pvalue), rel=1e-9, abs=1e-12)


@pytest.mark.parametrize('method', ['exact', 'asymptotic'])
def test_methods_match_scipy(method, stats):
    x, y = _normal(11, 7, 3, 1), _normal(12, 8, 4, 1)
    for alternative in ('two-sided', 'greater', 'less'):
        u, p = an.mann_whitney_u(x, y, alternative=alternative, method=method)
        ref = stats.mannwhitneyu(x, y, alternative=alternative, method=method)
        assert (u, p) == (pytest.approx(float(ref.statistic)), pytest.approx(float(ref.pvalue), rel=1e-9))


def test_random_cases_match_scipy(stats):
    rng = _rng(42)
    for dummy in range(60):
        n1, n2 = rng.randint(1, 15), rng.randint(1, 15)
        x = [float(rng.randint(0, 12)) for dummy in range(n1)]
        y = [float(rng.randint(0, 12)) for dummy in range(n2)]
        u, p = an.mann_whitney_u(x, y)
        ref = stats.mannwhitneyu(x, y)
        assert u == pytest.approx(float(ref.statistic))
        assert p == pytest.approx(float(ref.pvalue), rel=1e-9, abs=1e-12)


def test_mann_whitney_rejects_empty():
    with pytest.raises(an.AnalysisError, match='both sides'):
        an.mann_whitney_u([], [1.0])


# ---------------------------------------------------------------------------------------------------------------
# canary against baseline

def test_identical_distributions_pass():
    base = _normal(21, 30, 0.2, 0.02)
    canary = _normal(22, 30, 0.2, 0.02)
    metric = an.compare_metric('latency', canary, base, direction='increase')
    assert metric['status'] == 'pass', metric
    result = an.canary_analysis([metric])
    assert result['verdict'] == an.PASS
    assert result['score'] == 100.0


def test_shifted_distribution_fails_in_its_bad_direction_only():
    base = _normal(31, 30, 0.2, 0.02)
    slow = _normal(32, 30, 0.4, 0.02)
    metric = an.compare_metric('latency', slow, base, direction='increase')
    assert metric['status'] == 'fail'
    assert metric['significant'] and metric['relative_shift'] > 0.25
    assert an.canary_analysis([metric])['verdict'] == an.FAIL
    # the same shift is an improvement for a metric where only a decrease is bad
    better = an.compare_metric('throughput', slow, base, direction='decrease')
    assert better['status'] == 'pass'
    assert an.compare_metric('either', slow, base, direction='either')['status'] == 'fail'
    assert an.compare_metric('either', base, slow, direction='either')['status'] == 'fail'


def test_small_shift_within_tolerance_passes_even_when_significant():
    base = _normal(41, 40, 100, 1)
    canary = [v + 5 for v in _normal(42, 40, 100, 1)]  # +5%, clearly significant, within 25%
    metric = an.compare_metric('latency', canary, base)
    assert metric['significant']
    assert metric['status'] == 'pass'


def test_seven_of_ten_samples_a_hundred_times_worse_fails():
    """The case Kayenta let pass (kayenta#780): the canary is 100x the baseline on 7 of 10 samples."""
    metric = an.compare_metric('error_rate', SEVEN_CANARY, SEVEN_BASE, direction='increase', critical=True)
    assert metric['status'] == 'fail', metric
    # the rank test alone misses it, as Kayenta's did: the 3 ordinary samples fall below the baseline here
    assert not metric['significant'] and not metric['dominates']
    assert metric['gross'] and metric['beyond_baseline'] == 0.7
    assert metric['p_value'] > 0.02  # the same as scipy's: see CASES, 'seven of ten'
    assert an.canary_analysis([metric])['verdict'] == an.FAIL


def test_few_samples_dominance_fails_without_significance():
    """Three samples a side cannot reach 98% confidence (the smallest two-sided p is 0.1); a canary worse on
    every pair by far still fails through the dominance rule."""
    metric = an.compare_metric('errors', [50.0, 60.0, 70.0], [1.0, 1.1, 0.9], direction='either')
    assert not metric['significant']
    assert metric['dominates']
    assert metric['status'] == 'fail'


def test_sparse_errors_against_a_clean_baseline_fail():
    """Errors on most canary samples where the baseline had none (Kayenta passed sparse error counts, #426)."""
    metric = an.compare_metric('errors', [0, 3, 2, 4, 0, 5, 1, 2], [0] * 8, direction='increase')
    assert metric['status'] == 'fail', metric
    assert an.compare_metric('errors', [0] * 8, [0] * 8)['status'] == 'pass'


# ---------------------------------------------------------------------------------------------------------------
# a metric where a fall is bad (direction=decrease): each rule decides on its own

def _share(seed, n, mu, sigma):
    """A success rate: normal around ``mu``, never above 1."""
    return [min(v, 1.0) for v in _normal(seed, n, mu, sigma)]


SUCCESS_BASE = _share(91, 30, 0.99, 0.002)
FEW_BASE, FEW_CANARY = [100.0, 60.0, 140.0], [70.0, 50.0, 65.0]


def test_a_success_rate_falling_from_99_to_80_percent_fails_at_the_default_tolerance():
    canary = _share(92, 30, 0.80, 0.01)
    metric = an.compare_metric('success_rate', canary, SUCCESS_BASE, direction='decrease', critical=True)
    assert metric['status'] == 'fail', metric
    # 19 % of its value, but twenty times the failures: a share near 1 is measured against the room it has
    assert metric['scale']['basis'] == 'share'
    assert metric['scale']['value'] == pytest.approx((0.99 * 0.01) ** 0.5, rel=0.1)
    assert metric['relative_shift'] < -1.5
    assert 'a fall is bad' in metric['reason'] and 'below the baseline' in metric['reason']
    assert an.canary_analysis([metric])['verdict'] == an.FAIL
    # the same fall is no regression where only a rise is bad
    assert an.compare_metric('errors', canary, SUCCESS_BASE, direction='increase')['status'] == 'pass'


def test_a_success_rate_moving_by_noise_passes_even_when_significant():
    canary = _share(93, 30, 0.985, 0.002)
    metric = an.compare_metric('success_rate', canary, SUCCESS_BASE, direction='decrease')
    # the fall is real (every test sees it) but small: the tolerance is what lets it pass
    assert metric['significant'] and metric['dominates']
    assert -0.25 < metric['relative_shift'] < 0
    assert metric['status'] == 'pass', metric
    assert 'a fall is bad' in metric['reason'] and 'within the tolerance' in metric['reason']


def test_a_fall_that_only_dominance_shows_fails():
    """Three samples a side: not significant (p = 0.2), every canary value inside the baseline's range, yet the
    canary is lower on 7 of 9 pairs and 35 % below the baseline."""
    metric = an.compare_metric('throughput', FEW_CANARY, FEW_BASE, direction='decrease')
    assert not metric['significant'] and not metric['gross']
    assert metric['dominates'] and metric['superiority'] == pytest.approx(2 / 9.0)
    assert metric['status'] == 'fail', metric
    assert 'worse on 78% of pairs' in metric['reason']
    # a stricter dominance lets the same samples pass: the dominance rule is what failed them
    stricter = an.compare_metric('throughput', FEW_CANARY, FEW_BASE, direction='decrease', dominance=0.8)
    assert stricter['status'] == 'pass'


def test_a_fall_that_only_the_gross_regression_rule_shows_fails():
    """Kayenta's case upside down: 7 of 10 canary samples 100 times lower, the 3 others above the whole baseline,
    so that p = 0.07 and the canary is lower on only 70 % of pairs."""
    base = _normal(94, 10, 100, 5)
    canary = [v / 100 for v in _normal(95, 7, 100, 5)] + [max(base) + 1, max(base) + 2, max(base) + 3]
    metric = an.compare_metric('throughput', canary, base, direction='decrease')
    assert not metric['significant'] and not metric['dominates']
    assert metric['gross'] and metric['beyond_baseline'] == 0.7
    assert metric['status'] == 'fail', metric
    assert '7 of 10 canary values beyond the whole baseline range' in metric['reason']


@pytest.mark.parametrize('direction,words', [('increase', 'a rise is bad'), ('decrease', 'a fall is bad'),
                                             ('either', 'a change either way is bad')])
def test_the_reason_says_which_way_is_bad(direction, words):
    base = _normal(98, 20, 100, 1)
    for canary in (_normal(99, 20, 100, 1), [v * 2 for v in base], [v / 2 for v in base]):
        metric = an.compare_metric('m', canary, base, direction=direction)
        assert metric['reason'].startswith(words + ' for this metric: '), metric['reason']


def test_all_nan_is_never_a_pass():
    nan = float('nan')
    for policy, verdict in (('fail', an.FAIL), ('pause', an.MARGINAL), ('ignore', an.MARGINAL)):
        metric = an.compare_metric('errors', [nan] * 5, [nan] * 5, no_data=policy)
        assert metric['status'] == 'no_data'
        assert metric['canary']['dropped'] == 5
        result = an.canary_analysis([metric])
        assert result['verdict'] == verdict, (policy, result)


def test_empty_samples_are_never_a_pass():
    for policy in an.NO_DATA_POLICIES:
        result = an.canary_analysis([an.compare_metric('errors', [], [1.0, 2.0], no_data=policy)])
        assert result['verdict'] != an.PASS
    assert an.canary_analysis([])['verdict'] == an.MARGINAL


def test_nan_values_are_dropped_not_compared():
    base = _normal(61, 20, 0.2, 0.01)
    canary = _normal(62, 20, 0.2, 0.01) + [float('nan'), None, float('inf')]
    metric = an.compare_metric('latency', canary, base)
    assert metric['canary'] == {'n': 20, 'dropped': 3, 'total': 23, 'valid_share': 20 / 23.0,
                                'median': an.median(canary[:20])}
    assert metric['status'] == 'pass'


def test_a_critical_metric_with_most_samples_missing_is_no_data_not_a_pass():
    """27 of 30 canary samples NaN: 3 values are enough for min_samples=3, not to judge the canary."""
    nan = float('nan')
    base = _normal(63, 30, 0.2, 0.01)
    canary = _normal(64, 3, 0.2, 0.01) + [nan] * 27
    metric = an.compare_metric('latency', canary, base, critical=True, min_samples=3)
    assert metric['status'] == 'no_data', metric
    assert metric['canary']['dropped'] == 27 and metric['canary']['total'] == 30
    assert '27 of 30 canary samples missing' in metric['reason'] and 'at least 50%' in metric['reason']
    result = an.canary_analysis([metric])
    assert result['verdict'] == an.FAIL and 'latency' in result['reason']
    paused = an.compare_metric('latency', canary, base, critical=True, min_samples=3, no_data='pause')
    assert an.canary_analysis([paused])['verdict'] == an.MARGINAL
    # the baseline is held to the same share
    assert an.compare_metric('latency', base, canary, min_samples=3)['status'] == 'no_data'
    # half of the samples valid is enough by default; a lower share is the operator's choice
    half = _normal(64, 15, 0.2, 0.01) + [nan] * 15
    assert an.compare_metric('latency', half, base, critical=True, min_samples=3)['status'] == 'pass'
    relaxed = an.compare_metric('latency', canary, base, critical=True, min_samples=3, min_valid_share=0.1)
    assert relaxed['status'] == 'pass'


def test_weighted_score_pass_marginal_fail():
    base = _normal(71, 20, 1.0, 0.05)
    same = _normal(72, 20, 1.0, 0.05)
    worse = [v * 3 for v in _normal(73, 20, 1.0, 0.05)]
    good = an.compare_metric('a', same, base, weight=8)
    bad = an.compare_metric('b', worse, base, weight=2)
    assert an.canary_analysis([good, bad])['verdict'] == an.MARGINAL  # 80
    assert an.canary_analysis([good, bad])['score'] == pytest.approx(80.0)
    bad_heavy = an.compare_metric('b', worse, base, weight=8)
    small_good = an.compare_metric('a', same, base, weight=2)
    assert an.canary_analysis([small_good, bad_heavy])['verdict'] == an.FAIL  # 20
    critical = an.compare_metric('b', worse, base, weight=1, critical=True)
    heavy_good = an.compare_metric('a', same, base, weight=99)
    assert an.canary_analysis([heavy_good, critical])['verdict'] == an.FAIL  # 99 but critical


def test_pause_policy_makes_a_passing_result_marginal():
    base = _normal(81, 20, 1.0, 0.05)
    same = _normal(82, 20, 1.0, 0.05)
    result = an.canary_analysis([an.compare_metric('a', same, base),
                                 an.compare_metric('b', [], [], no_data='pause')])
    assert result['verdict'] == an.MARGINAL
    assert 'no_data=pause' in result['reason']
    ignored = an.canary_analysis([an.compare_metric('a', same, base),
                                  an.compare_metric('b', [], [], no_data='ignore')])
    assert ignored['verdict'] == an.PASS and 'ignored: b' in ignored['reason']


@pytest.mark.parametrize('kwargs', [dict(direction='up'), dict(confidence=1.5), dict(tolerance=-1),
                                    dict(dominance=0.4), dict(no_data='skip'), dict(weight=-1),
                                    dict(min_valid_share=1.5), dict(min_valid_share=-0.1)])
def test_bad_settings_are_clear_errors(kwargs):
    with pytest.raises(an.AnalysisError):
        an.compare_metric('m', [1.0], [1.0], **kwargs)


# ---------------------------------------------------------------------------------------------------------------
# absolute thresholds

def test_threshold_pass_and_failure_limit():
    ok = an.threshold_analysis('error_rate', [0.0, 0.01, 0.02], maximum=0.05)
    assert ok['verdict'] == an.PASS and ok['failures'] == 0
    one = an.threshold_analysis('error_rate', [0.0, 0.5, 0.02], maximum=0.05, failure_limit=1)
    assert one['verdict'] == an.PASS and one['breaches'] == 1
    two = an.threshold_analysis('error_rate', [0.9, 0.5, 0.02], maximum=0.05, failure_limit=1)
    assert two['verdict'] == an.FAIL and '2 of 3' in two['reason']
    low = an.threshold_analysis('rps', [5, 0.1], minimum=1)
    assert low['verdict'] == an.FAIL


@pytest.mark.parametrize('policy,verdict', [('fail', an.FAIL), ('pause', an.MARGINAL), ('ignore', an.MARGINAL)])
def test_threshold_all_nan_is_never_a_pass(policy, verdict):
    nan = float('nan')
    result = an.threshold_analysis('error_rate', [nan, None, nan], maximum=0.05, no_data=policy)
    assert result['verdict'] == verdict
    assert result['no_data'] == 3
    assert 'no_data=%s' % policy in result['reason']


@pytest.mark.parametrize('policy', an.NO_DATA_POLICIES)
def test_threshold_empty_is_never_a_pass(policy):
    assert an.threshold_analysis('error_rate', [], maximum=0.05, no_data=policy)['verdict'] != an.PASS


def test_threshold_some_missing():
    values = [0.0, None, 0.01]
    assert an.threshold_analysis('e', values, maximum=0.05, no_data='fail')['verdict'] == an.FAIL
    assert an.threshold_analysis('e', values, maximum=0.05, no_data='fail', failure_limit=1)['verdict'] == an.PASS
    assert an.threshold_analysis('e', values, maximum=0.05, no_data='pause')['verdict'] == an.MARGINAL
    ignored = an.threshold_analysis('e', values, maximum=0.05, no_data='ignore')
    assert ignored['verdict'] == an.PASS and 'ignored' in ignored['reason']


def test_threshold_needs_a_bound():
    with pytest.raises(an.AnalysisError, match='min, a max'):
        an.threshold_analysis('e', [1.0])


def test_combine():
    assert an.combine([{'verdict': 'pass'}, {'verdict': 'marginal'}]) == 'marginal'
    assert an.combine([{'verdict': 'pass'}, {'verdict': 'fail'}, {'verdict': 'marginal'}]) == 'fail'
    assert an.combine([{'verdict': 'pass'}]) == 'pass'
    assert an.combine([]) == 'marginal'
