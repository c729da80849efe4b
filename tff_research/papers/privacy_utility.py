"""Experiment 5 — accuracy against epsilon: no DP, DP-FedAvg, DP-FTRL and distributed DP, Shakespeare words.

McMahan, Ramage, Talwar and Zhang, "Learning Differentially Private
Recurrent Language Models", ICLR 2018 (arXiv:1710.06963), trained an LSTM
next-word model with user-level DP-FedAvg and state in their abstract that
with "a sufficiently large number of users" DP costs "a negligible cost in
predictive accuracy", paid in computation instead. Their data (Reddit) has
hundreds of thousands of users; Shakespeare has about a thousand roles, so
this experiment measures the other end of that claim: what user-level DP
costs where the population is small.

Every run: the word-level paper base (`common.PAPER_BASE`: 5,000 words,
embedding 64, LSTM 128), FedAvg with server momentum (FedAvgM: the server
step DP-FTRL takes as DP-FTRLM, Kairouz et al. 2021) at `SERVER_LR` with
client lr `CLIENT_LR`, `CLIENTS_PER_ROUND` clients a round, `ROUNDS`
rounds, each client's update clipped to L2 norm `CLIP` in the DP runs.
Plain server SGD at lr 1 does not leave the unigram plateau in 80 rounds
on this model (a first paper-scale run: eval loss 6.12 at every
evaluation, accuracy 0; the adaptive-optimizers sweep, REPRODUCTION.md B2,
found the same); FedAvgM at these rates was the best FTRL-compatible
setting of that sweep. Per mode and target epsilon, `--target_epsilon`
picks the noise multiplier before training:
  central      DP-FedAvg, Gaussian noise on the sum at the server (TFF)
  ftrl         DP-FTRL, tree noise, clients in shuffled epochs (TFF)
  distributed  each client's discrete Gaussian share under our secure sum
               (`privacy.distributed`), every round counted with its survivors
and one run without DP. delta = 1 / N^1.1 for N training roles.
"""
from __future__ import annotations

import dataclasses
from typing import Any

from tff_research.learning.config import ExperimentConfig
from tff_research.papers import common

NAME = "privacy_utility"
TASK = "next_word"
MODES = ("central", "ftrl", "distributed")
EPSILONS = {"smoke": (8.0,), "paper": (2.0, 8.0, 20.0)}
ROUNDS = {"smoke": 2, "paper": 80}
# 50 of about 1,100 roles a round: a cohort the secure sum takes at its Bell et
# al. parameters and 4.5 % sampling, so that epsilon in 2..20 leaves noise the
# model can train through at all (the noise on the mean falls as 1 / cohort).
CLIENTS_PER_ROUND = {"smoke": 5, "paper": 50}
# Not tuned here: the median update norm of the DP benchmark's larger model at
# client lr 1 (BENCHMARKS.md "Differential privacy"); REPRODUCTION.md says so.
CLIP = 1.0
# Reddi et al.'s client rate and the best FedAvgM server rate of the
# adaptive-optimizers sweep on this model (REPRODUCTION.md B2, 3 seeds).
CLIENT_LR = 10 ** -0.5
SERVER_LR = 10 ** 0.5


def run_config(scale: str) -> ExperimentConfig:
  """The configuration every run of the experiment shares (no DP)."""
  base = common.base_config(scale)
  rounds = ROUNDS[_size(scale)]
  return dataclasses.replace(base, rounds=rounds, clients_per_round=CLIENTS_PER_ROUND[_size(scale)],
                             server_optimizer="sgdm", server_learning_rate=SERVER_LR,
                             client_learning_rate=CLIENT_LR,
                             eval_every=rounds if scale == "smoke" else 10)


def _size(scale: str) -> str:
  return "smoke" if scale == "smoke" else "paper"


def plan(scale: str) -> list[common.PlannedRun]:
  """One run without DP, then each mode at each target epsilon."""
  base = run_config(scale)
  runs = [common.PlannedRun("no_dp", base, {"mode": "none", "target_epsilon": "-"})]
  for mode in MODES:
    for target in EPSILONS[_size(scale)]:
      changes: dict[str, Any] = dict(dp=mode, dp_clip=CLIP, target_epsilon=target)
      if mode == "distributed":
        changes.update(aggregator="secure")
      runs.append(common.PlannedRun(f"{mode}_eps{target:g}", dataclasses.replace(base, **changes),
                                    {"mode": mode, "target_epsilon": target}))
  return runs


def analyze(rows: list[dict[str, Any]]) -> dict[str, Any]:
  """Accuracy and epsilon per run, and each DP run's accuracy as a share of the run without DP."""
  plain = next(r for r in rows if r["mode"] == "none")
  table = []
  for row in rows:
    accuracy = row.get("final_accuracy", float("nan"))
    table.append({"mode": row["mode"], "target_epsilon": row["target_epsilon"],
                  "epsilon": row.get("privacy_epsilon"), "delta": row.get("privacy_delta"),
                  "noise_multiplier": row.get("dp_noise_multiplier"), "rounds": row["rounds"],
                  "accuracy": accuracy, "accuracy_share_of_no_dp": accuracy / plain["final_accuracy"]
                  if plain.get("final_accuracy") else None,
                  "above_unigram": accuracy > row["unigram_accuracy"], "loss": row.get("final_loss"),
                  "train_seconds": row["train_seconds"]})
  return {"table": table, "unigram_accuracy": plain["unigram_accuracy"], "clip": CLIP,
          "clients_per_round": plain.get("clients_per_round")}


def execute(context: common.Context) -> tuple[list[dict[str, Any]], dict[str, Any]]:
  """Each planned run in turn; the results so far are written after each (the paper scale takes hours)."""
  planned = plan(context.scale)
  rows: list[dict[str, Any]] = []
  for run in planned:
    row = context.run([run])[0]
    row["clients_per_round"] = run.config.clients_per_round
    rows.append(row)
    if len(rows) < len(planned) and context.scale != "smoke":  # seconds at smoke scale: no need
      context.publish(rows, analyze(rows))
  return rows, analyze(rows)
