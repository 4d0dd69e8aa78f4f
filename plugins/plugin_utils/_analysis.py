# -*- coding: utf-8 -*-
# Private to this collection: not a public API.
# Copyright: Contributors to failsafe.deploy
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Metric analysis for the canary gates (controller side, standard library only).

Two analyses, each returning a plain dict that says what decided it:

``threshold_analysis()``: absolute thresholds on a series of measurements (one per interval, ``count`` of them):
each measurement outside ``[min, max]`` is a failure; more than ``failure_limit`` failures fail the gate. A
measurement without data (no series, an empty result, NaN or infinity) is handled by the explicit ``no_data``
policy: ``fail`` counts it as a failure, ``pause`` makes the result inconclusive (marginal: a person decides),
``ignore`` drops it from the count, and when nothing is left the result is inconclusive too. Missing data is never
a silent pass.

``canary_analysis()``: canary against baseline in the manner of Kayenta. Per metric, a Mann-Whitney U test (the
same statistic and p-value as ``scipy.stats.mannwhitneyu``: exact distribution for small samples without ties,
normal approximation with tie and continuity correction otherwise), the Hodges-Lehmann estimate of the shift
(median of all canary-minus-baseline differences) relative to the baseline's median, and the probability of
superiority ``A = U / (n_canary * n_baseline)``. A metric regresses when its shift goes beyond ``tolerance`` in its
bad ``direction`` (increase, decrease, either) and either the test is significant at ``confidence``, or the canary
dominates the baseline (``A >= dominance``), or most canary values lie beyond the baseline's whole range widened by
the tolerance (a gross regression). The last rule is what fails a canary 100 times worse than the baseline on 7 of
10 samples, which Kayenta's classifier let pass: with 10 samples a side that gives p = 0.07 and A = 0.7, so
significance alone (which depends on sample counts) misses it; the size of the shift does not. Metrics are
weighted; a failed ``critical`` metric fails the analysis; otherwise the score (percentage of the weight that
passed) decides pass / marginal / fail against ``pass_score`` and ``marginal_score``.

The shift is relative to the baseline's median ``m``, except for the fall of a share (every value of both samples
between 0 and 1, such as a success rate): there it is relative to ``sqrt(m * (1 - m))`` when that is smaller than
``m``. Near 1 what a share can lose is its distance to 1, not its value: a success rate falling from 0.99 to 0.80
loses 19 % of its value but multiplies the failures by twenty; against ``sqrt(0.99 * 0.01) = 0.0995`` the fall is
191 % and fails at the default tolerance, while 0.99 to 0.985 (5 %) stays within it. The reason of every metric
says which way is bad for it.

Missing samples (None, NaN, infinity) are dropped before the comparison; a side with fewer than ``min_samples``
values, or whose valid values are less than ``min_valid_share`` of its samples, is no data, and the ``no_data``
policy decides: 3 valid samples out of 30 are not a measurement of the canary.

The statistics are implemented here rather than taken from scipy: scipy and numpy weigh about 100 MB installed,
too much to require on every controller and execution environment for one test. The unit tests cross-check every
result against ``scipy.stats.mannwhitneyu``.
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import math

from ansible_collections.failsafe.deploy.plugins.plugin_utils._errors import ControllerSideError

NO_DATA_POLICIES = ('fail', 'pause', 'ignore')
DIRECTIONS = ('increase', 'decrease', 'either')
PASS, MARGINAL, FAIL = 'pass', 'marginal', 'fail'
VERDICTS = (PASS, MARGINAL, FAIL)


class AnalysisError(ControllerSideError, ValueError):
    """Bad input to an analysis (a setting out of range, not a number)."""


# ---------------------------------------------------------------------------------------------------------------
# helpers

def as_number(value):
    """A float, or None for no data (None, '', NaN, +-Inf, a value that is not a number)."""
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    if math.isnan(number) or math.isinf(number):
        return None
    return number


def clean(values):
    """(the finite numbers of ``values``, how many were dropped as no data)."""
    kept = []
    dropped = 0
    for value in values or ():
        number = as_number(value)
        if number is None:
            dropped += 1
        else:
            kept.append(number)
    return kept, dropped


def median(values):
    ordered = sorted(values)
    n = len(ordered)
    if not n:
        return None
    mid = n // 2
    return ordered[mid] if n % 2 else (ordered[mid - 1] + ordered[mid]) / 2.0


def _check_policy(policy):
    if policy not in NO_DATA_POLICIES:
        raise AnalysisError('no_data must be one of %s, not %r' % (', '.join(NO_DATA_POLICIES), policy))


# ---------------------------------------------------------------------------------------------------------------
# Mann-Whitney U

def rankdata(values):
    """Average ranks (1-based) of ``values`` and the sizes of the groups of ties."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    ties = []
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        rank = (i + j) / 2.0 + 1
        for k in range(i, j + 1):
            ranks[order[k]] = rank
        ties.append(j - i + 1)
        i = j + 1
    return ranks, ties


def _exact_counts(n1, n2):
    """Number of arrangements of the two samples giving each value of U (0 .. n1*n2), without ties."""
    # counts[m][u] for samples of sizes m and n (n grows in the outer loop): f(u; m, n) = f(u - n; m-1, n) +
    # f(u; m, n-1), the classic recurrence.
    prev = [[1] for dummy in range(n1 + 1)]  # n = 0: U is 0 in one way for every m
    for n in range(1, n2 + 1):
        cur = [[1]]  # m = 0
        for m in range(1, n1 + 1):
            size = m * n + 1
            row = [0] * size
            a = cur[m - 1]   # f(.; m-1, n)
            b = prev[m]      # f(.; m, n-1)
            for u in range(size):
                total = 0
                if 0 <= u - n < len(a):
                    total += a[u - n]
                if u < len(b):
                    total += b[u]
                row[u] = total
            cur.append(row)
        prev = cur
    return prev[n1]


def _exact_sf(u, n1, n2):
    """P(U >= u) under the null hypothesis, exact."""
    counts = _exact_counts(n1, n2)
    total = float(sum(counts))
    start = int(math.ceil(u - 1e-9))
    return sum(counts[max(start, 0):]) / total


def _normal_sf(z):
    return 0.5 * math.erfc(z / math.sqrt(2.0))


def mann_whitney_u(x, y, alternative='two-sided', use_continuity=True, method='auto'):
    """(U of ``x``, p-value), as ``scipy.stats.mannwhitneyu(x, y, use_continuity, alternative, method)``.

    ``alternative``: 'two-sided', 'greater' (x tends to be larger) or 'less'. ``method``: 'auto' (exact when one
    sample has at most 8 values and there are no ties, as scipy chooses), 'exact' or 'asymptotic'.
    """
    n1, n2 = len(x), len(y)
    if not n1 or not n2:
        raise AnalysisError('Mann-Whitney U needs values on both sides (got %d and %d)' % (n1, n2))
    if alternative not in ('two-sided', 'greater', 'less'):
        raise AnalysisError('alternative must be two-sided, greater or less, not %r' % (alternative,))
    ranks, ties = rankdata(list(x) + list(y))
    r1 = sum(ranks[:n1])
    u1 = r1 - n1 * (n1 + 1) / 2.0
    u2 = n1 * n2 - u1
    if alternative == 'greater':
        u, factor = u1, 1
    elif alternative == 'less':
        u, factor = u2, 1
    else:
        u, factor = max(u1, u2), 2
    if method == 'auto':
        method = 'asymptotic' if (n1 > 8 and n2 > 8) or any(t > 1 for t in ties) else 'exact'
    if method == 'exact':
        p = _exact_sf(u, n1, n2)
    elif method == 'asymptotic':
        n = n1 + n2
        tie_term = sum(t ** 3 - t for t in ties)
        variance = n1 * n2 / 12.0 * ((n + 1) - tie_term / float(n * (n - 1)))
        numerator = u - n1 * n2 / 2.0 - (0.5 if use_continuity else 0.0)
        if variance <= 0:
            # every value equal: no evidence either way
            p = 1.0
        else:
            p = _normal_sf(numerator / math.sqrt(variance))
    else:
        raise AnalysisError('method must be auto, exact or asymptotic, not %r' % (method,))
    return u1, min(max(p * factor, 0.0), 1.0)


def hodges_lehmann(canary, baseline):
    """Median of every canary-minus-baseline difference: a robust estimate of the shift."""
    return median([c - b for c in canary for b in baseline])


# ---------------------------------------------------------------------------------------------------------------
# absolute thresholds

def threshold_analysis(name, measurements, minimum=None, maximum=None, failure_limit=0, no_data='fail',
                       query=None):
    """Judge ``measurements`` (one value per interval; None or NaN = no data) against ``[minimum, maximum]``.

    Returns a dict: name, query, thresholds, values, failures, no_data (count), policy, verdict and reason.
    """
    _check_policy(no_data)
    if minimum is None and maximum is None:
        raise AnalysisError('metric %r: give a min, a max or both' % name)
    if failure_limit is None or int(failure_limit) < 0:
        raise AnalysisError('metric %r: failure_limit must be 0 or more' % name)
    failure_limit = int(failure_limit)
    values = [as_number(v) for v in measurements or ()]
    missing = sum(1 for v in values if v is None)
    breaches = [v for v in values if v is not None and _outside(v, minimum, maximum)]
    failures = len(breaches) + (missing if no_data == 'fail' else 0)
    result = {
        'name': name, 'kind': 'threshold', 'query': query,
        'thresholds': {'min': minimum, 'max': maximum, 'failure_limit': failure_limit},
        'values': values, 'measurements': len(values), 'breaches': len(breaches), 'no_data': missing,
        'no_data_policy': no_data, 'failures': failures,
    }
    bounds = ' and '.join(part for part in (
        ('>= %s' % _fmt(minimum)) if minimum is not None else '',
        ('<= %s' % _fmt(maximum)) if maximum is not None else '') if part)
    if not values:
        verdict, reason = _no_data_verdict(no_data, 'no measurement at all')
    elif failures > failure_limit:
        verdict = FAIL
        reason = '%d of %d measurement(s) failed (limit %d): %d outside %s%s' % (
            failures, len(values), failure_limit, len(breaches), bounds,
            ', %d without data (no_data=fail)' % missing if missing and no_data == 'fail' else '')
    elif missing and no_data == 'pause':
        verdict = MARGINAL
        reason = ('%d of %d measurement(s) had no data (no_data=pause): inconclusive, a person decides'
                  % (missing, len(values)))
    elif missing == len(values):
        verdict, reason = _no_data_verdict(no_data, 'every measurement had no data')
    else:
        verdict = PASS
        reason = '%d of %d measurement(s) within %s (limit %d failures)%s' % (
            len(values) - missing - len(breaches), len(values), bounds, failure_limit,
            '; %d without data ignored (no_data=ignore)' % missing if missing else '')
    result['verdict'] = verdict
    result['reason'] = reason
    return result


def _outside(value, minimum, maximum):
    too_low = minimum is not None and value < minimum
    too_high = maximum is not None and value > maximum
    return too_low or too_high


def _no_data_verdict(policy, what):
    if policy == 'fail':
        return FAIL, '%s (no_data=fail)' % what
    if policy == 'pause':
        return MARGINAL, '%s (no_data=pause): inconclusive, a person decides' % what
    return MARGINAL, '%s: nothing left to judge once ignored (no_data=ignore), inconclusive, a person decides' % what


def _fmt(value):
    if value is None:
        return '-'
    if isinstance(value, float) and value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return '%.6g' % value if isinstance(value, float) else str(value)


# ---------------------------------------------------------------------------------------------------------------
# canary versus baseline

BAD_WAYS = {'increase': 'a rise is bad', 'decrease': 'a fall is bad', 'either': 'a change either way is bad'}


def _side(values, dropped):
    total = len(values) + dropped
    return {'n': len(values), 'dropped': dropped, 'total': total,
            'valid_share': len(values) / float(total) if total else 0.0, 'median': median(values)}


def _scale(c, b, base_median, shift):
    """What the shift is relative to: (value, basis). The baseline's median, or for the fall of a share near 1
    ``sqrt(m * (1 - m))``, the smaller of the two (see the module's doc)."""
    scale = abs(base_median or 0.0)
    if shift < 0 and all(0.0 <= v <= 1.0 for v in c + b):
        room = math.sqrt(base_median * (1.0 - base_median))
        if room < scale:
            return room, 'share'
    return scale, 'median'


def compare_metric(name, canary, baseline, direction='increase', tolerance=0.25, confidence=0.98, dominance=0.75,
                   critical=False, weight=1.0, no_data='fail', min_samples=1, min_valid_share=0.5,
                   canary_query=None, baseline_query=None):
    """Classify one metric of the canary against the baseline. Returns a dict with the statistics and
    ``status``: pass, fail (a regression in the bad direction), no_data (then ``policy`` says what it means)."""
    _check_policy(no_data)
    if direction not in DIRECTIONS:
        raise AnalysisError('metric %r: direction must be one of %s, not %r'
                            % (name, ', '.join(DIRECTIONS), direction))
    if not 0 < confidence < 1:
        raise AnalysisError('metric %r: confidence must be between 0 and 1, not %r' % (name, confidence))
    if tolerance is None or tolerance < 0:
        raise AnalysisError('metric %r: tolerance must be 0 or more' % name)
    if not 0.5 < dominance <= 1:
        raise AnalysisError('metric %r: dominance must be above 0.5 and at most 1, not %r' % (name, dominance))
    if weight is None or weight < 0:
        raise AnalysisError('metric %r: weight must be 0 or more' % name)
    if min_valid_share is None or not 0 <= min_valid_share <= 1:
        raise AnalysisError('metric %r: min_valid_share must be between 0 and 1, not %r' % (name, min_valid_share))
    c, c_dropped = clean(canary)
    b, b_dropped = clean(baseline)
    way = BAD_WAYS[direction]
    out = {
        'name': name, 'kind': 'comparison', 'direction': direction, 'bad': way, 'critical': bool(critical),
        'weight': weight, 'no_data_policy': no_data,
        'canary_query': canary_query, 'baseline_query': baseline_query,
        'thresholds': {'tolerance': tolerance, 'confidence': confidence, 'dominance': dominance,
                       'min_samples': min_samples, 'min_valid_share': min_valid_share},
        'canary': _side(c, c_dropped),
        'baseline': _side(b, b_dropped),
    }
    if len(c) < max(min_samples, 1) or len(b) < max(min_samples, 1):
        out['status'] = 'no_data'
        out['reason'] = 'not enough data: %d canary and %d baseline value(s) (at least %d each needed; %d and %d ' \
                        'dropped as NaN or missing)' % (len(c), len(b), max(min_samples, 1), c_dropped, b_dropped)
        return out
    sparse = ['%d of %d %s samples missing (%.0f%% valid)'
              % (side['dropped'], side['total'], label, 100 * side['valid_share'])
              for label, side in (('canary', out['canary']), ('baseline', out['baseline']))
              if side['valid_share'] < min_valid_share]
    if sparse:
        out['status'] = 'no_data'
        out['reason'] = 'too much data missing: %s; at least %.0f%% of the samples of each side must be valid ' \
                        '(min_valid_share %s)' % (' and '.join(sparse), 100 * min_valid_share, _fmt(min_valid_share))
        return out
    alternative = {'increase': 'greater', 'decrease': 'less', 'either': 'two-sided'}[direction]
    u, p = mann_whitney_u(c, b, alternative=alternative)
    a = u / float(len(c) * len(b))
    shift = hodges_lehmann(c, b)
    scale, basis = _scale(c, b, out['baseline']['median'], shift)
    if scale > 0:
        relative = shift / scale
    else:
        # a baseline at zero (or a share at 1 that falls): any shift of the canary is infinitely large in relative
        # terms; no shift is 0
        relative = 0.0 if shift == 0 else math.copysign(float('inf'), shift)
    bad_shift = {'increase': relative > tolerance, 'decrease': relative < -tolerance,
                 'either': abs(relative) > tolerance}[direction]
    dominates = {'increase': a >= dominance, 'decrease': (1 - a) >= dominance,
                 'either': max(a, 1 - a) >= dominance}[direction]
    # Canary values beyond everything the baseline showed, widened by the tolerance: a majority of them is a gross
    # regression whatever the test says (7 of 10 samples at 100x gives p = 0.07 with 10 a side).
    margin = tolerance * scale
    above = sum(1 for v in c if v > max(b) + margin)
    below = sum(1 for v in c if v < min(b) - margin)
    beyond = {'increase': above, 'decrease': below, 'either': max(above, below)}[direction]
    beyond_share = beyond / float(len(c))
    gross = beyond_share > 0.5
    significant = p < (1 - confidence)
    out.update({'u': u, 'p_value': p, 'superiority': a, 'shift': shift,
                'relative_shift': relative if not math.isinf(relative) else ('+inf' if relative > 0 else '-inf'),
                'scale': {'value': scale, 'basis': basis},
                'significant': significant, 'dominates': dominates, 'beyond_baseline': beyond_share,
                'gross': gross})
    moved = _moved(shift, relative, scale, basis, out['baseline']['median'])
    if bad_shift and (significant or dominates or gross):
        out['status'] = 'fail'
        out['reason'] = '%s for this metric: %s, beyond the tolerance %s: %s' % (
            way, moved, _pct(tolerance),
            ' and '.join(part for part in (
                'p=%.3g < %.3g' % (p, 1 - confidence) if significant else '',
                'canary worse on %.0f%% of pairs' % (100 * (a if shift > 0 else 1 - a)) if dominates else '',
                '%d of %d canary values beyond the whole baseline range' % (beyond, len(c)) if gross else '')
                if part))
    else:
        if bad_shift:
            judged = 'beyond the tolerance %s but not conclusive' % _pct(tolerance)
        elif (direction == 'increase' and shift < 0) or (direction == 'decrease' and shift > 0):
            judged = 'the good way'
        else:
            judged = 'within the tolerance %s' % _pct(tolerance)
        out['status'] = 'pass'
        out['reason'] = '%s for this metric: %s, %s (p=%.3g, superiority %.2f, %d of %d canary values beyond the ' \
                        'baseline range)' % (way, moved, judged, p, a, beyond, len(c))
    return out


def _moved(shift, relative, scale, basis, base_median):
    """'canary below the baseline by 191% of 0.0995 (...)': which way the canary moved, by how much of what."""
    if not shift:
        return 'canary level with the baseline (median %.4g)' % base_median
    if basis == 'share':
        what = 'sqrt(m*(1-m)) of the share at the baseline median m=%.4g' % base_median
        of = '%.3g, %s' % (scale, what)
    else:
        what = 'the baseline median'
        of = 'the baseline median %.4g' % base_median
    if math.isinf(relative):
        size = 'an infinite factor (%s is 0)' % what
    else:
        size = '%.1f%% of %s' % (100 * abs(relative), of)
    return 'canary %s the baseline by %s' % ('above' if shift > 0 else 'below', size)


def _pct(value):
    return '%.1f%%' % (100 * value)


def canary_analysis(metrics, pass_score=95.0, marginal_score=75.0):
    """Score a list of ``compare_metric`` results. Returns {verdict, score, reason, metrics}.

    A failed critical metric fails the analysis. Metrics without data: ``no_data=fail`` counts them as failed
    (critical ones fail the analysis), ``pause`` makes a passing result marginal, ``ignore`` leaves them out of
    the score. No metric left to score is inconclusive (marginal), never a pass.
    """
    if not 0 <= marginal_score <= pass_score <= 100:
        raise AnalysisError('scores must satisfy 0 <= marginal_score <= pass_score <= 100 (got %r and %r)'
                            % (marginal_score, pass_score))
    scored_weight = 0.0
    passed_weight = 0.0
    critical_failed = []
    paused = []
    ignored = []
    for metric in metrics:
        status = metric['status']
        if status == 'no_data':
            policy = metric['no_data_policy']
            if policy == 'ignore':
                ignored.append(metric['name'])
                continue
            if policy == 'pause':
                paused.append(metric['name'])
                continue
            status = 'fail'  # no_data=fail
            metric['status'] = 'fail'
            metric['reason'] += ' (no_data=fail)'
        scored_weight += metric['weight']
        if status == 'pass':
            passed_weight += metric['weight']
        elif metric['critical']:
            critical_failed.append(metric['name'])
    score = 100.0 * passed_weight / scored_weight if scored_weight else None
    failed = [m['name'] for m in metrics if m['status'] == 'fail']
    if critical_failed:
        verdict = FAIL
        reason = 'critical metric(s) failed: %s' % ', '.join(critical_failed)
    elif score is None:
        verdict = MARGINAL
        reason = 'no metric had data to score (%s): inconclusive, a person decides' % (
            ', '.join('%s without data, no_data=%s' % (n, 'pause' if n in paused else 'ignore')
                      for n in paused + ignored) or 'no metric given')
    elif score < marginal_score:
        verdict = FAIL
        reason = 'score %.1f below the marginal score %.1f; failed: %s' % (score, marginal_score, ', '.join(failed))
    elif score < pass_score:
        verdict = MARGINAL
        reason = 'score %.1f between the marginal score %.1f and the pass score %.1f; failed: %s' % (
            score, marginal_score, pass_score, ', '.join(failed))
    elif paused:
        verdict = MARGINAL
        reason = 'score %.1f, but %s had no data (no_data=pause): inconclusive, a person decides' % (
            score, ', '.join(paused))
    else:
        verdict = PASS
        reason = 'score %.1f at or above the pass score %.1f%s' % (
            score, pass_score, '; no data, ignored: %s' % ', '.join(ignored) if ignored else '')
    return {'kind': 'canary', 'verdict': verdict, 'score': score, 'reason': reason,
            'thresholds': {'pass_score': pass_score, 'marginal_score': marginal_score},
            'metrics': metrics}


def combine(results):
    """One verdict for several analyses: any fail fails, else any marginal is marginal, else pass."""
    verdicts = [r['verdict'] for r in results]
    if FAIL in verdicts:
        return FAIL
    if MARGINAL in verdicts or not verdicts:
        return MARGINAL
    return PASS
