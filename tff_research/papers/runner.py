"""Runs one paper-reproduction experiment end to end: plan -> train -> analyze -> write -> plot.

`run(name, scale, output_dir, data_dir)` is what `experiments/<name>.py` and
`experiments/reproduce_papers.py` call, with a TFF runtime already installed
(see `main`). Results land in `common.experiment_dir(output_dir, scale, name)`.
"""
from __future__ import annotations

import dataclasses
import os
import time
from typing import Any, Callable, Optional

from tff_research.papers import adaptive_optimizers
from tff_research.papers import adaptive_optimizers_char
from tff_research.papers import common
from tff_research.papers import fedavg_vs_fedsgd
from tff_research.papers import fedavg_vs_fedsgd_char
from tff_research.papers import federated_vs_centralized
from tff_research.papers import privacy_utility
from tff_research.papers import report
from tff_research.papers import secure_cost

# Every experiment by name, in the order `reproduce_papers` runs them (secure_cost
# uses adaptive_optimizers' best optimizer). Each module has NAME, TASK and
# `execute(common.Context) -> (rows, analysis)`, and may have `data_config(scale)`,
# the configuration its data is loaded with (else its task's base configuration).
REGISTRY = {module.NAME: module for module in (
    fedavg_vs_fedsgd_char, adaptive_optimizers_char, fedavg_vs_fedsgd, adaptive_optimizers,
    federated_vs_centralized, secure_cost, privacy_utility)}
EXPERIMENTS = tuple(REGISTRY)


def _load_data(module, scale: str, data_dir: Optional[str]):
  """The data of `module`'s runs: from its `data_config(scale)` where it has one, else its task's base."""
  from tff_research.learning import experiment  # pylint: disable=g-import-not-at-top
  data_config = getattr(module, "data_config", None)
  config = data_config(scale) if data_config else common.base_config(scale, module.TASK)
  return experiment.load_nwp_data(dataclasses.replace(config, data_dir=data_dir), verbose=False)


def command_line(name: str, scale: str, output_dir: str) -> str:
  extra = "" if output_dir == "results" else f" --output_dir={output_dir}"
  return f"python -m experiments.{name} --scale={scale}{extra}"


def run(name: str, scale: str, output_dir: str = "results", data_dir: Optional[str] = None,
        log: Callable[[str], None] = print, until_round: Optional[int] = None) -> dict[str, Any]:
  """Runs experiment `name` at `scale`; returns its summary (also written to summary.json).

  Args:
    name: one of EXPERIMENTS.
    scale: one of common.SCALES.
    output_dir: results go to `common.experiment_dir(output_dir, scale, name)`.
    data_dir: where corpora are cached.
    log: where progress lines go.
    until_round: stop every run at this round (a later call resumes them).

  Returns:
    The summary: command, hardware, wall time, the analysis and one row per run.
  """
  if name not in REGISTRY:
    raise ValueError(f"unknown experiment {name!r}; choose one of: {', '.join(EXPERIMENTS)}")
  module = REGISTRY[name]
  common.base_config(scale)  # validates the scale
  out_dir = common.experiment_dir(output_dir, scale, name)
  os.makedirs(out_dir, exist_ok=True)
  start = time.time()
  data = _load_data(module, scale, data_dir)
  log(f"{name} ({scale}): {data.name}, {len(data.train_client_ids)} train clients, "
      f"vocabulary {data.vocab.size}; writing to {out_dir}")

  def publish(rows, analysis):
    _write_results(name, scale, output_dir, out_dir, rows, analysis, time.time() - start)

  context = common.Context(scale, data, out_dir, output_dir, data_dir, log, until_round, publish)
  rows, analysis = module.execute(context)
  summary = _write_results(name, scale, output_dir, out_dir, rows, analysis, time.time() - start)
  log(f"{name}: wrote {os.path.join(out_dir, 'summary.json')} and {', '.join(analysis['plots'])} "
      f"({time.time() - start:.0f} s)")
  return summary


def _write_results(name, scale, output_dir, out_dir, rows, analysis, wall_seconds) -> dict[str, Any]:
  """results.csv, summary.json (with each run's evaluation curve) and the figure."""
  analysis["plots"] = [report.figure_name(name)]
  # Each run's evaluation curve, so the figure is drawn from summary.json alone.
  analysis["curves"] = {row["label"]: common.eval_curve(os.path.join(out_dir, "runs", row["label"]))
                        for row in rows if os.path.isdir(os.path.join(out_dir, "runs", row["label"]))}
  common.write_table(os.path.join(out_dir, "results.csv"), rows)
  common.write_summary(out_dir, name, scale, command_line(name, scale, output_dir), wall_seconds,
                       analysis, rows)
  summary = common.load_summary(output_dir, scale, name)
  report.save_figure(summary, out_dir)
  return summary


_KEPT = "finished runs are kept (rerun the same command to resume)"


def main(names, scale: str, output_dir: str, data_dir: Optional[str], verbose: bool,
         until_round: Optional[int] = None) -> int:
  """Command-line driver: installs the local TFF runtime, runs `names`, always stops the worker."""
  from tff_research import runtime  # pylint: disable=g-import-not-at-top
  from tff_research.learning import entry_point  # pylint: disable=g-import-not-at-top
  runtime.configure_logging(verbose)

  def run_all():
    if scale not in common.SCALES:
      raise ValueError(f"--scale={scale!r} is not one of: {', '.join(common.SCALES)}")
    if until_round is not None and until_round < 1:
      raise ValueError(f"--until_round must be positive, got {until_round}")
    runtime.use_local_runtime()
    for name in names:
      run(name, scale, output_dir, data_dir, until_round=until_round)

  return entry_point.run_guarded(run_all, _KEPT)
