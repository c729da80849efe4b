"""What every paper-reproduction experiment shares: scales, running a list of runs, writing results.

An experiment is a module with `NAME`, `TASK` (next_word or next_char) and
`execute(context) -> (rows, analysis)`; most plan a list of `PlannedRun`s (a
label, an `ExperimentConfig`, the parameters that go into the results table)
and run them on data loaded once. Long experiments run in stages
(`run_staged`): every run to round s, then every run to 2s, ..., with the
results written after each stage, so all methods have the same rounds behind
them whenever the job stops. Outputs go to `output_dir/papers/<scale>/<experiment>/`:
  runs/<label>/     each run's own directory (metrics.csv, checkpoints, ...;
                    result.json once it has run its budget)
  results.csv       one row per run: its parameters and final metrics
  summary.json      the analysis (tables the REPRODUCTION.md shows), command,
                    hardware, wall time
  *.png             the plots
Rerunning the same command resumes: a finished run's result row is read back
from its result.json (committed with metrics.csv, so a fresh clone without
checkpoints does not train it again), an unfinished one continues after its
latest checkpoint.
"""
from __future__ import annotations

import csv
import dataclasses
import datetime
import json
import math
import os
import platform
import statistics
import time
from typing import Any, Callable, Optional, Sequence

from tff_research import tasks
from tff_research.learning.config import ExperimentConfig

SCALES = ("smoke", "paper", "full")

# Word-level experiments (next_word): `--scale=smoke`: seconds per run, for
# tests. `--scale=paper` (and `full`, the same): the reduced-scale word-level
# runs, each experiment well under an hour on 2 cores.
SMOKE_BASE = ExperimentConfig(
    vocab_size=200, embedding_size=8, latent_size=16, output_bias_init="unigram", rounds=2,
    clients_per_round=3, max_elements_per_client=8, client_batch_size=4, eval_every=1,
    eval_clients=4, eval_batch_size=64)
# Batch 4: the median Shakespeare role has about 8 train windows, so batch 16
# would give most clients a single step per round (FedAvg would be FedSGD).
PAPER_BASE = ExperimentConfig(
    vocab_size=5000, embedding_size=64, latent_size=128, output_bias_init="unigram", rounds=80,
    clients_per_round=10, max_elements_per_client=64, client_batch_size=4, eval_every=10,
    eval_clients=50, eval_batch_size=128)


# The character task (TFF's Shakespeare baseline model, McMahan et al.'s
# split): `smoke` is a tiny model for tests; `paper` and `full` are the
# papers' model, and each experiment says how their rounds differ.
CHAR_SMOKE_BASE = ExperimentConfig(
    task="next_char", sequence_length=20, embedding_size=8, latent_size=16, num_layers=1, rounds=2,
    clients_per_round=3, max_elements_per_client=8, client_batch_size=4, eval_every=1, eval_clients=4,
    eval_batch_size=64, lstm_implementation="block")
CHAR_PAPER_BASE = ExperimentConfig(
    task="next_char", sequence_length=80, embedding_size=8, latent_size=256, num_layers=2,
    max_elements_per_client=0, eval_clients=0, eval_batch_size=128, lstm_implementation="block")


# Per task, its (smoke, paper) bases; `full` runs the paper base.
BASES: dict[str, tuple[ExperimentConfig, ExperimentConfig]] = {
    "next_word": (SMOKE_BASE, PAPER_BASE),
    "next_char": (CHAR_SMOKE_BASE, CHAR_PAPER_BASE),
}


def base_config(scale: str, task: str = "next_word") -> ExperimentConfig:
  """The base `ExperimentConfig` of `task`'s experiments at `scale`.

  Args:
    scale: one of SCALES.
    task: a `tasks.TASKS` name.

  Returns:
    The smoke base, or the paper base (for paper and full).

  Raises:
    ValueError: one line, for an unknown scale or task.
  """
  if scale not in SCALES:
    raise ValueError(f"--scale={scale!r} is not one of: {', '.join(SCALES)}")
  smoke, paper = BASES[tasks.get_task(task).name]
  return smoke if scale == "smoke" else paper


@dataclasses.dataclass(frozen=True)
class Context:
  """What an experiment's `execute` gets: its scale, data and output places."""
  scale: str
  data: Any                      # nwp.NWPData of the experiment's task
  out_dir: str                   # experiment_dir(output_dir, scale, name)
  output_dir: str
  data_dir: Optional[str] = None
  log: Callable[[str], None] = print
  until_round: Optional[int] = None   # stop every run there (it resumes later)
  publish: Callable[[list, dict], None] = lambda rows, analysis: None  # writes a stage's results

  def run(self, planned: Sequence["PlannedRun"], until_round: Optional[int] = None) -> list[dict[str, Any]]:
    planned = [dataclasses.replace(p, config=dataclasses.replace(p.config, data_dir=self.data_dir))
               for p in planned]
    return run_planned(planned, self.data, self.out_dir, self.log, until_round or self.until_round)


@dataclasses.dataclass(frozen=True)
class PlannedRun:
  label: str
  config: ExperimentConfig
  params: dict[str, Any]


def experiment_dir(output_dir: str, scale: str, name: str) -> str:
  return os.path.join(output_dir, "papers", scale, name)


def hardware() -> str:
  """CPU model and core count of this machine, for the record."""
  model = platform.processor() or platform.machine()
  try:
    with open("/proc/cpuinfo", encoding="utf-8") as f:
      for line in f:
        if line.startswith("model name"):
          model = line.split(":", 1)[1].strip()
          break
  except OSError:
    pass
  return f"{os.cpu_count()} cores, {model}, Python {platform.python_version()}, no GPU used"


def run_planned(planned: Sequence[PlannedRun], data, out_dir: str,
                log: Callable[[str], None] = print, until_round: Optional[int] = None) -> list[dict[str, Any]]:
  """Runs (or resumes) each planned run, up to `until_round` if given; returns one result row per run."""
  from tff_research.learning import experiment  # pylint: disable=g-import-not-at-top
  from tff_research.learning import training_loop  # pylint: disable=g-import-not-at-top
  rows = []
  for index, run in enumerate(planned, 1):
    config = dataclasses.replace(run.config, output_dir=os.path.join(out_dir, "runs"),
                                 experiment_name=run.label)
    if until_round:
      config = dataclasses.replace(config, rounds=min(config.rounds, until_round))
    log(f"[{index}/{len(planned)}] {run.label}: {run.params}")
    finished = finished_row(config, run)
    if finished is not None:
      rows.append(finished)
      log(f"    finished earlier ({RESULT_FILE}): final accuracy {finished.get('final_accuracy', float('nan')):.4f}")
      continue
    result = experiment.run_experiment(config, progress=False, plot=False, data=data,
                                       log=lambda line: None)
    history = training_loop.read_metrics_csv(os.path.join(config.run_dir, "metrics.csv"))
    train_seconds = sum(r.get("round_seconds", 0.0) for r in history)
    row = {"label": run.label, **run.params, "rounds": result.run.rounds_completed,
           "planned_rounds": run.config.rounds,
           "train_seconds": round(train_seconds, 1), "unigram_accuracy": result.unigram_accuracy}
    row.update({f"final_{k}": v for k, v in sorted(result.run.final_eval.items())})
    row["train_examples"] = int(sum(r.get("train/num_examples", 0.0) for r in history))
    if result.dp is not None:  # the noise the run trained with and the epsilon it reached
      row["dp_noise_multiplier"] = result.dp.noise_multiplier
      row.update({f"privacy_{k}": v for k, v in (result.privacy or {}).items()})
    rows.append(row)
    if row["rounds"] >= run.config.rounds:
      write_finished_row(config, run, row)
    log(f"    final accuracy {row.get('final_accuracy', float('nan')):.4f}, "
        f"{train_seconds:.0f} s of rounds")
  return rows


RESULT_FILE = "result.json"
# Settings that do not change what a run computes (where files go, what it prints).
_PLACE_KEYS = ("output_dir", "data_dir", "verbose", "progress")


def _settings(config: ExperimentConfig, run: PlannedRun) -> dict[str, Any]:
  settings = {k: v for k, v in dataclasses.asdict(config).items() if k not in _PLACE_KEYS}
  settings["rounds"] = run.config.rounds  # the budget, not a stage's stop
  return _as_json(settings)


def _as_json(value: Any) -> Any:
  """`value` as it reads back from JSON (tuples as lists, numpy scalars as numbers), for comparisons."""
  return json.loads(json.dumps(value, default=_json_default))


def finished_row(config: ExperimentConfig, run: PlannedRun) -> Optional[dict[str, Any]]:
  """The result row `run` wrote when it ran its whole budget with these settings; None otherwise."""
  path = os.path.join(config.run_dir, RESULT_FILE)
  if not os.path.isfile(path):
    return None
  with open(path, encoding="utf-8") as f:
    saved = json.load(f)
  if saved.get("settings") != _settings(config, run) or saved.get("params") != _as_json(run.params):
    return None
  return saved["row"]


def write_finished_row(config: ExperimentConfig, run: PlannedRun, row: dict[str, Any]) -> str:
  """Writes `row` as the result of `run` (atomically), for `finished_row` to read back."""
  return _write_json(os.path.join(config.run_dir, RESULT_FILE),
                     {"settings": _settings(config, run), "params": run.params, "row": row})


def _write_json(path: str, value: Any) -> str:
  """Writes `value` to `path` atomically (a stopped job leaves the old file or the new one, never half)."""
  tmp = path + ".tmp"
  with open(tmp, "w", encoding="utf-8") as f:
    json.dump(value, f, indent=2, default=_json_default)
  os.replace(tmp, path)
  return path


def completed_rounds(out_dir: str, label: str) -> int:
  """The last round run `label` recorded (0 if it has not started)."""
  from tff_research.learning import training_loop  # pylint: disable=g-import-not-at-top
  path = os.path.join(out_dir, "runs", label, "metrics.csv")
  rows = training_loop.read_metrics_csv(path) if os.path.isfile(path) else []
  return int(max((r["round"] for r in rows), default=0))


def _next_stop(context: Context, planned: Sequence[PlannedRun], stage_rounds: Optional[int]) -> Optional[int]:
  """The round the next stage runs to; None when no run can go further.

  That is the first multiple of `stage_rounds` above the rounds of the run
  furthest behind among those short of their budget (and of `until_round`),
  capped at the largest budget and `until_round`.
  """
  cap = max(p.config.rounds for p in planned)
  if context.until_round:
    cap = min(cap, context.until_round)
  done = [completed_rounds(context.out_dir, p.label) for p in planned]
  behind = [d for d, p in zip(done, planned) if d < min(p.config.rounds, cap)]
  if not behind:
    return None
  return min(cap, (min(behind) // stage_rounds + 1) * stage_rounds) if stage_rounds else cap


def run_staged(context: Context, planned: Sequence[PlannedRun],
               analyze: Callable[[list[dict[str, Any]]], dict[str, Any]],
               stage_rounds: Optional[int] = None,
               replan: Optional[Callable[[], Sequence[PlannedRun]]] = None
               ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
  """Every run to round `stage_rounds`, then to twice that, ...; results published after each stage.

  A restarted job begins at the first stage some unfinished run has not
  reached, so finished stages are not run again. A run that ended its
  budget is run (reported) again only when its plan changed.

  Args:
    context: the experiment's context (runs, publishes, logs).
    planned: the runs.
    analyze: result rows -> the analysis written with them.
    stage_rounds: rounds per stage (None: one stage).
    replan: called after every stage, returns the runs from then on (a
      plan that reads what the runs recorded: budgets, schedules, new runs).

  Returns:
    The last stage's rows (one per run of the last plan) and analysis.
  """
  stop = _next_stop(context, planned, stage_rounds) or min(
      max(p.config.rounds for p in planned), context.until_round or math.inf)
  reported: dict[str, tuple[PlannedRun, dict[str, Any]]] = {}
  while True:
    todo = [p for p in planned if p.label not in reported or reported[p.label][0] != p
            or reported[p.label][1]["rounds"] < min(p.config.rounds, stop)]
    reported.update({p.label: (p, row) for p, row in zip(todo, context.run(todo, until_round=stop))})
    rows = [reported[p.label][1] for p in planned]
    analysis = analyze(rows)
    planned = replan() if replan else planned
    following = _next_stop(context, planned, stage_rounds)
    if following is None and all(p.label in reported and reported[p.label][0] == p for p in planned):
      return rows, analysis
    context.publish(rows, analysis)
    context.log(f"stage: every run at round {stop} or its end; results written")
    stop = following or stop


def eval_curve(run_dir: str, metric: str = "eval/accuracy") -> list[tuple[int, float]]:
  """(round, value) for every round of `run_dir` that recorded `metric`."""
  from tff_research.learning import training_loop  # pylint: disable=g-import-not-at-top
  rows = training_loop.read_metrics_csv(os.path.join(run_dir, "metrics.csv"))
  return [(int(r["round"]), r[metric]) for r in rows if metric in r]


def best_so_far(curve: Sequence[tuple[int, float]]) -> list[tuple[int, float]]:
  """(round, best value up to that round) for each point of `curve`, as McMahan et al. draw their curves."""
  best, out = -math.inf, []
  for round_num, value in curve:
    best = max(best, value)
    out.append((round_num, best))
  return out


def rounds_to(curve: Sequence[tuple[int, float]], target: float) -> Optional[int]:
  """The first evaluated round at or above `target` (None if none is)."""
  return next((r for r, v in curve if v >= target - 1e-12), None)


def rounds_to_interpolated(curve: Sequence[tuple[int, float]], target: float) -> Optional[float]:
  """Where the best-so-far curve, linear between evaluated rounds, reaches `target` (McMahan et al. 2017).

  None where no evaluation reaches `target`, and where the first evaluation
  already does (nothing to interpolate from: the raw round is an upper bound).
  """
  best = best_so_far(curve)
  for (r0, v0), (r1, v1) in zip(best, best[1:]):
    if v1 >= target - 1e-12 > v0:
      return r0 + (target - v0) / (v1 - v0) * (r1 - r0)
  return None


def mean_std(values: Sequence[float]) -> tuple[float, float]:
  values = [v for v in values if not math.isnan(v)]
  if not values:
    return float("nan"), float("nan")
  return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def write_table(path: str, rows: Sequence[dict[str, Any]]) -> str:
  """Rows as CSV with the union of their keys as columns (in first-seen order)."""
  columns: list[str] = []
  for row in rows:
    columns.extend(k for k in row if k not in columns)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, "w", encoding="utf-8", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=columns)
    writer.writeheader()
    for row in rows:
      writer.writerow({k: _cell(v) for k, v in row.items()})
  return path


def _cell(value: Any) -> Any:
  if isinstance(value, float):
    return f"{value:.6g}"
  return value


def write_summary(out_dir: str, name: str, scale: str, command: str, wall_seconds: float,
                  analysis: dict[str, Any], rows: Sequence[dict[str, Any]]) -> str:
  summary = {
      "experiment": name, "scale": scale, "command": command,
      "date": datetime.date.today().isoformat(), "hardware": hardware(),
      "wall_seconds": round(wall_seconds, 1), "analysis": analysis, "runs": list(rows),
  }
  return _write_json(os.path.join(out_dir, "summary.json"), summary)


def _json_default(value: Any) -> Any:
  if hasattr(value, "item"):
    return value.item()
  raise TypeError(f"not JSON serializable: {type(value).__name__}")


def load_summary(output_dir: str, scale: str, name: str) -> Optional[dict[str, Any]]:
  path = os.path.join(experiment_dir(output_dir, scale, name), "summary.json")
  if not os.path.isfile(path):
    return None
  with open(path, encoding="utf-8") as f:
    return json.load(f)


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
  start = time.time()
  value = fn()
  return value, time.time() - start


def new_figure(panels: int = 1, width: float = 6.0):
  """A matplotlib figure with `panels` axes side by side.

  A plain `Figure`, not pyplot's: it leaves the caller's backend alone (a
  notebook shows it with `display(fig)`) and needs no closing.
  """
  from matplotlib import figure  # pylint: disable=g-import-not-at-top
  fig = figure.Figure(figsize=(width * panels, 4))
  axes = fig.subplots(1, panels, squeeze=False)
  return fig, list(axes[0])


def save_figure(fig, path: str) -> str:
  fig.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path, dpi=100)
  return path
