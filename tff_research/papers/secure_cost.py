"""Experiment 4 — what secure aggregation costs in accuracy and time.

Experiment 2's best server optimizer (its summary, if present; else FedAdam
at the paper's lr) trained with our pairwise-masked secure sum
(`--aggregator=secure`) at several quantization bit-widths (32, 21: the
default for these 10 clients, and 16), and with TFF's plain
weighted mean, same seed. At b bits each client's weighted update is clipped
to [-c, c] and quantized to b-bit fixed point whose scale leaves room for the
sum of all clients, so fewer bits mean coarser updates (see
`tff_research.aggregation.quantization`).
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Optional

from tff_research.papers import adaptive_optimizers
from tff_research.papers import common

NAME = "secure_cost"
TASK = "next_word"
BITS = {"smoke": (16,), "paper": (32, 21, 16)}  # smoke (tests): the packed path


def chosen_optimizer(exp2_summary: Optional[dict[str, Any]]) -> tuple[str, float, str]:
  """(server optimizer, server lr, where the choice came from)."""
  if exp2_summary:
    analysis = exp2_summary["analysis"]
    return analysis["best_server_optimizer"], float(analysis["best_server_lr"]), (
        f"best of experiment 2 ({exp2_summary['scale']} scale)")
  return "adam", adaptive_optimizers.OPTIMIZERS["adam"][1], "FedAdam at the paper's lr (no experiment-2 result found)"


def plan(scale: str, exp2_summary: Optional[dict[str, Any]] = None) -> list[common.PlannedRun]:
  base = common.base_config(scale)
  # The secure sum keeps 2 honest inputs in every release: 4 clients at the least (smoke has 3).
  base = dataclasses.replace(base, clients_per_round=max(base.clients_per_round, 4))
  optimizer, lr, _ = chosen_optimizer(exp2_summary)
  epsilon = adaptive_optimizers.OPTIMIZERS[optimizer][2]
  base = dataclasses.replace(base, server_optimizer=optimizer, server_learning_rate=lr,
                             server_epsilon=epsilon, client_learning_rate=adaptive_optimizers.CLIENT_LR)
  params = {"server_optimizer_name": optimizer, "server_lr": lr}
  runs = [common.PlannedRun("plain", base, {"aggregator": "plain", "bits": "-", **params})]
  for bits in BITS[scale]:
    config = dataclasses.replace(base, aggregator="secure", secure_bits=bits)
    runs.append(common.PlannedRun(f"secure_b{bits}", config, {"aggregator": "secure", "bits": bits, **params}))
  return runs


def analyze(rows: list[dict[str, Any]], out_dir: str, source: str) -> dict[str, Any]:
  plain = next(r for r in rows if r["aggregator"] == "plain")
  table = []
  for row in rows:
    secure = _secure_totals(os.path.join(out_dir, "runs", row["label"]))
    table.append({"aggregator": row["aggregator"], "bits": row["bits"],
                  "accuracy": row["final_accuracy"], "recall_at_3": row["final_recall_at_3"],
                  "eval_loss": row["final_loss"],
                  "accuracy_minus_plain_points": 100 * (row["final_accuracy"] - plain["final_accuracy"]),
                  "train_seconds": row["train_seconds"],
                  "time_vs_plain": row["train_seconds"] / plain["train_seconds"] if plain["train_seconds"] else None,
                  **secure})
  return {"optimizer": f"{plain['server_optimizer_name']} lr {plain['server_lr']:.3g}", "chosen_from": source,
          "table": table, "unigram_accuracy": plain["unigram_accuracy"]}


def _secure_totals(run_dir: str) -> dict[str, Any]:
  from tff_research.learning import training_loop  # pylint: disable=g-import-not-at-top
  rows = training_loop.read_metrics_csv(os.path.join(run_dir, "metrics.csv"))
  if not any("secure/clipped" in r for r in rows):
    return {"values_clipped": 0, "upload_bytes_per_client": None}
  return {"values_clipped": int(sum(r.get("secure/clipped", 0) for r in rows)),
          "upload_bytes_per_client": int(rows[-1].get("secure/upload_bytes_per_client", 0))}


def execute(context: common.Context) -> tuple[list[dict[str, Any]], dict[str, Any]]:
  exp2 = common.load_summary(context.output_dir, context.scale, adaptive_optimizers.NAME)
  _, _, source = chosen_optimizer(exp2)
  rows = context.run(plan(context.scale, exp2))
  return rows, analyze(rows, context.out_dir, source)
