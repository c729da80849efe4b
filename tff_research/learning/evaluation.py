"""Federated evaluation and the flat metrics of a round."""
from __future__ import annotations

from typing import Any, Mapping, Optional

import numpy as np
import tensorflow_federated as tff

from tff_research.learning import model_fn as model_fn_lib
from tff_research.learning import process as process_lib


def build_evaluation_process(model_fn: model_fn_lib.ModelFn, loop: str = "iterator",
                             dataset_computation: Optional[tff.Computation] = None):
  """Federated evaluation (`tff.learning.algorithms.build_fed_eval`).

  Args:
    model_fn: the model builder the training process uses.
    loop: how clients loop over their batches (`process.LOOP_IMPLEMENTATIONS`).
    dataset_computation: builds each client's dataset on the worker
      (`process.with_datasets_built_by`); None: `next` takes datasets.

  Returns:
    TFF's evaluation process; `evaluate` runs it on given weights.
  """
  process = tff.learning.algorithms.build_fed_eval(model_fn,
                                                  loop_implementation=process_lib.loop_implementation(loop))
  return process_lib.with_datasets_built_by(process, dataset_computation)


def evaluate(eval_process, eval_state, model_weights, datasets) -> tuple[Any, dict[str, float]]:
  """Runs federated evaluation of `model_weights` on `datasets`; returns (state, metrics)."""
  eval_state = eval_process.set_model_weights(eval_state, model_weights)
  output = eval_process.next(eval_state, datasets)
  metrics = output.metrics["client_work"]["eval"]["current_round_metrics"]
  return output.state, {k: float(v) for k, v in metrics.items()}


def train_metrics(process_metrics) -> dict[str, float]:
  """The flat training metrics of one round from a process's `metrics` output."""
  flat = {}
  client_work = process_metrics.get("client_work", {})
  train = client_work.get("train", client_work)
  for key, value in train.items():
    flat[key] = float(value)
  return flat


def aggregator_metrics(process_metrics) -> dict[str, dict[str, float]]:
  """The aggregator's measurement groups of one round, flat within each (`{"secure": {"clipped": ...}}`).

  TFF's `MeanFactory` measures nothing (empty groups, left out); the secure
  sum's group is `secure`, its ideal functionality's `fixed_point`.
  """
  groups = {name: {k: float(v) for k, v in group.items() if np.ndim(v) == 0}
            for name, group in (process_metrics.get("aggregator") or {}).items() if isinstance(group, Mapping)}
  return {name: group for name, group in groups.items() if group}
