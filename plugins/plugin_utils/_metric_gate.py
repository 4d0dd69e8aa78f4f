# -*- coding: utf-8 -*-
# Private to this collection: not a public API.
# Copyright: Contributors to failsafe.deploy
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The metric gate on the controller: queries a Prometheus server over its HTTP API (``/api/v1/query`` and
``/api/v1/query_range``), feeds the answers to ``_analysis`` and returns one result that carries every query, every
value, every threshold and the verdict, so that the incident report can show what decided it.

A query that does not parse, a Prometheus that does not answer, an error answer: each becomes a measurement without
data that carries the error, and the gate's no-data policy decides (fail, pause or ignore); the reason says so.
Nothing of this is ever a silent pass.

Marginal results pause when ``on_marginal`` is ``pause``: the gate writes ``<decision_file>.paused`` and waits for a
person to write ``promote`` or ``abort`` into ``decision_file`` (``playbooks/canary_decision.yml`` does it). It never
proceeds by itself: without a decision it waits up to ``pause_timeout`` seconds (0: for ever) and then aborts.
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import json
import math
import os
import re
import time
from urllib.error import HTTPError, URLError
from urllib.parse import urlencode

from ansible.module_utils.urls import open_url

from ansible_collections.failsafe.deploy.plugins.plugin_utils import _analysis
from ansible_collections.failsafe.deploy.plugins.plugin_utils._errors import ControllerSideError

ON_MARGINAL = ('pause', 'fail')
DECISIONS = ('promote', 'abort')
PLACEHOLDERS = ('$canary', '$baseline')


class GateError(ControllerSideError, ValueError):
    """Bad gate settings: raised before any query."""


class PrometheusError(ControllerSideError):
    """Prometheus did not answer, or answered with an error (the text says which)."""


class Prometheus(object):
    def __init__(self, url, timeout=5.0, headers=None, validate_certs=True):
        if not re.match(r'^https?://', url or ''):
            raise GateError('prometheus_url must be an http:// or https:// URL, not %r' % (url,))
        self.url = url.rstrip('/')
        self.timeout = timeout
        self.headers = dict(headers or {})
        self.validate_certs = validate_certs

    def _get(self, path, params):
        url = '%s%s?%s' % (self.url, path, urlencode(params))
        try:
            answer = open_url(url, timeout=self.timeout, headers=self.headers, validate_certs=self.validate_certs)
            body = answer.read()
        except HTTPError as exc:
            body = exc.read() if hasattr(exc, 'read') else b''
            try:
                data = json.loads(body.decode('utf-8', 'replace'))
            except ValueError:
                raise PrometheusError('Prometheus at %s answered HTTP %s' % (self.url, exc.code))
            raise PrometheusError('Prometheus rejected the query (HTTP %s, %s): %s' % (
                exc.code, data.get('errorType'), data.get('error')))
        except (URLError, OSError, ValueError) as exc:
            reason = getattr(exc, 'reason', None) or exc
            raise PrometheusError('Prometheus at %s did not answer: %s' % (self.url, reason))
        try:
            data = json.loads(body.decode('utf-8', 'replace'))
        except ValueError:
            raise PrometheusError('Prometheus at %s answered something that is not JSON' % self.url)
        if data.get('status') != 'success':
            raise PrometheusError('Prometheus error (%s): %s' % (data.get('errorType'), data.get('error')))
        return data.get('data') or {}

    def query(self, promql, at=None):
        """[(labels, value)] of an instant query (a scalar gives one entry with no labels)."""
        params = {'query': promql}
        if at is not None:
            params['time'] = '%.3f' % at
        data = self._get('/api/v1/query', params)
        kind = data.get('resultType')
        result = data.get('result')
        if kind in ('scalar', 'string'):
            return [({}, _value(result[1]))]
        if kind == 'vector':
            return [(s.get('metric') or {}, _value(s['value'][1])) for s in result or ()]
        raise PrometheusError('unexpected result type %r for an instant query' % kind)

    def query_range(self, promql, start, end, step):
        """[(labels, [values])] of a range query."""
        data = self._get('/api/v1/query_range', {'query': promql, 'start': '%.3f' % start, 'end': '%.3f' % end,
                                                 'step': '%g' % step})
        if data.get('resultType') != 'matrix':
            raise PrometheusError('unexpected result type %r for a range query' % data.get('resultType'))
        return [(s.get('metric') or {}, [_value(v[1]) for v in s.get('values') or ()]) for s in data.get('result') or ()]


def _value(text):
    try:
        return float(text)
    except (TypeError, ValueError):
        return float('nan')


def _json_number(value):
    """A value for the result (JSON has no NaN): None for no data."""
    return _analysis.as_number(value)


def instance_regex(instances):
    """A PromQL regular expression (inside a double-quoted string) matching exactly these instance labels."""
    parts = []
    for instance in instances:
        escaped = re.sub(r'([.^$*+?()\[\]{}|\\])', r'\\\1', str(instance))
        parts.append(escaped.replace('\\', '\\\\'))
    return '|'.join(parts)


def expand(query, canary, baseline):
    """``$canary`` and ``$baseline`` in a query become regular expressions of those instances' labels."""
    return query.replace('$canary', instance_regex(canary)).replace('$baseline', instance_regex(baseline))


def _check_settings(params):
    thresholds = params.get('thresholds') or []
    comparisons = params.get('comparisons') or []
    if not thresholds and not comparisons:
        raise GateError('give at least one entry in thresholds or comparisons')
    if int(params.get('count') or 0) < 1:
        raise GateError('count must be 1 or more')
    if float(params.get('interval') or 0) < 0:
        raise GateError('interval must be 0 or more seconds')
    for entry in thresholds:
        for key in ('name', 'query'):
            if not entry.get(key):
                raise GateError('every threshold needs a %s (got %r)' % (key, entry))
        if entry.get('min') is None and entry.get('max') is None:
            raise GateError('threshold %s: give a min, a max or both' % entry['name'])
    for entry in comparisons:
        for key in ('name', 'canary_query', 'baseline_query'):
            if not entry.get(key):
                raise GateError('every comparison needs a %s (got %r)' % (key, entry))
        share = entry.get('min_valid_share')
        if share is not None and not 0 <= float(share) <= 1:
            raise GateError('comparison %s: min_valid_share must be between 0 and 1, not %r' % (entry['name'], share))
    names = [e['name'] for e in thresholds] + [e['name'] for e in comparisons]
    duplicates = sorted(set(n for n in names if names.count(n) > 1))
    if duplicates:
        raise GateError('metric names must be unique: %s' % ', '.join(duplicates))


def series_name(labels):
    """A series as PromQL writes it: ``{instance="web3:8080", job="app"}``."""
    return '{%s}' % ', '.join('%s="%s"' % (key, labels[key]) for key in sorted(labels or {}))


def judge_series(answer, minimum, maximum):
    """One measurement over the series of an instant query: (the value that judges it, the series outside the
    bounds as (name, bound, value)). The lowest series is judged against ``minimum`` and the highest against
    ``maximum``, so that no series hides another; the value is the one that breached (the lowest first), else the
    highest when a max is set, else the lowest. None when no series had data."""
    numbers = [(labels, v) for labels, v in ((labels, _analysis.as_number(value)) for labels, value in answer)
               if v is not None]
    if not numbers:
        return None, []
    low = min(numbers, key=lambda item: item[1])
    high = max(numbers, key=lambda item: item[1])
    breaches = [(series_name(labels), 'min', v) for labels, v in numbers if minimum is not None and v < minimum]
    breaches += [(series_name(labels), 'max', v) for labels, v in numbers if maximum is not None and v > maximum]
    if minimum is not None and low[1] < minimum:
        return low[1], breaches
    if maximum is not None and high[1] > maximum:
        return high[1], breaches
    return (high if maximum is not None else low)[1], breaches


def measure_threshold(prom, entry, canary, baseline, count, interval, sleep, clock, log):
    """``count`` instant queries, ``interval`` seconds apart: the value that judges each (see ``judge_series``),
    None when there was no data; errors are kept, and the series that breached a bound (name, bound, worst value,
    in how many measurements)."""
    query = expand(entry['query'], canary, baseline)
    values, errors, series, breached = [], [], [], {}
    for index in range(count):
        if index:
            sleep(interval)
        try:
            answer = prom.query(query)
        except PrometheusError as exc:
            values.append(None)
            errors.append(str(exc))
            log('%s: %s' % (entry['name'], exc))
            continue
        series.append(len(answer))
        value, breaches = judge_series(answer, entry.get('min'), entry.get('max'))
        values.append(value)
        for name, bound, number in breaches:
            seen = breached.setdefault((name, bound), {'series': name, 'bound': bound, 'worst': number,
                                                       'measurements': 0})
            seen['measurements'] += 1
            seen['worst'] = min(seen['worst'], number) if bound == 'min' else max(seen['worst'], number)
    return query, values, errors, series, list(breached.values())


def _breach_text(breaching, entry, limit=5):
    """'breached by {instance="web3:8080"} (0.3 below the min 0.5, 2 measurements)' for the reason."""
    parts = ['%s (%s %s the %s %s, %d measurement(s))' % (
        b['series'], '%g' % b['worst'], 'below' if b['bound'] == 'min' else 'above', b['bound'],
        '%g' % entry.get(b['bound']), b['measurements']) for b in breaching[:limit]]
    if len(breaching) > limit:
        parts.append('%d more series' % (len(breaching) - limit))
    return 'breached by %s' % ', '.join(parts)


def gather_range(prom, query, start, end, step):
    """Every sample of every series a range query returns, and the error if it failed."""
    try:
        answer = prom.query_range(query, start, end, step)
    except PrometheusError as exc:
        return [], str(exc)
    samples = []
    for dummy, values in answer:
        samples.extend(values)
    return samples, None


def run_gate(params, canary, baseline, sleep=time.sleep, clock=time.time, log=lambda msg: None):
    """Run the gate. ``params``: the module's options. ``canary``/``baseline``: instance labels. Returns the
    ``failsafe_metric_gate`` dict (verdict, reason, analyses with queries, values and thresholds)."""
    _check_settings(params)
    prom = Prometheus(params['prometheus_url'], timeout=float(params.get('timeout') or 5),
                      headers=params.get('headers'), validate_certs=params.get('validate_certs', True))
    count = int(params.get('count') or 1)
    interval = float(params.get('interval') or 0)
    default_policy = params.get('no_data') or 'fail'
    bake = float(params.get('bake') or 0)
    started = clock()
    if bake:
        log('baking for %g s before the first measurement' % bake)
        sleep(bake)
    analyses = []
    for entry in params.get('thresholds') or []:
        query, values, errors, series, breaching = measure_threshold(prom, entry, canary, baseline, count,
                                                                     interval, sleep, clock, log)
        policy = entry.get('no_data') or default_policy
        limit = entry.get('failure_limit')
        result = _analysis.threshold_analysis(
            entry['name'], values, minimum=entry.get('min'), maximum=entry.get('max'),
            failure_limit=(params.get('failure_limit') or 0) if limit is None else limit, no_data=policy, query=query)
        result['values'] = [_json_number(v) for v in result['values']]
        result['series'] = series
        result['breaching_series'] = breaching
        if breaching:
            result['reason'] += '; %s' % _breach_text(breaching, entry)
        if errors:
            result['errors'] = errors
            result['reason'] += '; query errors: %s' % errors[-1]
        analyses.append(result)
    comparisons = params.get('comparisons') or []
    if comparisons:
        if not baseline:
            analyses.append({'kind': 'canary', 'verdict': 'skipped', 'score': None, 'metrics': [],
                             'reason': 'no baseline instance left (the last wave): comparisons not run'})
        else:
            end = clock()
            window = float(params.get('window') or max(end - started, interval * max(count - 1, 1), 30))
            step = float(params.get('step') or max(window / 30.0, 1.0))
            metrics = []
            for entry in comparisons:
                c_query = expand(entry['canary_query'], canary, baseline)
                b_query = expand(entry['baseline_query'], canary, baseline)
                c_samples, c_error = gather_range(prom, c_query, end - window, end, step)
                b_samples, b_error = gather_range(prom, b_query, end - window, end, step)
                metric = _analysis.compare_metric(
                    entry['name'], c_samples, b_samples, direction=entry.get('direction') or 'increase',
                    tolerance=float(entry.get('tolerance', 0.25) if entry.get('tolerance') is not None else 0.25),
                    confidence=float(params.get('confidence') or 0.98),
                    dominance=float(params.get('dominance') or 0.75), critical=bool(entry.get('critical')),
                    weight=float(entry.get('weight') if entry.get('weight') is not None else 1),
                    no_data=entry.get('no_data') or default_policy, min_samples=int(entry.get('min_samples') or 1),
                    min_valid_share=float(0.5 if entry.get('min_valid_share') is None else entry['min_valid_share']),
                    canary_query=c_query, baseline_query=b_query)
                metric['canary']['values'] = [_json_number(v) for v in c_samples]
                metric['baseline']['values'] = [_json_number(v) for v in b_samples]
                metric['window'] = {'seconds': window, 'step': step}
                errors = [e for e in (c_error, b_error) if e]
                if errors:
                    metric['errors'] = errors
                    metric['reason'] += '; query errors: %s' % '; '.join(errors)
                for key in ('relative_shift',):
                    if isinstance(metric.get(key), float) and math.isinf(metric[key]):
                        metric[key] = str(metric[key])
                metrics.append(metric)
            analyses.append(_analysis.canary_analysis(
                metrics, pass_score=float(params.get('pass_score') or 95),
                marginal_score=float(params.get('marginal_score') or 75)))
    judged = [a for a in analyses if a['verdict'] != 'skipped']
    verdict = _analysis.combine(judged)
    reasons = ['%s: %s' % (a.get('name') or 'canary vs baseline', a['reason']) for a in analyses
               if a['verdict'] != _analysis.PASS]
    return {
        'verdict': verdict,
        'reason': '; '.join(reasons) if reasons else 'every analysis passed',
        'prometheus_url': prom.url,
        'canary_instances': list(canary),
        'baseline_instances': list(baseline),
        'settings': {'bake': bake, 'interval': interval, 'count': count,
                     'failure_limit': params.get('failure_limit') or 0, 'no_data': default_policy,
                     'on_marginal': params.get('on_marginal') or 'pause'},
        'analyses': analyses,
        'started_at': started,
        'duration': round(clock() - started, 3),
    }


def read_decision(path):
    try:
        with open(path, 'r') as handle:
            text = handle.read().strip().lower()
    except (IOError, OSError):
        return None
    return text if text in DECISIONS else None


def wait_for_decision(path, gate, timeout=0, poll=0.5, sleep=time.sleep, clock=time.monotonic, log=lambda m: None):
    """Write ``<path>.paused`` (what the gate saw) and wait for ``promote`` or ``abort`` in ``path``. Returns
    (decision, waited seconds); a timeout is an abort (a paused canary never proceeds by itself)."""
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        os.makedirs(directory, 0o700)
    stale = read_decision(path)
    if stale:
        # a decision left from an earlier pause must not decide this one
        os.remove(path)
    paused = path + '.paused'
    with open(paused + '.tmp', 'w') as handle:
        json.dump({'paused_at': time.time(), 'decision_file': path, 'verdict': gate['verdict'],
                   'reason': gate['reason']}, handle, indent=2, sort_keys=True)
    os.rename(paused + '.tmp', paused)
    started = clock()
    try:
        while True:
            decision = read_decision(path)
            if decision:
                return decision, round(clock() - started, 3), False
            if timeout and clock() - started >= timeout:
                return 'abort', round(clock() - started, 3), True
            sleep(poll)
    finally:
        for leftover in (paused, path):
            try:
                os.remove(leftover)
            except OSError:
                pass
