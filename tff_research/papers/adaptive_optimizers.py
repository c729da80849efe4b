"""Experiment 2 — adaptive server optimizers (Reddi et al. 2021, "Adaptive Federated Optimization").

Paper (Stack Overflow NWP, their Table 8 best learning rates): client SGD lr
10^-0.5; server lr FedAdagrad 10^-1.5, FedAdam 10^-2, FedYogi 10^-2, FedAvgM
10^0, FedAvg 10^0; epsilon (tau) Adagrad 10^-4, Adam/Yogi 10^-5. Their
finding on NWP: the adaptive methods end ahead of FedAvg.

Here: each optimizer at the paper's server lr and one half-decade either side
(seed 0), then the best lr of each with more seeds; final test accuracy
without special tokens as mean ± std over the seeds.
"""
from __future__ import annotations

import dataclasses
from typing import Any

from tff_research.papers import common

NAME = "adaptive_optimizers"
TASK = "next_word"
CLIENT_LR = 10 ** -0.5
# optimizer name -> (algorithm name, paper server lr, epsilon)
OPTIMIZERS = {
    "sgd": ("FedAvg", 10 ** 0, 1e-3),
    "sgdm": ("FedAvgM", 10 ** 0, 1e-3),
    "adagrad": ("FedAdagrad", 10 ** -1.5, 1e-4),
    "adam": ("FedAdam", 10 ** -2, 1e-5),
    "yogi": ("FedYogi", 10 ** -2, 1e-5),
}
GRID_EXPONENTS = {"smoke": (0.0,), "paper": (-0.5, 0.0, 0.5)}
EXTRA_SEEDS = {"smoke": (), "paper": (1, 2)}  # smoke: the grid alone (tests)
# Smoke (tests) runs FedAvg and one adaptive method; the plan of all five is tested apart.
SMOKE_OPTIMIZERS = ("sgd", "adam")


def optimizers(scale: str) -> tuple[str, ...]:
  return SMOKE_OPTIMIZERS if scale == "smoke" else tuple(OPTIMIZERS)


def run_label(optimizer: str, lr_exponent: float, seed: int) -> str:
  """The run directory name of `optimizer` at 10^lr_exponent x the paper's lr with `seed`."""
  return f"{optimizer}_lr{lr_exponent:+.1f}_seed{seed}"


def _run(base, optimizer: str, lr_exponent: float, seed: int) -> common.PlannedRun:
  algorithm, paper_lr, epsilon = OPTIMIZERS[optimizer]
  lr = paper_lr * 10 ** lr_exponent
  label = run_label(optimizer, lr_exponent, seed)
  config = dataclasses.replace(base, server_optimizer=optimizer, server_learning_rate=lr,
                               server_epsilon=epsilon, client_learning_rate=CLIENT_LR, seed=seed)
  return common.PlannedRun(label, config, {"algorithm": algorithm, "server_optimizer": optimizer,
                                           "server_lr": lr, "lr_vs_paper": f"10^{lr_exponent:+.1f}",
                                           "seed": seed})


def plan_grid(scale: str) -> list[common.PlannedRun]:
  base = common.base_config(scale)
  return [_run(base, opt, e, 0) for opt in optimizers(scale) for e in GRID_EXPONENTS[scale]]


def best_exponents(grid_rows: list[dict[str, Any]]) -> dict[str, float]:
  """Per optimizer, the grid lr exponent with the highest final accuracy (seed 0)."""
  best: dict[str, tuple[float, float]] = {}
  for row in grid_rows:
    exponent = float(row["lr_vs_paper"].split("^")[1])
    accuracy = row.get("final_accuracy", float("-inf"))
    if row["server_optimizer"] not in best or accuracy > best[row["server_optimizer"]][1]:
      best[row["server_optimizer"]] = (exponent, accuracy)
  return {opt: exp for opt, (exp, _) in best.items()}


def plan_seeds(scale: str, exponents: dict[str, float]) -> list[common.PlannedRun]:
  base = common.base_config(scale)
  return [_run(base, opt, exponents[opt], seed) for opt in optimizers(scale) for seed in EXTRA_SEEDS[scale]]


def analyze(grid_rows: list[dict[str, Any]], seed_rows: list[dict[str, Any]]) -> dict[str, Any]:
  exponents = best_exponents(grid_rows)
  table = []
  for opt, (algorithm, _, _) in OPTIMIZERS.items():
    if opt not in exponents:  # not planned at this scale
      continue
    chosen = [r for r in grid_rows + seed_rows if r["server_optimizer"] == opt
              and float(r["lr_vs_paper"].split("^")[1]) == exponents[opt]]
    accuracies = [r["final_accuracy"] for r in chosen]
    mean, std = common.mean_std(accuracies)
    table.append({"algorithm": algorithm, "server_lr": chosen[0]["server_lr"],
                  "lr_vs_paper": chosen[0]["lr_vs_paper"], "seeds": len(chosen),
                  "accuracy_mean": mean, "accuracy_std": std,
                  "recall_at_3_mean": common.mean_std([r["final_recall_at_3"] for r in chosen])[0]})
  fedavg = next(t for t in table if t["algorithm"] == "FedAvg")
  adaptive = [t for t in table if t["algorithm"] in ("FedAdagrad", "FedAdam", "FedYogi")]
  ranking = sorted(table, key=lambda t: -t["accuracy_mean"])
  return {
      "table": table,
      "ranking": [t["algorithm"] for t in ranking],
      "adaptive_ahead_of_fedavg": {t["algorithm"]: t["accuracy_mean"] > fedavg["accuracy_mean"]
                                   for t in adaptive},
      "best_algorithm": ranking[0]["algorithm"],
      "best_server_optimizer": next(o for o, v in OPTIMIZERS.items() if v[0] == ranking[0]["algorithm"]),
      "best_server_lr": ranking[0]["server_lr"],
      "unigram_accuracy": grid_rows[0]["unigram_accuracy"] if grid_rows else float("nan"),
      "grid": [{k: r[k] for k in ("algorithm", "server_lr", "lr_vs_paper", "seed", "final_accuracy")}
               for r in grid_rows],
  }


def execute(context: common.Context) -> tuple[list[dict[str, Any]], dict[str, Any]]:
  """The grid at seed 0, then each optimizer's best lr with more seeds."""
  grid = context.run(plan_grid(context.scale))
  seeds = context.run(plan_seeds(context.scale, best_exponents(grid)))
  return grid + seeds, analyze(grid, seeds)
