"""Summaries of two training paths timed round by round on the same clients."""
from __future__ import annotations

import statistics
import time
from typing import Callable, Optional, Sequence


def median_seconds(fn: Callable[[], object], repeats: int) -> float:
  """Median wall time of `fn()` over `repeats` calls, after one untimed warm-up call."""
  fn()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def steady(times: Sequence[float]) -> Sequence[float]:
  """All rounds but the first (tracing, first allocations), if there are more."""
  return times[1:] if len(times) > 1 else times


def paired_summary(name: str, times: Sequence[float], baseline: Sequence[float],
                   went_first: Optional[Sequence[bool]] = None) -> list[str]:
  """Lines comparing `times` with `baseline` over the steady rounds; the last is `<name>=<x>`.

  <x> is the median of the per-round ratios: rounds differ in size, so the
  two sides' own medians can come from different rounds. Their ratio
  (`median_ratio`) and the ratio of the sums are printed as well. With
  `went_first` (round by round: did `times`' side run first?), also the
  median ratio over the rounds where it ran first and where it ran second:
  the order can move a round's time, so an even number of steady rounds
  (alternating sides) weighs both orders alike.
  """
  ours, base = steady(times), steady(baseline)
  paired = [t / b for t, b in zip(ours, base)]
  lines = ["paired_round_ratios=" + ",".join(f"{x:.3f}" for x in paired),
           f"median_ratio={statistics.median(ours) / statistics.median(base):.3f} "
           f"steady_rounds_sum_ratio={sum(ours) / sum(base):.3f}"]
  if went_first is not None:
    first = [r for r, f in zip(paired, steady(went_first)) if f]
    second = [r for r, f in zip(paired, steady(went_first)) if not f]
    lines.append(" ".join(f"ratio_when_{label}={statistics.median(group):.3f} (rounds={len(group)})"
                          for label, group in (("first", first), ("second", second)) if group))
  return lines + [f"{name}={statistics.median(paired):.3f}"]
