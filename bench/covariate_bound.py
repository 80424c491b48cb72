"""How soon can any mean-shift detector see `drift_eval.py`'s covariate shift without a
false alarm on its stable streams? The bound behind the README's covariate row.

  python bench/covariate_bound.py [--seeds 30]

The covariate stream moves one feature by 0.5 sd. For a shift in the mean of a known
distribution, CUSUM is the optimal detector (Lorden 1971, Moustakides 1986): none sees it
sooner at the same false-alarm rate. So this runs CUSUM, made as favourable as it can be:
- the reference mean and sd known exactly (an oracle: the service estimates them);
- fed one value at a time (the service sees a flush's sum at once);
- its allowance k picked after the fact, whichever gives the shortest delay;
- its threshold set just above the largest statistic that the evaluation's own stable
  streams reach (3 seeds of stable, daily-cycle and wobble, all 3 features and the score:
  7.2M values), i.e. tuned on the very streams it is judged on, with no margin.
Two-sided, as a detector must be (a shift's sign is not known in advance). The delay is
read on `--seeds` fresh covariate streams, and on the evaluation's own 3.

Printed twice: with the daily cycle's slow swing of the feature (0.1 sd) among the stable
streams, as in the evaluation, and without it (a detector that could tell a slow cycle
from a shift perfectly), where the stable streams are replaced by three more stable seeds.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from drift_eval import STABLE, make, river_alarms

N, WINDOW = 200_000, 1000
SCORE_MEAN = 2 / 7  # the scores are Beta(2, 5)
SCORE_SD = float(np.sqrt(10 / (49 * 8)))
ALLOWANCES = (0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4)


def cusum(z: np.ndarray, k: float) -> tuple[np.ndarray, np.ndarray]:
    """The upper and lower CUSUM statistics after each value: S_t = C_t - min(0, C_<=t)."""
    up, down = np.cumsum(z - k), np.cumsum(-z - k)
    return (up - np.minimum(np.minimum.accumulate(up), 0),
            down - np.minimum(np.minimum.accumulate(down), 0))


def standardised(kind: str, seed: int) -> list[np.ndarray]:
    """The values a detector watches on a stream: its 3 features and its score."""
    stream = make(kind, N, WINDOW, np.random.default_rng(seed))
    return [*stream.features.T, (stream.score - SCORE_MEAN) / SCORE_SD]


def delay(values: np.ndarray, k: float, threshold: float) -> int:
    """Values after the change (at N/2) to the first alarm of the upper side."""
    up, _ = cusum(values, k)
    after = np.flatnonzero(up[N // 2:] > threshold)
    return int(after[0]) if after.size else N


def report(title: str, stable: list[np.ndarray], seeds: int) -> None:
    fresh = [make("covariate", N, WINDOW, np.random.default_rng(s)).features[:, 0]
             for s in range(seeds)]
    print(f"\n{title} ({sum(z.size for z in stable):,} stable values)\n")
    print(f"| k (shift_sd) | zero-alarm threshold | median delay, {seeds} seeds | "
          "median delay, the evaluation's 3 |")
    print("|---|---|---|---|")
    for k in ALLOWANCES:
        threshold = max(float(max(up.max(), down.max())) for z in stable
                        for up, down in [cusum(z, k)])
        delays = [delay(z, k, threshold) for z in fresh]
        own = [delay(z, k, threshold) for z in fresh[:3]]
        print(f"| {k:.2f} ({2 * k:.1f}) | {threshold:.1f} | {np.median(delays):.0f} | "
              f"{np.median(own):.0f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=30, help="fresh covariate streams")
    args = parser.parse_args()
    report("With the daily cycle, as in the evaluation",
           [z for kind in STABLE for s in range(3) for z in standardised(kind, s)],
           args.seeds)
    report("Without it (stable and wobble, and 3 more stable seeds)",
           [z for kind in ("stable", "wobble") for s in range(3) for z in standardised(kind, s)]
           + [z for s in range(100, 103) for z in standardised("stable", s)], args.seeds)
    river(args.seeds)


def river(seeds: int) -> None:
    """River's ADWIN at its defaults on the same covariate streams, for comparison."""
    from river import drift  # the comparison's only use of River: not a dependency

    delays, early = [], 0
    for seed in range(seeds):
        alarms = river_alarms(make("covariate", N, WINDOW, np.random.default_rng(seed)),
                              "feature0", drift.ADWIN)
        early += sum(at <= N // 2 for at in alarms)
        delays.append(next((at - N // 2 for at in alarms if at > N // 2), N))
    print(f"\nRiver ADWIN, the same streams: median delay {np.median(delays):.0f} over {seeds} "
          f"seeds, {np.median(delays[:3]):.0f} over the evaluation's 3; {early} false alarms "
          f"in their {seeds * N // 2:,} values before the change")


if __name__ == "__main__":
    main()
