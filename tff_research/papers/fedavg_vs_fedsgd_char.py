"""McMahan et al. 2017, Table 2: Shakespeare LSTM (non-IID), rounds to 54 % test accuracy.

The paper (AISTATS 2017, arXiv:1602.05629): one client per speaking role,
an example is one line of a role, C = 0.1 of the clients a round, the
2 x LSTM 256 character model; FedSGD (E = 1, B = all) needed 3,906 rounds to
reach 54 %, FedAvg with E = 1, B = 10 164 rounds (23.8x) and E = 5, B = 10 41
rounds (95.3x), read from best-so-far accuracy curves interpolated linearly
between evaluations. Its Figure 3 uses learning rate 1.47 with B = 10 and
C = 0.1; each setting's rate was tuned on a multiplicative grid.

Here: the line unit (`UNIT`, data/next_char.py), FedAvg at 1.47, and these
rules, fixed before the runs (`paper` scale):

- Budgets: FedAvg E = 5 80 rounds, E = 1 300, FedSGD 300. A run that crosses
  54 % (its first evaluation at or above it) stops 10 rounds later.
- Evaluation on every test client, every 5 rounds for FedAvg and 10 for
  FedSGD, and at every stage's end (every 10 rounds); once a run's best
  accuracy so far is within 3 points of 54 %, every 2 rounds.
- Rounds to a target: the first evaluated round at or above it (raw) and
  the round where the best-so-far curve, interpolated linearly between
  evaluations, reaches it (interpolated; none where the first evaluation is
  already there).
- Plateau: checked at every tenth round r of a FedAvg run at eta 1.47; the
  run has plateaued when its best accuracy so far is below 54 % and exceeds
  its best up to round r - W by less than 0.5 points (W = 20 rounds for
  E = 5, 80 for E = 1, about half the paper's rounds to 54 %). The run stops
  there and the next two rates of the paper's grid, 1.47 x 10^(+-1/6), start
  for that setting with its budget and the same rules (no further rates).
- FedSGD's rate comes from a pilot: 1.47 x 10^(0, -1/3, -2/3) (the paper's
  grid resolution) for `FEDSGD_PILOT_ROUNDS`; the rate with the lowest mean
  training loss over the pilot's second half continues to FedSGD's budget
  (training loss, so the test clients do not pick it). FedSGD cannot run
  3,906 rounds, so its best accuracy at its budget (floored to 0.1 points)
  is a second target, and each FedAvg run's rounds to it against FedSGD's
  give a speed-up that shows a direction only (FedSGD's early rounds sit at
  the always-space plateau, so the ratio is not the paper's).

The experiment runs in stages (`common.run_staged`, 10 rounds at `paper`),
and `plan` re-reads every run's recorded metrics before each stage, so the
rules above act between stages and a restarted job plans the same runs.
Run labels carry the unit (`lines_...`), so runs of the speech unit in the
same directory are never resumed as line runs. `full` runs FedSGD the
paper's 3,906 rounds and every method on the grid 1.47 x 10^(-1/6, 0, 1/6),
with no pilot.
"""
from __future__ import annotations

import dataclasses
import math
import os
from typing import Any, Optional, Sequence

from tff_research.learning.config import ExperimentConfig
from tff_research.papers import common

NAME = "fedavg_vs_fedsgd_char"
TASK = "next_char"
UNIT = "line"  # McMahan et al.'s examples: the lines of a role
TARGET_ACCURACY = 0.54
PAPER = {"target_accuracy": TARGET_ACCURACY, "fraction_of_clients": 0.1, "learning_rate": 1.47,
         "clients": 1146, "train_characters": 3_564_579, "test_characters": 870_014,
         "updates_per_round": {"E=1, B=10": 7.4, "E=5, B=10": 37.1, "E=1, B=50": 1.5},
         "rounds": {"fedsgd": 3906, "fedavg_e1_b10": 164, "fedavg_e5_b10": 41},
         "speedup": {"fedavg_e1_b10": 23.8, "fedavg_e5_b10": 95.3}}
# Table 2's (E, B) settings for Shakespeare, for its u column.
TABLE2_SETTINGS = ((1, 10), (5, 10), (1, 50))
# label -> (algorithm, epochs, batch size); FedSGD's batch only bounds memory.
METHODS = {"fedsgd": ("fedsgd", 1, 256), "fedavg_e1_b10": ("fedavg", 1, 10), "fedavg_e5_b10": ("fedavg", 5, 10)}
ROUNDS = {"smoke": {"fedsgd": 3, "fedavg_e1_b10": 2, "fedavg_e5_b10": 2},
          "paper": {"fedsgd": 300, "fedavg_e1_b10": 300, "fedavg_e5_b10": 80},
          "full": {"fedsgd": 3906, "fedavg_e1_b10": 1000, "fedavg_e5_b10": 300}}
LR_EXPONENTS = {"smoke": (0.0,), "paper": (0.0,), "full": (-1 / 6, 0.0, 1 / 6)}
# FedSGD's pilot: its learning rates (as exponents of 10 on 1.47) and rounds.
FEDSGD_PILOT_EXPONENTS = {"smoke": (0.0, -1 / 3), "paper": (0.0, -1 / 3, -2 / 3), "full": ()}
FEDSGD_PILOT_ROUNDS = {"smoke": 2, "paper": 20, "full": 0}
EVAL_EVERY = {"smoke": {"fedsgd": 1, "fedavg": 1}, "paper": {"fedsgd": 10, "fedavg": 5},
              "full": {"fedsgd": 10, "fedavg": 10}}
STAGE_ROUNDS = {"smoke": None, "paper": 10, "full": 50}
# The rules of the module docstring.
DENSE_EVAL_EVERY = 2
DENSE_EVAL_FROM = TARGET_ACCURACY - 0.03
ROUNDS_AFTER_TARGET = 10
PLATEAU_WINDOW = {"fedavg_e1_b10": 80, "fedavg_e5_b10": 20}
PLATEAU_GAIN = 0.005
PLATEAU_CHECK_EVERY = 10
NEIGHBOUR_EXPONENTS = (1 / 6, -1 / 6)


def clients_per_round(num_train_clients: int, scale: str) -> int:
  """C = 0.1 of the train clients (the smoke scale: 3)."""
  return 3 if scale == "smoke" else max(1, round(PAPER["fraction_of_clients"] * num_train_clients))


def data_config(scale: str) -> ExperimentConfig:
  """The base configuration of every run, and of the data the runner loads for them (the line unit)."""
  return dataclasses.replace(common.base_config(scale, TASK), shakespeare_unit=UNIT)


def run_label(method: str, exponent: float) -> str:
  """'lines_fedavg_e5_b10', or with the rate where it is not 1.47: 'lines_fedsgd_lr0.68'."""
  lr = PAPER["learning_rate"] * 10 ** exponent
  return f"{UNIT}s_{method}" + ("" if exponent == 0 else f"_lr{lr:.2f}")


def _planned_run(scale: str, base: ExperimentConfig, method: str, exponent: float,
                 rounds: int, extra: dict[str, Any]) -> common.PlannedRun:
  """One run of `method` at 1.47 x 10^exponent with its scale's sparse evaluation schedule."""
  algorithm, epochs, batch = METHODS[method]
  lr = PAPER["learning_rate"] * 10 ** exponent
  # FedSGD applies the learning rate to the averaged gradient on the
  # server; FedAvg on the clients, with a plain server average.
  config = dataclasses.replace(
      base, algorithm=algorithm, client_epochs=epochs, client_batch_size=batch, rounds=rounds,
      client_learning_rate=lr, server_learning_rate=lr if algorithm == "fedsgd" else 1.0,
      eval_every=EVAL_EVERY[scale][algorithm])
  params = {"method": method, "epochs": epochs, "batch_size": "all" if algorithm == "fedsgd" else batch,
            "learning_rate": lr, "clients_per_round": config.clients_per_round, **extra}
  return common.PlannedRun(run_label(method, exponent), config, params)


def plan(scale: str, num_train_clients: int, out_dir: Optional[str] = None) -> list[common.PlannedRun]:
  """The runs of `scale`, with the budgets and evaluation schedules the rules give for what is recorded.

  Args:
    scale: one of common.SCALES.
    num_train_clients: the data's train clients (C = 0.1 of them a round).
    out_dir: the experiment's directory; its runs' metrics.csv feed the rules
      (None or a fresh directory: the plan before any round).

  Returns:
    Every run: FedSGD's pilot rates (only the chosen one past the pilot's
    rounds), each FedAvg setting, and the neighbouring rates of a setting
    whose run plateaued.
  """
  base = dataclasses.replace(data_config(scale), clients_per_round=clients_per_round(num_train_clients, scale),
                             server_optimizer="sgd")
  pilot = FEDSGD_PILOT_EXPONENTS[scale]
  chosen = choose_fedsgd_exponent(scale, out_dir) if pilot else None
  runs = []
  for exponent in pilot:
    rounds = ROUNDS[scale]["fedsgd"] if exponent == chosen else FEDSGD_PILOT_ROUNDS[scale]
    extra = {"pilot": "pilot" if chosen is None else "chosen" if exponent == chosen else "pilot only"}
    runs.append(_planned_run(scale, base, "fedsgd", exponent, rounds, extra))
  grid = [(e, m) for e in LR_EXPONENTS[scale] for m in METHODS if not (pilot and m == "fedsgd")]
  runs += [_planned_run(scale, base, m, e, ROUNDS[scale][m], {}) for e, m in grid]
  runs = [_scheduled(run, out_dir) for run in runs]
  spawn = not set(NEIGHBOUR_EXPONENTS) & set(LR_EXPONENTS[scale])  # `full` runs the neighbours anyway
  for run in list(runs):
    if spawn and "plateau" in run.params.get("stop", "") and math.isclose(
        run.params["learning_rate"], PAPER["learning_rate"]):
      method = run.params["method"]
      neighbours = [_planned_run(scale, base, method, e, ROUNDS[scale][method], {"neighbour_of": run.label})
                    for e in NEIGHBOUR_EXPONENTS]
      runs += [_scheduled(n, out_dir) for n in neighbours]
  return runs


def _scheduled(run: common.PlannedRun, out_dir: Optional[str]) -> common.PlannedRun:
  """`run` with its budget cut by the stop rules and its evaluation made dense near the target."""
  curve = recorded_curve(out_dir, run.label)
  config, params = run.config, dict(run.params)
  crossed = common.rounds_to(curve, TARGET_ACCURACY)
  window = PLATEAU_WINDOW.get(params["method"])
  plateau = plateau_round(curve, window) if window else None
  if crossed is not None and crossed + ROUNDS_AFTER_TARGET < config.rounds:
    config, params["stop"] = dataclasses.replace(config, rounds=crossed + ROUNDS_AFTER_TARGET), "54 % + 10 rounds"
  elif crossed is None and plateau is not None:
    config, params["stop"] = dataclasses.replace(config, rounds=plateau), f"plateau at round {plateau}"
  if max((v for _, v in curve), default=0.0) >= DENSE_EVAL_FROM:
    config = dataclasses.replace(config, eval_every=min(config.eval_every, DENSE_EVAL_EVERY))
  return dataclasses.replace(run, config=config, params=params)


def recorded_curve(out_dir: Optional[str], label: str, metric: str = "eval/accuracy") -> list[tuple[int, float]]:
  """`common.eval_curve` of run `label` in `out_dir`; empty where the run has not started."""
  run_dir = os.path.join(out_dir, "runs", label) if out_dir else None
  return common.eval_curve(run_dir, metric) if run_dir and os.path.isfile(os.path.join(run_dir, "metrics.csv")) else []


def plateau_round(curve: Sequence[tuple[int, float]], window: int) -> Optional[int]:
  """The first tenth round r >= window where best-so-far accuracy < 54 % gained < 0.5 points since r - window."""
  best = common.best_so_far(curve)
  for r, b in best:
    if r < window or r % PLATEAU_CHECK_EVERY or b >= TARGET_ACCURACY:
      continue
    before = max((v for q, v in best if q <= r - window), default=None)
    if before is not None and b - before < PLATEAU_GAIN:
      return r
  return None


def pilot_loss(out_dir: Optional[str], label: str, pilot_rounds: int) -> float:
  """Mean training loss of run `label` over the pilot's second half (inf where a round diverged or is missing)."""
  losses = [v for r, v in recorded_curve(out_dir, label, "train/loss") if pilot_rounds // 2 < r <= pilot_rounds]
  if len(losses) < pilot_rounds - pilot_rounds // 2 or not all(math.isfinite(v) for v in losses):
    return math.inf
  return sum(losses) / len(losses)


def pilot_losses(scale: str, out_dir: Optional[str]) -> dict[str, float]:
  """{pilot run label: its `pilot_loss`} (inf for a pilot not yet run to its end)."""
  return {run_label("fedsgd", e): pilot_loss(out_dir, run_label("fedsgd", e), FEDSGD_PILOT_ROUNDS[scale])
          for e in FEDSGD_PILOT_EXPONENTS[scale]}


def choose_fedsgd_exponent(scale: str, out_dir: Optional[str]) -> Optional[float]:
  """The pilot rate with the lowest `pilot_loss`; None until every pilot rate has run its rounds, or if all diverged."""
  exponents = FEDSGD_PILOT_EXPONENTS[scale]
  done = [common.completed_rounds(out_dir, run_label("fedsgd", e)) if out_dir else 0 for e in exponents]
  if not exponents or min(done) < FEDSGD_PILOT_ROUNDS[scale]:
    return None
  losses = list(pilot_losses(scale, out_dir).values())
  if not any(math.isfinite(v) for v in losses):
    return None
  return exponents[losses.index(min(losses))]


def _fedsgd_reference(table: list[dict[str, Any]]) -> Optional[dict[str, Any]]:
  """FedSGD's run at its chosen rate (else its best pilot), whose best accuracy is the second target."""
  fedsgd = [t for t in table if t["method"] == "fedsgd"]
  fedsgd = [t for t in fedsgd if t.get("pilot") == "chosen"] or fedsgd
  return max(fedsgd, key=lambda t: t["best_accuracy"] if math.isfinite(t["best_accuracy"]) else -1.0, default=None)


def add_speedups(table: list[dict[str, Any]], second_target: Optional[float], reference: Optional[str]) -> None:
  """Each run's rounds to `second_target` and each FedAvg run's speed-up over FedSGD there (a direction).

  Both ends are interpolated rounds; a run already there at its first
  evaluation has only its raw round, an upper bound on its rounds, so its
  speed-up is a lower bound (`speedup_is_lower_bound`).
  """
  for row in table:
    curve = row.pop("_curve")
    row.update(_crossings(curve, second_target, "fedsgd_best") if second_target else
               {"rounds_to_fedsgd_best": None, "rounds_to_fedsgd_best_interpolated": None})
  fedsgd = next((t for t in table if t["label"] == reference), None)
  base = fedsgd and (fedsgd["rounds_to_fedsgd_best_interpolated"] or fedsgd["rounds_to_fedsgd_best"])
  for row in table:
    rounds = row["rounds_to_fedsgd_best_interpolated"] or row["rounds_to_fedsgd_best"]
    row["speedup_at_fedsgd_best"], row["speedup_is_lower_bound"] = None, False
    if row["method"] != "fedsgd" and base and rounds:
      row["speedup_at_fedsgd_best"] = base / rounds
      row["speedup_is_lower_bound"] = row["rounds_to_fedsgd_best_interpolated"] is None


def _crossings(curve: Sequence[tuple[int, float]], target: float, name: str) -> dict[str, Any]:
  """{rounds_to_NAME: raw first evaluated round at or above `target`, rounds_to_NAME_interpolated: ...}."""
  return {f"rounds_to_{name}": common.rounds_to(curve, target),
          f"rounds_to_{name}_interpolated": common.rounds_to_interpolated(curve, target)}


def _table_row(row: dict[str, Any], run_dir: str) -> dict[str, Any]:
  """One run's line of the table: its settings, accuracy, rounds to 54 % and round times."""
  curve = common.eval_curve(run_dir)
  seconds = sorted(v for _, v in common.eval_curve(run_dir, "round_seconds"))
  keys = ("label", "method", "pilot", "neighbour_of", "stop", "epochs", "batch_size", "learning_rate",
          "rounds", "planned_rounds", "final_accuracy", "train_seconds")
  return {**{k: row.get(k) for k in keys}, "evaluations": len(curve),
          "best_accuracy": max((v for _, v in curve), default=float("nan")),
          **_crossings(curve, TARGET_ACCURACY, "54"),
          "median_round_seconds": seconds[len(seconds) // 2] if seconds else None, "_curve": curve}


def analyze(rows: list[dict[str, Any]], out_dir: str, scale: str = "paper") -> dict[str, Any]:
  """Rounds to 54 % (raw and interpolated); and to FedSGD's best accuracy, where FedSGD stops short of 54 %."""
  table = [_table_row(row, os.path.join(out_dir, "runs", row["label"])) for row in rows]
  reference = _fedsgd_reference(table)
  best = reference["best_accuracy"] if reference else float("nan")
  # FedSGD's best accuracy over its budget, floored to 0.1 points, is the second target.
  second_target = math.floor(best * 1000) / 1000 if math.isfinite(best) and best > 0 else None
  add_speedups(table, second_target, reference["label"] if reference else None)
  running = [t["rounds"] for t in table if t["rounds"] < t["planned_rounds"]]
  return {"unit": UNIT, "table": table, "paper": PAPER, "fedsgd_label": reference and reference["label"],
          "fedsgd_best": best, "second_target": second_target,
          "clients_per_round": rows[0].get("clients_per_round") if rows else None,
          "rounds_completed": min(running) if running else max((t["rounds"] for t in table), default=0),
          "fedsgd_pilot_losses": pilot_losses(scale, out_dir) if FEDSGD_PILOT_EXPONENTS[scale] else {},
          "unigram_accuracy": rows[0]["unigram_accuracy"] if rows else float("nan")}


def data_figures(data) -> dict[str, Any]:
  """The split's clients, characters and windows, and u for Table 2's settings (as the paper counts them)."""
  from tff_research.data import next_char  # pylint: disable=g-import-not-at-top
  figures = next_char.split_figures(data)
  figures["updates_per_round"] = {f"E={e}, B={b}": next_char.updates_per_round(data, e, b)
                                  for e, b in TABLE2_SETTINGS}
  return figures


def execute(context: common.Context) -> tuple[list[dict[str, Any]], dict[str, Any]]:
  num_train_clients = len(context.data.train_client_ids)
  figures = data_figures(context.data)

  def replan() -> list[common.PlannedRun]:
    return plan(context.scale, num_train_clients, context.out_dir)

  def analyze_stage(rows):
    return {**analyze(rows, context.out_dir, context.scale), "data": figures}

  return common.run_staged(context, replan(), analyze_stage, STAGE_ROUNDS[context.scale], replan=replan)
