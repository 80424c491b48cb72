"""Detection delay and false alarms of our drift detectors, side by side with River's.

  python bench/drift_eval.py [--events 200000] [--window 1000] [--seeds 3]

Synthetic streams with known change points: stable, noisy-but-stable, abrupt concept drift,
gradual concept drift (the error rate rises with the same inputs), abrupt and gradual score
shifts. Ours work on closed windows as the service does (`--window` events per window):
Page-Hinkley over window error rates, the default `concept-drift` rule (error rate 50 % above
its trailing baseline for 3 windows) and the `score-drift` rule (score PSI > 0.25 against the
first 2,000 events, for 3 windows). River's ADWIN and PageHinkley, with their defaults, read
the same streams event by event. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
from river import drift

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agents.aggregators.drift import PageHinkley, Scores, psi
from agents.alerts import RuleState, evaluate
from streams.settings import default_rules

Stream = tuple[np.ndarray, int | None]  # values, change point (None: no change)


def errors(n: int, rng: np.random.Generator, kind: str) -> Stream:
    base = np.full(n, 0.1)
    change = n // 2
    if kind == "stable":
        return (rng.random(n) < base).astype(float), None
    if kind == "noisy-stable":
        wobble = np.repeat(rng.uniform(0.05, 0.15, n // 500 + 1), 500)[:n]
        return (rng.random(n) < wobble).astype(float), None
    if kind == "abrupt-concept":
        base[change:] = 0.3
    elif kind == "gradual-concept":
        ramp = np.clip((np.arange(n) - change) / 20_000, 0, 1)
        base = 0.1 + 0.2 * ramp
    return (rng.random(n) < base).astype(float), change


def scores(n: int, rng: np.random.Generator, kind: str) -> Stream:
    values = rng.beta(2, 5, n)
    change = n // 2
    if kind == "abrupt-score":
        values[change:] += 0.2
    else:  # gradual-score
        values += 0.2 * np.clip((np.arange(n) - change) / 20_000, 0, 1)
    return np.clip(values, 0, 1), change


def river_alarms(detector_type: Callable[[], object], values: np.ndarray) -> list[int]:
    detector = detector_type()
    alarms = []
    for i, x in enumerate(values.tolist()):
        detector.update(x)  # type: ignore[attr-defined]
        if detector.drift_detected:  # type: ignore[attr-defined]
            alarms.append(i)
    return alarms


def ph_windows(values: np.ndarray, window: int) -> list[int]:
    detector = PageHinkley()
    return [(w + 1) * window - 1 for w in range(len(values) // window)
            if detector.update(float(values[w * window:(w + 1) * window].mean()))]


def rule_windows(values: np.ndarray, window: int, name: str) -> list[int]:
    rule = next(r for r in default_rules(60.0) if r.name == name)
    state = RuleState()
    alarms = []
    reference: Scores | None = None
    for w in range(len(values) // window):
        chunk = values[w * window:(w + 1) * window]
        if name == "score-drift":
            current = Scores()
            current.update(chunk)
            if reference is None or reference.count < 2000:
                reference = current if reference is None else reference.merge(current)
                value = None
            else:
                value = psi(reference.hist, current.hist)
        else:
            value = float(chunk.mean())
        if evaluate(rule, state, w * 60.0, w * 60.0 + 60, value) == "firing":
            alarms.append((w + 1) * window - 1)
    return alarms


def summarise(alarms: list[list[int]], changes: list[int | None], n: int, window: int,
              ) -> tuple[str, str]:
    delays, false = [], 0
    for found, change in zip(alarms, changes, strict=True):
        false += sum(1 for a in found if change is None or a < change)
        after = [a - change for a in found if change is not None and a >= change]
        if change is not None:
            delays.append(after[0] if after else None)
    fa = f"{false / (n * len(alarms)) * 1e6:.1f}"
    if not delays:
        return "-", fa
    if any(d is None for d in delays):
        missed = sum(d is None for d in delays)
        return f"missed {missed}/{len(delays)}", fa
    mean = float(np.mean([d for d in delays if d is not None]))
    return f"{mean:,.0f} ev ({mean / window:.1f} win)", fa


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--window", type=int, default=1000)
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    n, window = args.events, args.window
    detectors: dict[str, Callable[[np.ndarray], list[int]]] = {
        "ours: Page-Hinkley on window error rates": lambda v: ph_windows(v, window),
        "ours: concept-drift rule": lambda v: rule_windows(v, window, "concept-drift"),
        "ours: score-drift rule (PSI)": lambda v: rule_windows(v, window, "score-drift"),
        "River ADWIN (defaults)": lambda v: river_alarms(drift.ADWIN, v),
        "River PageHinkley (defaults)": lambda v: river_alarms(drift.PageHinkley, v),
    }
    applies = {"ours: Page-Hinkley on window error rates": "errors",
               "ours: concept-drift rule": "errors", "ours: score-drift rule (PSI)": "scores"}
    streams = dict.fromkeys(("stable", "noisy-stable", "abrupt-concept", "gradual-concept"), errors)
    streams.update(dict.fromkeys(("abrupt-score", "gradual-score"), scores))
    print(f"{args.seeds} seeds x {n:,} events per stream, windows of {window} events; "
          "delay = events (windows) after the change to the first alarm; "
          "false alarms per million events\n")
    print("| stream | detector | detection delay | false alarms / M |")
    print("|---|---|---|---|")
    for kind, make in streams.items():
        data = [make(n, np.random.default_rng(seed), kind) for seed in range(args.seeds)]
        family = "errors" if make is errors else "scores"
        for name, detect in detectors.items():
            if applies.get(name, family) != family:
                continue
            alarms = [detect(values) for values, _ in data]
            delay, false = summarise(alarms, [c for _, c in data], n, window)
            print(f"| {kind} | {name} | {delay} | {false} |")


if __name__ == "__main__":
    main()
