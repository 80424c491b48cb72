"""The `/metrics` renderer and the query parser, fed what a forged record on Kafka could hold."""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import fields
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from schemas.outputs import MetricSnapshot
from streams.loop_lag import LoopLag
from streams.metrics_view import (
    EXPORTED,
    AlertsView,
    MetricsView,
    Query,
    QueryError,
    prometheus,
)

# The text exposition format 0.0.4, line by line, strictly: comments, then samples whose
# label values escape exactly backslash, double quote and newline.
_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_LABEL = r'[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*"'
_VALUE = r"(?:[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|[+-]Inf|NaN)"
SAMPLE = re.compile(rf"({_NAME})(?:\{{(?:{_LABEL}(?:,{_LABEL})*)?\}})? {_VALUE}")
HELP = re.compile(rf"# HELP ({_NAME}) (?:[^\\\n]|\\[\\n])*")
TYPE = re.compile(rf"# TYPE ({_NAME}) (?:counter|gauge|histogram|summary|untyped)")

HOSTILE_NAME = 'churn"} 1\nfactory_injected{model="x'
HOSTILE_DEVICE = 'gpu\\0" ,x="y'
FORGED_FIELDS = {
    'evil\nfactory_forged{model="m"} 1': 1.0,
    "two words": 2.0,
    "brace{": 3.0,
    "factory_forged": 4.0,
    "error_rate_extra": 5.0,
}


def _snapshot(scope: str = "model", **fields_: Any) -> dict[str, Any]:
    return {"scope": scope, "window_s": 60.0, "window_start": 1_700_000_040.0,
            "window_end": 1_700_000_100.0, "revision": 1, "ts": 1_700_000_101.0, **fields_}


def _render(view: MetricsView, alerts: AlertsView | None = None, max_series: int = 20_000,
            failures: dict[tuple[str, str], int] | None = None) -> str:
    join = dict.fromkeys(("duplicates", "labels_unmatched", "labels_waiting",
                          "partials_past_retention", "partials_malformed",
                          "predictions_joinable", "window_slots", "snapshot_windows"), 0)
    counters = {'in"put\n': {"messages": 1, "accepted": 1, "rejected": 0}}
    return prometheus(view, counters, join, alerts or AlertsView(), LoopLag(), failures or {},
                      max_series=max_series)


def _check_exposition(text: str) -> dict[str, list[str]]:
    """Every line is a HELP, a TYPE or a sample; each family is typed once, before its samples,
    which are contiguous. Returns the sample lines by family."""
    assert text.endswith("\n")
    samples: dict[str, list[str]] = {}
    typed: list[str] = []
    for line in text[:-1].split("\n"):
        if match := TYPE.fullmatch(line):
            assert match[1] not in typed, f"typed twice: {line!r}"
            typed.append(match[1])
        elif HELP.fullmatch(line):
            continue
        else:
            match = SAMPLE.fullmatch(line)
            assert match, f"not a valid exposition line: {line!r}"
            assert typed, f"sample before any TYPE: {line!r}"
            assert typed[-1] == match[1], f"sample outside its family: {line!r}"
            samples.setdefault(match[1], []).append(line)
    return samples


def _hostile_view() -> MetricsView:
    view = MetricsView(retention_s=3600)
    view.add(_snapshot(model=HOSTILE_NAME, predictions=10, error_rate=0.25, accuracy=0.75,
                       dataset_drift=True, drift_psi_features={"age": 0.1},
                       **FORGED_FIELDS))
    view.add(_snapshot("device", model="churn", host="node\n1", device=HOSTILE_DEVICE,
                       gpu_util_avg=0.5, cost_usd=math.inf))
    view.add(_snapshot(model="_factory", predictions=10, latency_p95_ms=12.5))
    return view


def test_hostile_snapshots_render_valid_exposition_with_known_names_only() -> None:
    alerts = AlertsView()
    alerts.add({"alert_id": "a", "rule": 'r"\n', "model": HOSTILE_NAME, "state": "firing",
                "severity": 'warning"}\nfactory_injected 1', "value": 0.3, "threshold": 0.25,
                "window_start": 0.0, "window_end": 60.0, "ts": 61.0})
    text = _render(_hostile_view(), alerts, failures={("out\\", 'too"large'): 2})
    samples = _check_exposition(text)

    snapshot_families = {name for name in samples if name.removeprefix("factory_") in EXPORTED}
    assert snapshot_families == {"factory_predictions", "factory_error_rate",
                                 "factory_accuracy", "factory_gpu_util_avg", "factory_cost_usd",
                                 "factory_latency_p95_ms"}
    for bad in ("forged", "injected", "evil", "two", "brace", "extra", "dataset_drift",
                "drift_psi_features"):
        assert bad not in "".join(samples), bad
    # escaped exactly as the format says; an infinite value as +Inf
    assert samples["factory_cost_usd"] == [r'factory_cost_usd{device="gpu\\0\" ,x=\"y",'
                                           r'host="node\n1",model="churn",window="60s"} +Inf']

    # The label values come back exactly as they were, through a real parser.
    families = {f.name: f for f in text_string_to_metric_families(text)}
    labels = [s.labels for s in families["factory_predictions"].samples]
    assert {"model": HOSTILE_NAME, "window": "60s"} in labels
    assert {"model": "_factory", "window": "60s"} in labels
    (gpu,) = families["factory_gpu_util_avg"].samples
    assert gpu.labels == {"model": "churn", "host": "node\n1", "device": HOSTILE_DEVICE,
                          "window": "60s"}
    (alert,) = families["factory_alerts_firing"].samples
    assert alert.labels == {"rule": 'r"\n', "model": HOSTILE_NAME,
                            "severity": 'warning"}\nfactory_injected 1'}
    (failure,) = families["factory_output_failures"].samples
    assert failure.labels == {"topic": "out\\", "reason": 'too"large'}
    assert families["factory_input_accepted"].samples[0].labels == {"topic": 'in"put\n'}
    assert families["factory_series_dropped"].samples[0].value == 0


def test_every_numeric_metric_of_the_output_record_is_exported_with_its_help() -> None:
    numeric = {f.name for f in fields(MetricSnapshot)
               if f.type in ("int | None", "float | None")} - {"window_s", "window_start",
                                                               "window_end", "revision", "ts"}
    assert numeric == EXPORTED
    view = MetricsView(retention_s=3600)
    view.add(_snapshot(model="m", **dict.fromkeys(EXPORTED, 1.5)))
    text = _render(view)
    samples = _check_exposition(text)
    assert {f"factory_{name}" for name in EXPORTED} <= set(samples)
    assert "# HELP factory_f1 F1 (binary, or macro over classes) (share)" in text


def test_series_are_capped_rollups_first_and_the_rest_counted() -> None:
    view = MetricsView(retention_s=3600)
    for i in range(30):
        view.add(_snapshot(model=f"m{i:02}", predictions=i, error_rate=0.1))
    view.add(_snapshot(model="_factory", predictions=99, error_rate=0.1))
    alerts = AlertsView()
    alerts.add({"alert_id": "a", "rule": "r", "model": "m00", "state": "firing",
                "severity": "info", "value": 1.0, "threshold": 0.5, "window_start": 0.0,
                "window_end": 60.0, "ts": 61.0})
    samples = _check_exposition(_render(view, alerts, max_series=11))
    data = [line for name, lines in samples.items() if name.removeprefix("factory_") in EXPORTED
            or name == "factory_alerts_firing" for line in lines]
    assert len(data) == 11
    assert 'factory_predictions{model="_factory",window="60s"} 99' in data
    assert Counter(line.split("{")[0] for line in data) == {"factory_predictions": 5,
                                                            "factory_error_rate": 6}
    assert samples["factory_series_dropped"] == ["factory_series_dropped 52"]


@pytest.mark.parametrize("forged", [
    [1, 2],
    "text",
    {"scope": "planet", "window_s": 60, "window_start": 0, "window_end": 60, "revision": 1},
    {"scope": "model", "window_s": "60s", "window_start": 0, "window_end": 60, "revision": 1},
    {"scope": "model", "window_s": 60, "window_start": 0, "window_end": 60, "revision": True},
    {"scope": "model", "window_s": 60, "window_start": 0, "window_end": 60, "revision": 1,
     "model": {"name": "m"}},
])
def test_a_snapshot_without_a_usable_identity_is_refused(forged: Any) -> None:
    view = MetricsView(retention_s=3600)
    with pytest.raises(TypeError):
        view.add(forged)
    assert not view.snapshots


@pytest.mark.parametrize("forged", [
    ["alert"],
    {"rule": "r", "model": "m", "state": "firing", "severity": 3, "window_end": 60.0},
    {"rule": "r", "model": None, "state": "firing", "severity": "info", "window_end": 60.0},
    {"rule": "r", "model": "m", "state": "firing", "severity": "info", "window_end": "late"},
    {"request_id": "x", "model": "m", "reason": ["r"], "ts": 1.0},
])
def test_an_alert_or_request_of_the_wrong_shape_is_refused(forged: Any) -> None:
    alerts = AlertsView()
    with pytest.raises(TypeError):
        alerts.add(forged)
    assert not alerts.firing
    assert not alerts.requests


@pytest.mark.parametrize(("params", "words"), [
    ({"model": "m" * 513}, "model: longer than 512 characters"),
    ({"window": "1" * 600}, "window: longer than 512"),
    ({"x" * 10_000: "1"}, "unknown parameter 'xxxx"),
    ({"limit": "9" * 400}, "limit: must be a finite number"),
    ({"from": "nan"}, "from: must be a finite number"),
    ({"window": ""}, "window"),
    ({"scope": ""}, "scope"),
])
def test_bad_query_parameters_are_named_without_echoing_them_whole(params: dict[str, str],
                                                                   words: str) -> None:
    with pytest.raises(QueryError) as err:
        Query.parse(params)
    assert words in str(err.value)
    assert len(str(err.value)) < 700


def test_a_long_but_possible_name_is_a_valid_filter() -> None:
    assert Query.parse({"model": "m" * 512}).model == "m" * 512
