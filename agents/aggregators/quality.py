"""Model quality from predictions joined with their labels.

Accuracy counts exact matches. Precision, recall and F1 follow scikit-learn with
`zero_division=0`: binary with positive class 1/true when every class seen is in {0, 1} or in
{false, true}, otherwise macro-averaged over the union of predicted and true classes. Classes
are kept as a sparse confusion map keyed by the JSON text of each (predicted, label) pair, so
1, 1.0 and "1" stay distinct exactly as Python's equality would keep "1" apart from 1.
Regressors (configured) get MAE and RMSE instead of a confusion map, whose size would grow
with every distinct value, and no accuracy: exact equality of real numbers says nothing.
"""

from __future__ import annotations

import math
from typing import Any, Self

import numpy as np
import orjson

from agents.aggregators.base import ratio
from agents.aggregators.sketch import FloatArray, LogSketch

_SEP = "\x1f"
_BINARY_SETS = ({"0", "1"}, {"false", "true"})


def class_key(value: Any) -> str:
    """Canonical text of a class value: ints and integral floats coincide, as in Python."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return orjson.dumps(value).decode()


class Quality:
    """Labelled predictions of one model in one window."""

    __slots__ = ("abs_err", "correct", "delay", "labelled", "pairs", "regressed", "sq_err")

    def __init__(self) -> None:
        self.labelled = 0
        self.correct = 0
        self.pairs: dict[str, int] = {}
        self.regressed = 0
        self.abs_err = 0.0
        self.sq_err = 0.0
        self.delay = LogSketch()

    def update(self, predicted: list[Any], labels: list[Any], delay_s: FloatArray,
               regressor: bool) -> None:
        """One batch of (predicted, label) pairs with label delays in seconds."""
        self.labelled += len(labels)
        self.delay.update(np.maximum(delay_s, 0.0))
        for p, y in zip(predicted, labels, strict=True):
            if p is None:
                continue  # no prediction value: labelled (coverage) but not scored
            if regressor and _is_number(p) and _is_number(y):
                err = float(p) - float(y)
                self.regressed += 1
                self.abs_err += abs(err)
                self.sq_err += err * err
            else:
                pk, yk = class_key(p), class_key(y)
                self.correct += pk == yk
                key = f"{pk}{_SEP}{yk}"
                self.pairs[key] = self.pairs.get(key, 0) + 1

    def merge(self, other: Self) -> Self:
        out = type(self)()
        out.labelled = self.labelled + other.labelled
        out.correct = self.correct + other.correct
        out.pairs = dict(self.pairs)
        for key, count in other.pairs.items():
            out.pairs[key] = out.pairs.get(key, 0) + count
        out.regressed = self.regressed + other.regressed
        out.abs_err = self.abs_err + other.abs_err
        out.sq_err = self.sq_err + other.sq_err
        out.delay = self.delay.merge(other.delay)
        return out

    def to_state(self) -> dict[str, Any]:
        state: dict[str, Any] = {"n": self.labelled, "ok": self.correct,
                                 "d": self.delay.to_state()}
        if self.pairs:
            state["p"] = self.pairs
        if self.regressed:
            state["r"] = [self.regressed, self.abs_err, self.sq_err]
        return state

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Self:
        out = cls()
        out.labelled, out.correct = state["n"], state["ok"]
        out.delay = LogSketch.from_state(state["d"])
        out.pairs = dict(state.get("p", {}))
        if "r" in state:
            out.regressed, out.abs_err, out.sq_err = state["r"]
        return out

    def value(self) -> dict[str, Any] | None:
        if not self.labelled:
            return None
        accuracy = ratio(self.correct, sum(self.pairs.values()))
        out: dict[str, Any] = {
            "labelled": self.labelled,
            "accuracy": accuracy,
            "error_rate": None if accuracy is None else 1.0 - accuracy,
            "label_delay_p50_s": self.delay.quantile(0.50),
            "label_delay_p95_s": self.delay.quantile(0.95),
        }
        if self.pairs:
            out.update(zip(("precision", "recall", "f1"), self._prf(), strict=True))
        if self.regressed:
            out["mae"] = self.abs_err / self.regressed
            out["rmse"] = math.sqrt(self.sq_err / self.regressed)
        return out

    def _prf(self) -> tuple[float, float, float]:
        tp: dict[str, int] = {}
        fp: dict[str, int] = {}
        fn: dict[str, int] = {}
        for key, count in self.pairs.items():
            p, y = key.split(_SEP)
            if p == y:
                tp[p] = tp.get(p, 0) + count
            else:
                fp[p] = fp.get(p, 0) + count
                fn[y] = fn.get(y, 0) + count
        classes = set(tp) | set(fp) | set(fn)
        for binary in _BINARY_SETS:
            if classes <= binary:
                return _prf_one(tp, fp, fn, "1" if "1" in binary else "true")
        scores = [_prf_one(tp, fp, fn, c) for c in sorted(classes)]
        n = len(scores)
        return (sum(s[0] for s in scores) / n, sum(s[1] for s in scores) / n,
                sum(s[2] for s in scores) / n)


def _prf_one(tp: dict[str, int], fp: dict[str, int], fn: dict[str, int], c: str,
             ) -> tuple[float, float, float]:
    t, p_, n_ = tp.get(c, 0), fp.get(c, 0), fn.get(c, 0)
    precision = t / (t + p_) if t + p_ else 0.0
    recall = t / (t + n_) if t + n_ else 0.0
    f1 = 2 * t / (2 * t + p_ + n_) if t else 0.0
    return precision, recall, f1


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
