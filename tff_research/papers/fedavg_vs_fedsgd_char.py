"""McMahan et al. 2017, Table 2: Shakespeare LSTM (non-IID), rounds to 54 % test accuracy.

The paper (AISTATS 2017, arXiv:1602.05629): one client per speaking role with
at least two lines, C = 0.1 of the clients a round, the 2 x LSTM 256
character model; FedSGD (E = 1, B = all) needed 3,906 rounds to reach 54 %,
FedAvg with E = 1, B = 10 164 rounds (23.8x) and E = 5, B = 10 41 rounds
(95.3x). Its Figure 3 uses learning rate 1.47 with B = 10 and C = 0.1; each
setting's rate was tuned on a multiplicative grid.

Here: FedAvg at 1.47 on our split (data/next_char.py), with round budgets
fixed in advance for 2 cores (`paper`). FedSGD's rate comes from a pilot fixed
in advance: 1.47 x 10^(0, -1/3, -2/3) (the paper's grid resolution) for
`FEDSGD_PILOT_ROUNDS`; the rate with the lowest mean training loss over the
pilot's second half continues to FedSGD's budget (training loss, so the test
clients do not pick it). FedSGD cannot run 3,906 rounds, so it reports its
accuracy at its budget and the rounds FedAvg needed to reach that accuracy.
`full` runs FedSGD the paper's 3,906 rounds and every method on the grid
1.47 x 10^(-1/6, 0, 1/6), with no pilot.
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
# FedSGD's pilot: its learning rates (as exponents of 10 on 1.47) and rounds.
FEDSGD_PILOT_EXPONENTS = {"smoke": (0.0, -1 / 3), "paper": (0.0, -1 / 3, -2 / 3), "full": ()}
FEDSGD_PILOT_ROUNDS = {"smoke": 2, "paper": 20, "full": 0}
EVAL_EVERY = {"smoke": 1, "paper": 5, "full": 10}
STAGE_ROUNDS = {"smoke": None, "paper": 10, "full": 50}


def clients_per_round(num_train_clients: int, scale: str) -> int:
  """C = 0.1 of the train clients (the smoke scale: 3)."""
  return 3 if scale == "smoke" else max(1, round(PAPER["fraction_of_clients"] * num_train_clients))


def plan(scale: str, num_train_clients: int,
         fedsgd_exponent: Optional[float] = None) -> list[common.PlannedRun]:
  """The runs of `scale`; with a FedSGD pilot, only `fedsgd_exponent`'s rate gets FedSGD's full budget.

  Until the pilot has chosen (`fedsgd_exponent` None), every pilot rate has
  the pilot's rounds as its budget.
  """
  base = dataclasses.replace(common.base_config(scale, TASK),
                             clients_per_round=clients_per_round(num_train_clients, scale),
                             eval_every=EVAL_EVERY[scale], server_optimizer="sgd")
  pilot = FEDSGD_PILOT_EXPONENTS[scale]
  grid = [(e, "fedsgd") for e in pilot]
  grid += [(e, m) for e in LR_EXPONENTS[scale] for m in METHODS if not (pilot and m == "fedsgd")]
  runs = []
  for exponent, method in grid:
    algorithm, epochs, batch = METHODS[method]
    lr = PAPER["learning_rate"] * 10 ** exponent
    rounds = ROUNDS[scale][method]
    if pilot and method == "fedsgd" and exponent != fedsgd_exponent:
      rounds = FEDSGD_PILOT_ROUNDS[scale]
    # FedSGD applies the learning rate to the averaged gradient on the
    # server; FedAvg on the clients, with a plain server average.
    config = dataclasses.replace(
        base, algorithm=algorithm, client_epochs=epochs, client_batch_size=batch, rounds=rounds,
        client_learning_rate=lr, server_learning_rate=lr if algorithm == "fedsgd" else 1.0)
    params = {"method": method, "epochs": epochs, "batch_size": "all" if algorithm == "fedsgd" else batch,
              "learning_rate": lr, "clients_per_round": config.clients_per_round}
    if pilot and method == "fedsgd":
      params["pilot"] = "chosen" if exponent == fedsgd_exponent else "pilot only"
    runs.append(common.PlannedRun(method + ("" if exponent == 0 else f"_lr{lr:.2f}"), config, params))
  return runs


def pilot_loss(run_dir: str, pilot_rounds: int) -> float:
  """Mean training loss over the pilot's second half (inf where a round diverged or is missing)."""
  losses = [v for r, v in common.eval_curve(run_dir, "train/loss") if pilot_rounds // 2 < r <= pilot_rounds]
  if len(losses) < pilot_rounds - pilot_rounds // 2 or not all(math.isfinite(v) for v in losses):
    return math.inf
  return sum(losses) / len(losses)


def choose_fedsgd_exponent(context: common.Context, num_train_clients: int) -> Optional[float]:
  """Runs FedSGD's pilot (or resumes it) and returns the chosen exponent; None without a completed pilot."""
  exponents, pilot_rounds = FEDSGD_PILOT_EXPONENTS[context.scale], FEDSGD_PILOT_ROUNDS[context.scale]
  if not exponents:
    return None
  pilots = [p for p in plan(context.scale, num_train_clients) if p.params["method"] == "fedsgd"]
  context.run(pilots, until_round=min(pilot_rounds, context.until_round or pilot_rounds))
  losses = [pilot_loss(os.path.join(context.out_dir, "runs", p.label), pilot_rounds) for p in pilots]
  context.log("FedSGD pilot, mean training loss of rounds "
              f"{pilot_rounds // 2 + 1}-{pilot_rounds}: " +
              ", ".join(f"lr {p.params['learning_rate']:.3g} {v:.3f}" for p, v in zip(pilots, losses)))
  if not any(math.isfinite(v) for v in losses):
    return None
  return exponents[losses.index(min(losses))]


def rounds_to(curve: Sequence[tuple[int, float]], target: float) -> Optional[int]:
  return next((r for r, v in curve if v >= target - 1e-12), None)


def add_speedups(table: list[dict[str, Any]], curves: dict[str, list], fedsgd_label: Optional[str]) -> None:
  """Each FedAvg row's speed-up over FedSGD at FedSGD's final accuracy (the paper's ratio at a lower target).

  FedSGD's rounds are the first round it reached its own final accuracy. A
  FedAvg run that was already there at its first evaluation may have been
  there sooner, so that ratio is only a lower bound (`speedup_is_lower_bound`).
  """
  fedsgd = next((t for t in table if t["label"] == fedsgd_label), None)
  fedsgd_rounds = fedsgd["rounds_to_fedsgd_final"] if fedsgd else None
  for row in table:
    rounds = row["rounds_to_fedsgd_final"]
    if row["method"] == "fedsgd" or not fedsgd_rounds or not rounds:
      row["speedup_at_fedsgd_final"], row["speedup_is_lower_bound"] = None, False
      continue
    row["speedup_at_fedsgd_final"] = fedsgd_rounds / rounds
    row["speedup_is_lower_bound"] = rounds == curves[row["label"]][0][0]


def analyze(rows: list[dict[str, Any]], out_dir: str) -> dict[str, Any]:
  """Rounds to 54 %; and to FedSGD's accuracy at its budget, where FedSGD stops short of 54 %."""
  curves = {r["label"]: common.eval_curve(os.path.join(out_dir, "runs", r["label"])) for r in rows}
  fedsgd = [r for r in rows if r["method"] == "fedsgd"]
  fedsgd = [r for r in fedsgd if r.get("pilot") == "chosen"] or fedsgd
  best_fedsgd = max(fedsgd, key=lambda r: max((v for _, v in curves[r["label"]]), default=0.0), default=None)
  fedsgd_final = (curves[best_fedsgd["label"]] or [(0, float("nan"))])[-1] if best_fedsgd else None
  # FedSGD's last evaluated accuracy, floored to 0.1 points, is the second target.
  second_target = math.floor(fedsgd_final[1] * 1000) / 1000 if fedsgd_final and fedsgd_final[1] > 0 else None
  table = []
  for row in rows:
    curve = curves[row["label"]]
    table.append({
        "label": row["label"], "method": row["method"], "pilot": row.get("pilot"),
        "epochs": row["epochs"], "batch_size": row["batch_size"],
        "learning_rate": row["learning_rate"], "rounds": row["rounds"], "planned_rounds": row["planned_rounds"],
        "final_accuracy": row.get("final_accuracy"),
        "best_accuracy": max((v for _, v in curve), default=float("nan")),
        "rounds_to_54": rounds_to(curve, TARGET_ACCURACY),
        "rounds_to_fedsgd_final": rounds_to(curve, second_target) if second_target else None,
        "train_seconds": row["train_seconds"]})
  add_speedups(table, curves, best_fedsgd["label"] if best_fedsgd else None)
  return {"table": table, "paper": PAPER, "fedsgd_final": fedsgd_final,
          "second_target": second_target, "clients_per_round": rows[0].get("clients_per_round") if rows else None,
          "rounds_completed": min((t["rounds"] for t in table if t["pilot"] != "pilot only"), default=0),
          "unigram_accuracy": rows[0]["unigram_accuracy"] if rows else float("nan")}


def execute(context: common.Context) -> tuple[list[dict[str, Any]], dict[str, Any]]:
  num_train_clients = len(context.data.train_client_ids)
  planned = plan(context.scale, num_train_clients, choose_fedsgd_exponent(context, num_train_clients))
  return common.run_staged(context, planned, lambda rows: analyze(rows, context.out_dir),
                           STAGE_ROUNDS[context.scale])
