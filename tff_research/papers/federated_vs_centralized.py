"""Experiment 3 — federated vs centralized CIFG (Hard et al. 2018, "Federated Learning for Mobile Keyboard Prediction").

Paper: the CIFG next-word model trained with FedAvg reached recall@1 16.4 %,
the server-trained one 16.5 % on the same (logged keyboard) evaluation data.

Here: the same CIFG model (`--cell=cifg`) trained (a) federated with FedAvg +
the given server optimizer, (b) centrally on the union of the train clients'
sequences with plain minibatch SGD, for as many example passes as the
federated run made (the sum of its rounds' `train/num_examples`). Both are
evaluated on the same sampled test clients; recall@1 is top-1 accuracy
without special tokens, recall@3 top-3.
"""
from __future__ import annotations

import dataclasses
from typing import Any

from tff_research.learning.config import ExperimentConfig
from tff_research.papers import common

NAME = "federated_vs_centralized"
TASK = "next_word"
PAPER = {"federated_recall_at_1": 0.164, "centralized_recall_at_1": 0.165}


def federated_config(scale: str) -> ExperimentConfig:
  base = common.base_config(scale)
  rounds = 2 if scale == "smoke" else 100
  return dataclasses.replace(base, cell="cifg", rounds=rounds, client_learning_rate=1.0,
                             server_optimizer="adam", server_learning_rate=0.01,
                             server_epsilon=1e-5, eval_every=rounds if scale == "smoke" else 10)


def run_centralized(config: ExperimentConfig, data, examples: int, eval_client_ids,
                    optimizer_name: str = "sgd") -> dict[str, Any]:
  """Centralized training of `config`'s model for `examples` sequence passes; returns its metrics."""
  from tff_research.learning import centralized  # pylint: disable=g-import-not-at-top
  from tff_research.learning import experiment  # pylint: disable=g-import-not-at-top
  from tff_research.learning import optimizers  # pylint: disable=g-import-not-at-top
  from tff_research.models import nwp as nwp_models  # pylint: disable=g-import-not-at-top
  output_bias = None
  if config.output_bias_init == "unigram":
    output_bias = nwp_models.unigram_log_prior(data.train.values(), data.vocab.size, data.vocab.pad_id)
  optimizer = optimizers.OptimizerConfig(optimizer_name, config.client_learning_rate)
  (result, seconds) = common.timed(lambda: centralized.train_centralized(
      experiment.model_config(config, data.vocab.size), data, examples, config.client_batch_size, optimizer,
      seed=config.seed, output_bias=output_bias))
  metrics = centralized.evaluate_keras_model(result.model, data, eval_client_ids, config.eval_batch_size)
  return {"label": f"centralized_{optimizer_name}", "training": "centralized",
          "optimizer": f"{optimizer_name} lr {config.client_learning_rate:g}, batch {config.client_batch_size}",
          "steps": result.steps, "train_examples": result.examples_seen,
          "train_seconds": round(seconds, 1), **{f"final_{k}": v for k, v in sorted(metrics.items())}}


def analyze(federated: dict[str, Any], centralized_rows: list[dict[str, Any]]) -> dict[str, Any]:
  table = [{"training": "federated (FedAvg, server Adam)",
            "recall_at_1": federated["final_accuracy"], "recall_at_3": federated["final_recall_at_3"],
            "perplexity": federated["final_perplexity"], "train_examples": federated["train_examples"],
            "train_seconds": federated["train_seconds"]}]
  for row in centralized_rows:
    table.append({"training": f"centralized ({row['optimizer']})", "recall_at_1": row["final_accuracy"],
                  "recall_at_3": row["final_recall_at_3"], "perplexity": row["final_perplexity"],
                  "train_examples": row["train_examples"], "train_seconds": row["train_seconds"]})
  gap = table[0]["recall_at_1"] - table[1]["recall_at_1"] if len(table) > 1 else float("nan")
  return {"table": table, "recall_at_1_gap_federated_minus_centralized": gap,
          "paper": PAPER, "paper_gap": PAPER["federated_recall_at_1"] - PAPER["centralized_recall_at_1"],
          "unigram_accuracy": federated["unigram_accuracy"]}


def execute(context: common.Context) -> tuple[list[dict[str, Any]], dict[str, Any]]:
  """The federated run, then the centralized one for as many example passes."""
  from tff_research.learning import experiment  # pylint: disable=g-import-not-at-top
  from tff_research.learning import training_loop  # pylint: disable=g-import-not-at-top
  config = dataclasses.replace(federated_config(context.scale), data_dir=context.data_dir)
  federated = context.run([common.PlannedRun("federated_cifg", config, {"training": "federated"})])[0]
  eval_ids = training_loop.eval_client_ids(context.data, experiment.loop_config(config))
  context.log(f"centralized CIFG for {federated['train_examples']} example passes")
  centralized = run_centralized(config, context.data, federated["train_examples"], eval_ids)
  return [federated, centralized], analyze(federated, [centralized])
