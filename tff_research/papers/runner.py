"""Runs one paper-reproduction experiment end to end: plan -> train -> analyze -> write -> plot.

`run(name, scale, output_dir, data_dir)` is what `experiments/<name>.py` and
`experiments/reproduce_papers.py` call, with a TFF runtime already installed
(see `main`). Results land in `common.experiment_dir(output_dir, scale, name)`.
"""
from __future__ import annotations

import dataclasses
import os
import sys
import time
from typing import Any, Callable, Optional

from tff_research.papers import adaptive_optimizers
from tff_research.papers import common
from tff_research.papers import fedavg_vs_fedsgd
from tff_research.papers import federated_vs_centralized
from tff_research.papers import report
from tff_research.papers import secure_cost

EXPERIMENTS = (fedavg_vs_fedsgd.NAME, adaptive_optimizers.NAME, federated_vs_centralized.NAME,
               secure_cost.NAME)


def _load_data(scale: str, data_dir: Optional[str]):
  from tff_research.learning import experiment  # pylint: disable=g-import-not-at-top
  config = dataclasses.replace(common.base_config(scale), data_dir=data_dir)
  return experiment.load_nwp_data(config, verbose=False)


def _with_data_dir(planned, data_dir):
  return [dataclasses.replace(p, config=dataclasses.replace(p.config, data_dir=data_dir)) for p in planned]


def command_line(name: str, scale: str, output_dir: str) -> str:
  extra = "" if output_dir == "results" else f" --output_dir={output_dir}"
  return f"python -m experiments.{name} --scale={scale}{extra}"


def run(name: str, scale: str, output_dir: str = "results", data_dir: Optional[str] = None,
        log: Callable[[str], None] = print) -> dict[str, Any]:
  """Runs experiment `name` at `scale`; returns its summary (also written to summary.json)."""
  if name not in EXPERIMENTS:
    raise ValueError(f"unknown experiment {name!r}; choose one of: {', '.join(EXPERIMENTS)}")
  common.base_config(scale)  # validates the scale
  out_dir = common.experiment_dir(output_dir, scale, name)
  os.makedirs(out_dir, exist_ok=True)
  start = time.time()
  data = _load_data(scale, data_dir)
  log(f"{name} ({scale}): {data.name}, {len(data.train_client_ids)} train clients, "
      f"vocabulary {data.vocab.size}; writing to {out_dir}")
  if name == fedavg_vs_fedsgd.NAME:
    rows = common.run_planned(_with_data_dir(fedavg_vs_fedsgd.plan(scale), data_dir), data, out_dir, log)
    analysis = fedavg_vs_fedsgd.analyze(rows, out_dir)
  elif name == adaptive_optimizers.NAME:
    grid = common.run_planned(_with_data_dir(adaptive_optimizers.plan_grid(scale), data_dir), data, out_dir, log)
    exponents = adaptive_optimizers.best_exponents(grid)
    seeds = common.run_planned(
        _with_data_dir(adaptive_optimizers.plan_seeds(scale, exponents), data_dir), data, out_dir, log)
    rows = grid + seeds
    analysis = adaptive_optimizers.analyze(grid, seeds)
  elif name == federated_vs_centralized.NAME:
    config = dataclasses.replace(federated_vs_centralized.federated_config(scale), data_dir=data_dir)
    planned = [common.PlannedRun("federated_cifg", config, {"training": "federated"})]
    federated = common.run_planned(planned, data, out_dir, log)[0]
    from tff_research.learning import training_loop  # pylint: disable=g-import-not-at-top
    eval_ids = training_loop.eval_client_ids(data, config.loop_config())
    log(f"centralized CIFG for {federated['train_examples']} example passes")
    centralized = federated_vs_centralized.run_centralized(config, data, federated["train_examples"], eval_ids)
    rows = [federated, centralized]
    analysis = federated_vs_centralized.analyze(federated, [centralized])
  else:
    exp2 = common.load_summary(output_dir, scale, adaptive_optimizers.NAME)
    _, _, source = secure_cost.chosen_optimizer(exp2)
    rows = common.run_planned(_with_data_dir(secure_cost.plan(scale, exp2), data_dir), data, out_dir, log)
    analysis = secure_cost.analyze(rows, out_dir, source)
  analysis["plots"] = [report.figure_name(name)]
  # Each run's evaluation curve, so the figure is drawn from summary.json alone.
  analysis["curves"] = {row["label"]: common.eval_curve(os.path.join(out_dir, "runs", row["label"]))
                        for row in rows if os.path.isdir(os.path.join(out_dir, "runs", row["label"]))}
  common.write_table(os.path.join(out_dir, "results.csv"), rows)
  path = common.write_summary(out_dir, name, scale, command_line(name, scale, output_dir),
                              time.time() - start, analysis, rows)
  summary = common.load_summary(output_dir, scale, name)
  report.save_figure(summary, out_dir)
  log(f"{name}: wrote {path} and {', '.join(analysis['plots'])} ({time.time() - start:.0f} s)")
  return summary


_KEPT = "finished runs are kept (rerun the same command to resume)"


def main(names, scale: str, output_dir: str, data_dir: Optional[str], verbose: bool) -> int:
  """Command-line driver: installs the local TFF runtime, runs `names`, always stops the worker."""
  from tff_research import runtime  # pylint: disable=g-import-not-at-top
  from tff_research.learning import entry_point  # pylint: disable=g-import-not-at-top
  runtime.configure_logging(verbose)
  try:
    if scale not in common.SCALES:
      raise ValueError(f"--scale={scale!r} is not one of: {', '.join(common.SCALES)}")
    runtime.use_local_runtime()
    for name in names:
      run(name, scale, output_dir, data_dir)
  except KeyboardInterrupt:
    print(f"\ninterrupted; {_KEPT}", file=sys.stderr)
    return entry_point.EXIT_INTERRUPTED
  except SystemExit as e:  # SIGTERM, see runtime.workers
    if e.code == entry_point.EXIT_TERMINATED:
      print(f"\nterminated (SIGTERM); {_KEPT}", file=sys.stderr)
    raise
  except entry_point.user_errors() as e:
    print(f"error: {entry_point.error_line(e)}", file=sys.stderr)
    return entry_point.EXIT_USAGE
  finally:
    runtime.shutdown()
  return 0
