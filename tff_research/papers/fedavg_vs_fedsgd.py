"""Experiment 1 — FedAvg vs FedSGD, rounds to a target accuracy (McMahan et al. 2017).

Paper: on the large word-level LSTM, FedSGD needed 820 rounds to reach 10.5 %
accuracy and FedAvg 35 (23x fewer); on Shakespeare (non-IID) FedAvg with E=5,
B=10 reached 54 % in 41 rounds vs FedSGD's 3906.

Here: FedSGD (one full-data gradient per client per round, server SGD) and
FedAvg with a few (E, B) settings, all with plain server averaging (server
SGD), the same clients per round and the same initial model. The target is
the highest accuracy every run reached (rounded down to 0.1 points), so all
runs reach it; rounds-to-target is the first evaluated round at or above it.
"""
from __future__ import annotations

import dataclasses
import math
import os
from typing import Any, Optional, Sequence

from tff_research.papers import common

NAME = "fedavg_vs_fedsgd"
TASK = "next_word"
PAPER = {"word_lstm": {"fedsgd_rounds": 820, "fedavg_rounds": 35, "target_accuracy": 0.105, "speedup": 23.4},
         "shakespeare": {"fedsgd_rounds": 3906, "fedavg_rounds": 41, "target_accuracy": 0.54,
                         "speedup": 95.3}}

# (label, algorithm, epochs, batch size, rounds, server learning rate). FedSGD
# gets two server learning rates (the paper tuned each method's rate); its
# better run is the one compared with.
_PAPER_RUNS = (("fedsgd_lr1", "fedsgd", 1, 64, 300, 1.0),
               ("fedsgd_lr4", "fedsgd", 1, 64, 300, 4.0),
               ("fedavg_E1_B16", "fedavg", 1, 16, 100, 1.0),
               ("fedavg_E1_B4", "fedavg", 1, 4, 100, 1.0),
               ("fedavg_E2_B4", "fedavg", 2, 4, 100, 1.0))
_SMOKE_RUNS = (("fedsgd_lr1", "fedsgd", 1, 8, 3, 1.0),
               ("fedavg_E2_B2", "fedavg", 2, 2, 2, 1.0))
# Below this, "reaching" the target means nothing (the model still predicts
# only special tokens).
_MIN_TARGET = 0.001


def plan(scale: str) -> list[common.PlannedRun]:
  base = common.base_config(scale)
  runs = []
  for label, algorithm, epochs, batch, rounds, server_lr in (
      _SMOKE_RUNS if scale == "smoke" else _PAPER_RUNS):
    eval_every = 1 if scale == "smoke" else (10 if algorithm == "fedsgd" else 5)
    config = dataclasses.replace(
        base, algorithm=algorithm, client_epochs=epochs, client_batch_size=batch, rounds=rounds,
        client_optimizer="sgd", client_learning_rate=1.0, server_optimizer="sgd",
        server_learning_rate=server_lr, eval_every=eval_every)
    runs.append(common.PlannedRun(label, config, {
        "algorithm": algorithm, "epochs": epochs if algorithm == "fedavg" else "-",
        "batch_size": batch if algorithm == "fedavg" else "all", "server_lr": server_lr}))
  return runs


def rounds_to_target(curve: Sequence[tuple[int, float]], target: float) -> Optional[int]:
  for round_num, value in curve:
    if value >= target - 1e-12:
      return round_num
  return None


def analyze(rows: list[dict[str, Any]], out_dir: str) -> dict[str, Any]:
  """Rounds to a target accuracy per run, and each FedAvg run's speed-up over the best FedSGD run.

  The target is the best accuracy the best FedSGD run reached (floored to 0.1
  points), so FedSGD reaches it by construction and the speed-up is FedSGD's
  rounds to it over FedAvg's. When FedSGD never rose above `_MIN_TARGET` (the
  model still predicts only special tokens), the target is the lowest best
  accuracy among the FedAvg runs that did, FedSGD is "not reached", and the
  speed-up is a lower bound: FedSGD's whole budget over FedAvg's rounds.
  Runs that never reach the target are "not reached".
  """
  curves = {r["label"]: common.eval_curve(os.path.join(out_dir, "runs", r["label"])) for r in rows}
  best = {label: max((v for _, v in curve), default=float("nan")) for label, curve in curves.items()}
  fedsgd = [r for r in rows if r["algorithm"] == "fedsgd"]
  fedavg = [r for r in rows if r["algorithm"] == "fedavg"]
  best_fedsgd = max(fedsgd, key=lambda r: best[r["label"]]) if fedsgd else None
  floor = lambda v: math.floor(v * 1000) / 1000  # noqa: E731
  lower_bound = False
  if best_fedsgd is not None and best[best_fedsgd["label"]] >= _MIN_TARGET:
    target = floor(best[best_fedsgd["label"]])
  else:
    learned = [best[r["label"]] for r in fedavg if best[r["label"]] >= _MIN_TARGET]
    target = floor(min(learned)) if learned else _MIN_TARGET
    lower_bound = best_fedsgd is not None
  fedsgd_rounds = rounds_to_target(curves[best_fedsgd["label"]], target) if best_fedsgd else None
  fedsgd_budget = best_fedsgd["rounds"] if best_fedsgd else None
  table = []
  for row in rows:
    reached = rounds_to_target(curves[row["label"]], target)
    speedup = None
    if reached and row["algorithm"] == "fedavg" and (fedsgd_rounds or fedsgd_budget):
      speedup = (fedsgd_rounds or fedsgd_budget) / reached
    row.update({"best_accuracy": best[row["label"]], "rounds_to_target": reached,
                "speedup_vs_fedsgd": speedup,
                "speedup_is_lower_bound": bool(speedup and not fedsgd_rounds)})
    table.append({k: row[k] for k in ("label", "algorithm", "epochs", "batch_size", "server_lr", "rounds",
                                      "best_accuracy", "rounds_to_target", "speedup_vs_fedsgd",
                                      "speedup_is_lower_bound", "train_seconds")})
  unigram = rows[0]["unigram_accuracy"] if rows else float("nan")
  return {"target_accuracy": target, "target_is_fedavg_only": lower_bound,
          "fedsgd_compared": best_fedsgd["label"] if best_fedsgd else None,
          "unigram_accuracy": unigram, "table": table, "paper": PAPER}


def execute(context: common.Context) -> tuple[list[dict[str, Any]], dict[str, Any]]:
  rows = context.run(plan(context.scale))
  return rows, analyze(rows, context.out_dir)
