"""McMahan et al. 2017, Table 2: Shakespeare LSTM (non-IID), rounds to 54 % test accuracy.

The paper (AISTATS 2017, arXiv:1602.05629): one client per speaking role with
at least two lines, C = 0.1 of the clients a round, the 2 x LSTM 256
character model; FedSGD (E = 1, B = all) needed 3,906 rounds to reach 54 %,
FedAvg with E = 1, B = 10 164 rounds (23.8x) and E = 5, B = 10 41 rounds
(95.3x). Its Figure 3 uses learning rate 1.47 with B = 10 and C = 0.1.

Here: the same three methods at that learning rate on our split (data/next_char.py),
with round budgets fixed in advance for 2 cores (`paper`): FedSGD cannot run
3,906 rounds, so it reports its accuracy at its budget and the rounds FedAvg
needed to reach that same accuracy. `full` runs FedSGD the paper's 3,906 rounds and
a client learning-rate grid of 1.47 x 10^(-1/6, 0, 1/6) (the paper's grid resolution).
"""
from __future__ import annotations

import dataclasses
import math
import os
from typing import Any, Optional, Sequence

from tff_research.papers import common

NAME = "fedavg_vs_fedsgd_char"
TASK = "next_char"
TARGET_ACCURACY = 0.54
PAPER = {"target_accuracy": TARGET_ACCURACY, "fraction_of_clients": 0.1, "learning_rate": 1.47,
         "clients": 1146, "train_characters": 3_564_579, "test_characters": 870_014,
         "rounds": {"fedsgd": 3906, "fedavg_e1_b10": 164, "fedavg_e5_b10": 41},
         "speedup": {"fedavg_e1_b10": 23.8, "fedavg_e5_b10": 95.3}}
# label -> (algorithm, epochs, batch size); FedSGD's batch only bounds memory.
METHODS = {"fedsgd": ("fedsgd", 1, 256), "fedavg_e1_b10": ("fedavg", 1, 10), "fedavg_e5_b10": ("fedavg", 5, 10)}
ROUNDS = {"smoke": {"fedsgd": 3, "fedavg_e1_b10": 2, "fedavg_e5_b10": 2},
          "paper": {"fedsgd": 300, "fedavg_e1_b10": 200, "fedavg_e5_b10": 60},
          "full": {"fedsgd": 3906, "fedavg_e1_b10": 1000, "fedavg_e5_b10": 300}}
LR_EXPONENTS = {"smoke": (0.0,), "paper": (0.0,), "full": (-1 / 6, 0.0, 1 / 6)}
EVAL_EVERY = {"smoke": 1, "paper": 5, "full": 10}
STAGE_ROUNDS = {"smoke": None, "paper": 10, "full": 50}


def clients_per_round(num_train_clients: int, scale: str) -> int:
  """C = 0.1 of the train clients (the smoke scale: 3)."""
  return 3 if scale == "smoke" else max(1, round(PAPER["fraction_of_clients"] * num_train_clients))


def plan(scale: str, num_train_clients: int) -> list[common.PlannedRun]:
  base = dataclasses.replace(common.base_config(scale, TASK),
                             clients_per_round=clients_per_round(num_train_clients, scale),
                             eval_every=EVAL_EVERY[scale], server_optimizer="sgd")
  runs = []
  for exponent in LR_EXPONENTS[scale]:
    lr = PAPER["learning_rate"] * 10 ** exponent
    suffix = "" if exponent == 0 else f"_lr{lr:.2f}"
    for method, (algorithm, epochs, batch) in METHODS.items():
      # FedSGD applies the learning rate to the averaged gradient on the
      # server; FedAvg on the clients, with a plain server average.
      config = dataclasses.replace(
          base, algorithm=algorithm, client_epochs=epochs, client_batch_size=batch,
          rounds=ROUNDS[scale][method], client_learning_rate=lr,
          server_learning_rate=lr if algorithm == "fedsgd" else 1.0)
      runs.append(common.PlannedRun(method + suffix, config, {
          "method": method, "epochs": epochs, "batch_size": "all" if algorithm == "fedsgd" else batch,
          "learning_rate": lr, "clients_per_round": config.clients_per_round}))
  return runs


def rounds_to(curve: Sequence[tuple[int, float]], target: float) -> Optional[int]:
  return next((r for r, v in curve if v >= target - 1e-12), None)


def analyze(rows: list[dict[str, Any]], out_dir: str) -> dict[str, Any]:
  """Rounds to 54 %; and to FedSGD's accuracy at its budget, where FedSGD stops short of 54 %."""
  curves = {r["label"]: common.eval_curve(os.path.join(out_dir, "runs", r["label"])) for r in rows}
  fedsgd = [r for r in rows if r["method"] == "fedsgd"]
  best_fedsgd = max(fedsgd, key=lambda r: max((v for _, v in curves[r["label"]]), default=0.0), default=None)
  fedsgd_final = (curves[best_fedsgd["label"]] or [(0, float("nan"))])[-1] if best_fedsgd else None
  # FedSGD's last evaluated accuracy, floored to 0.1 points, is the second target.
  second_target = math.floor(fedsgd_final[1] * 1000) / 1000 if fedsgd_final and fedsgd_final[1] > 0 else None
  table = []
  for row in rows:
    curve = curves[row["label"]]
    table.append({
        "label": row["label"], "method": row["method"], "epochs": row["epochs"], "batch_size": row["batch_size"],
        "learning_rate": row["learning_rate"], "rounds": row["rounds"], "planned_rounds": row["planned_rounds"],
        "final_accuracy": row.get("final_accuracy"),
        "best_accuracy": max((v for _, v in curve), default=float("nan")),
        "rounds_to_54": rounds_to(curve, TARGET_ACCURACY),
        "rounds_to_fedsgd_final": rounds_to(curve, second_target) if second_target else None,
        "train_seconds": row["train_seconds"]})
  return {"table": table, "paper": PAPER, "fedsgd_final": fedsgd_final,
          "second_target": second_target, "clients_per_round": rows[0].get("clients_per_round") if rows else None,
          "rounds_completed": min((t["rounds"] for t in table), default=0),
          "unigram_accuracy": rows[0]["unigram_accuracy"] if rows else float("nan")}


def execute(context: common.Context) -> tuple[list[dict[str, Any]], dict[str, Any]]:
  planned = plan(context.scale, len(context.data.train_client_ids))
  return common.run_staged(context, planned, lambda rows: analyze(rows, context.out_dir),
                           STAGE_ROUNDS[context.scale])
