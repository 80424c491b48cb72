"""Model quality from predictions joined with their labels.

Accuracy counts exact matches. Precision, recall and F1 follow scikit-learn with
`zero_division=0`: binary with positive class 1/true when every class seen is in {0, 1} or in
{false, true}, otherwise macro-averaged over the union of predicted and true classes. Classes
are kept by the JSON text of each value (`class_key`), so 1, 1.0 and "1" stay distinct exactly
as Python's equality would keep "1" apart from 1, with per-class counts of true positives,
false positives and false negatives: all that accuracy, precision, recall and F1 need.

The classes kept per model window are bounded (MAX_CLASSES, see `Quality`), as is the length
of each class's text (MAX_CLASS_TEXT): a recommender predicting item ids must not make a
window's state grow with its catalogue.

Regressors (configured) get MAE and RMSE instead of per-class counts, whose size would grow
with every distinct value, and no accuracy: exact equality of real numbers says nothing.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any, Self

import numpy as np
import orjson

from agents.aggregators.base import ratio
from agents.aggregators.sketch import FloatArray, LogSketch

MAX_CLASSES = 100  # distinct classes kept per model window; the rest count as one, "other"
MAX_CLASS_TEXT = 64  # characters; a longer class text is kept as "#" and a 128-bit hash

_SEP = "\x1f"
_BINARY_SETS = ({"0", "1"}, {"false", "true"})
_EXACT_INT = 2**53  # floats represent every integer up to here, and no other run of them


def class_text(value: Any) -> str:
    """Canonical text of a class value, never failing: ints and integral floats within
    +-2**53 coincide, as in Python; a bigger integral float keeps its float text."""
    if isinstance(value, bool) or value is None:
        return "true" if value is True else "false" if value is False else "null"
    if isinstance(value, int):
        return str(value)  # any size (orjson refuses ints past 64 bits)
    if isinstance(value, float):
        if value.is_integer() and -_EXACT_INT <= value <= _EXACT_INT:
            return str(int(value))
        return orjson.dumps(value).decode()  # finite: shortest round-trip text
    try:
        return orjson.dumps(value, default=repr).decode()
    except orjson.JSONEncodeError:  # a lone surrogate, which no decoded event holds
        return json.dumps(value, default=repr)


def class_key(value: Any) -> str:
    """The key a class is counted under: its text (`class_text`), or for a text longer than
    MAX_CLASS_TEXT characters "#" and 32 hex digits of its BLAKE2b hash (no JSON text starts
    with "#", so the two never meet)."""
    return _short(class_text(value))


def _short(text: str) -> str:
    if len(text) <= MAX_CLASS_TEXT:
        return text
    return "#" + hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def _rank(key: str) -> tuple[int, str]:
    """Which classes are kept: the MAX_CLASSES of lowest rank, a hash (a uniform sample of the
    classes, whatever their names), ties broken by the key."""
    digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big"), key


class Quality:
    """Labelled predictions of one model in one window.

    `classes` maps a class key to its [true positives, false positives, false negatives];
    `other` holds the same three counts for every class past the cap, as one class.

    The cap: at most MAX_CLASSES classes are kept, those of lowest `_rank` (a hash of the
    key, so a uniform sample of the classes seen); a pair whose predicted or true class is not
    kept counts that side under "other". The set kept depends only on the set of classes seen,
    so merging partial states in any order or grouping gives exactly what one state fed every
    pair gives. What degrades past the cap, and only then:

    - accuracy and error rate stay exact (`correct` counts exact matches of the full texts,
      over every scored pair);
    - each kept class's precision, recall and F1 stay exact: its counts only depend on
      pairs where it is the predicted or the true class, and those are all counted to it;
    - the classes not kept count as one class, "other", in the macro average: its true
      positives are the exact matches among them, and a mismatch between two of them counts
      as a false positive and a false negative of "other" (never as a true positive). The
      macro average is then over MAX_CLASSES + 1 classes instead of all of them: the kept
      classes weigh as in the full average, the rest together as one class with their
      micro-averaged precision and recall. With a model's classes far past the cap, read it
      as an estimate from a random sample of the classes plus their pooled remainder.
    """

    __slots__ = ("abs_err", "classes", "correct", "delay", "labelled", "other", "regressed",
                 "sq_err")

    def __init__(self) -> None:
        self.labelled = 0
        self.correct = 0
        self.classes: dict[str, list[int]] = {}
        self.other = [0, 0, 0]
        self.regressed = 0
        self.abs_err = 0.0
        self.sq_err = 0.0
        self.delay = LogSketch()

    def update(self, predicted: list[Any], labels: list[Any], delay_s: FloatArray,
               regressor: bool) -> None:
        """One batch of (predicted, label) pairs with label delays in seconds."""
        self.labelled += len(labels)
        self.delay.update(np.maximum(delay_s, 0.0))
        # once full, a class ranked past the last one kept is never kept: count it as other
        limit = self._limit()
        for p, y in zip(predicted, labels, strict=True):
            if p is None:
                continue  # no prediction value: labelled (coverage) but not scored
            if regressor and _is_number(p) and _is_number(y):
                err = float(p) - float(y)
                self.regressed += 1
                self.abs_err += abs(err)
                self.sq_err += err * err
                continue
            pt, yt = class_text(p), class_text(y)
            if pt == yt:
                self.correct += 1
                self._counts(_short(pt), limit)[0] += 1
            else:
                self._counts(_short(pt), limit)[1] += 1
                self._counts(_short(yt), limit)[2] += 1
            if len(self.classes) > 2 * MAX_CLASSES:
                self._cap()
                limit = self._limit()
        self._cap()

    def _counts(self, key: str, limit: tuple[int, str] | None) -> list[int]:
        counts = self.classes.get(key)
        if counts is None:
            if limit is not None and _rank(key) > limit:
                return self.other
            counts = self.classes[key] = [0, 0, 0]
        return counts

    def _limit(self) -> tuple[int, str] | None:
        """The rank of the last class kept, once the cap is reached."""
        if len(self.classes) < MAX_CLASSES:
            return None
        return max(map(_rank, self.classes))

    def _cap(self) -> None:
        """Keep the MAX_CLASSES classes of lowest rank; fold the rest into `other`."""
        if len(self.classes) <= MAX_CLASSES:
            return
        for key in sorted(self.classes, key=_rank)[MAX_CLASSES:]:
            counts = self.classes.pop(key)
            for i in range(3):
                self.other[i] += counts[i]

    def merge(self, other: Self) -> Self:
        out = type(self)()
        out.labelled = self.labelled + other.labelled
        out.correct = self.correct + other.correct
        for source in (self, other):
            for key, counts in source.classes.items():
                mine = out.classes.setdefault(key, [0, 0, 0])
                for i in range(3):
                    mine[i] += counts[i]
        out.other = [a + b for a, b in zip(self.other, other.other, strict=True)]
        out._cap()
        out.regressed = self.regressed + other.regressed
        out.abs_err = self.abs_err + other.abs_err
        out.sq_err = self.sq_err + other.sq_err
        out.delay = self.delay.merge(other.delay)
        return out

    def to_state(self) -> dict[str, Any]:
        state: dict[str, Any] = {"n": self.labelled, "ok": self.correct,
                                 "d": self.delay.to_state()}
        if self.classes:
            state["c"] = {key: self.classes[key] for key in sorted(self.classes)}
        if any(self.other):
            state["x"] = self.other
        if self.regressed:
            state["r"] = [self.regressed, self.abs_err, self.sq_err]
        return state

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Self:
        out = cls()
        out.labelled, out.correct = state["n"], state["ok"]
        out.delay = LogSketch.from_state(state["d"])
        out.classes = {key: list(counts) for key, counts in state.get("c", {}).items()}
        out.other = list(state.get("x", [0, 0, 0]))
        for key, count in state.get("p", {}).items():  # the confusion map written before
            p, y = (_short(text) for text in key.split(_SEP))
            if p == y:
                out.classes.setdefault(p, [0, 0, 0])[0] += count
            else:
                out.classes.setdefault(p, [0, 0, 0])[1] += count
                out.classes.setdefault(y, [0, 0, 0])[2] += count
        out._cap()
        if "r" in state:
            out.regressed, out.abs_err, out.sq_err = state["r"]
        return out

    @property
    def scored(self) -> int:
        """Pairs counted by class: each is one true or one false positive."""
        return (sum(c[0] + c[1] for c in self.classes.values())
                + self.other[0] + self.other[1])

    def value(self) -> dict[str, Any] | None:
        if not self.labelled:
            return None
        scored = self.scored
        accuracy = ratio(self.correct, scored)
        out: dict[str, Any] = {
            "labelled": self.labelled,
            "accuracy": accuracy,
            "error_rate": None if accuracy is None else 1.0 - accuracy,
            "label_delay_p50_s": self.delay.quantile(0.50),
            "label_delay_p95_s": self.delay.quantile(0.95),
        }
        if scored:
            out.update(zip(("precision", "recall", "f1"), self._prf(), strict=True))
        if self.regressed:
            out["mae"] = self.abs_err / self.regressed
            out["rmse"] = math.sqrt(self.sq_err / self.regressed)
        return out

    def _prf(self) -> tuple[float, float, float]:
        counts = dict(self.classes)
        if not any(self.other):
            for binary in _BINARY_SETS:
                if counts.keys() <= binary:
                    return _prf_one(counts.get("1" if "1" in binary else "true", [0, 0, 0]))
        scores = [_prf_one(counts[c]) for c in sorted(counts)]
        if any(self.other):
            scores.append(_prf_one(self.other))
        n = len(scores)
        return (sum(s[0] for s in scores) / n, sum(s[1] for s in scores) / n,
                sum(s[2] for s in scores) / n)


def _prf_one(counts: list[int]) -> tuple[float, float, float]:
    t, p_, n_ = counts
    precision = t / (t + p_) if t + p_ else 0.0
    recall = t / (t + n_) if t + n_ else 0.0
    f1 = 2 * t / (2 * t + p_ + n_) if t else 0.0
    return precision, recall, f1


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
