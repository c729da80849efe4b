"""One NWP experiment end to end: data -> model -> processes -> training loop -> report.

`run_experiment(ExperimentConfig)` is what that script (and notebooks, and the paper-reproduction experiments)
call. Logic lives here, the scripts only parse flags.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import os
from typing import Any, Callable, Optional

from tff_research import tasks
from tff_research.aggregation import masked_sum
from tff_research.data import nwp
from tff_research.data import worker_data
from tff_research.learning import checkpoints
from tff_research.learning import evaluation
from tff_research.learning import model_fn as model_fn_lib
from tff_research.learning import optimizers as optimizers_lib
from tff_research.learning import process as process_lib
from tff_research.learning import training_loop
from tff_research.learning.config import ExperimentConfig  # pylint: disable=unused-import
from tff_research.models import custom as custom_models
from tff_research.models import nwp as nwp_models
from tff_research.privacy import accounting as dp_accounting_lib
from tff_research.privacy import aggregators as dp_aggregators
from tff_research.privacy import config as dp_config_lib
from tff_research.privacy import ddgauss_accounting
from tff_research.privacy import distributed

VOCAB_FILE = "vocab.json"
# The final test accuracy beside the unigram baseline's on the same clients (`predict` says when it is below).
BASELINE_FILE = "baseline.json"


@dataclasses.dataclass
class ExperimentResult:
  config: ExperimentConfig
  run: training_loop.RunResult
  data: nwp.NWPData
  unigram_accuracy: float
  plot_path: Optional[str]
  dp: Optional[dp_config_lib.DpConfig] = None  # resolved: calibrated noise multiplier, delta
  privacy: Optional[dict[str, float]] = None    # epsilon, delta (and rho-zCDP for DP-FTRL) after the run


def load_nwp_data(config: ExperimentConfig, verbose: bool = True) -> nwp.NWPData:
  """The run's token windows: words, or characters (`--task=next_char`).

  Args:
    config: the run's task and data settings.
    verbose: print the corpus's summary line.

  Returns:
    The task's `NWPData`.
  """
  data = tasks.get_task(config.task).load_data(
      dataset=config.dataset, data_dir=config.data_dir, sequence_length=config.sequence_length,
      vocab_size=config.vocab_size, num_oov_buckets=config.num_oov_buckets,
      shakespeare_unit=config.shakespeare_unit, corpus_options=config.corpus_options(),
      heldout_clients=config.heldout_clients, verbose=verbose)
  data.split_validation(config.validation_fraction)
  return data


def model_config(config: ExperimentConfig, vocab_size: int) -> nwp_models.ModelConfig:
  """The run's `models.nwp.ModelConfig` for an output layer of `vocab_size` classes.

  Args:
    config: the run's task and model settings.
    vocab_size: output classes (`data.vocab.size`).

  Returns:
    The task's model shape (next_char: TFF's character model's, no projection, he-normal kernels).
  """
  return tasks.get_task(config.task).model_config(
      vocab_size=vocab_size, embedding_size=config.embedding_size, latent_size=config.latent_size,
      num_layers=config.num_layers, cell=config.cell, lstm_implementation=config.lstm_implementation)


def keras_model_builder(config: ExperimentConfig,
                        keras_model: Optional[custom_models.KerasModelBuilder] = None
                        ) -> Optional[custom_models.KerasModelBuilder]:
  """Your own model's builder: `keras_model` if given, else `--keras_model`'s function, else None (ours)."""
  if keras_model is not None:
    return keras_model
  return custom_models.resolve(config.keras_model) if config.keras_model else None


def build_model_fn(config: ExperimentConfig, data: nwp.NWPData,
                   keras_model: Optional[custom_models.KerasModelBuilder] = None) -> model_fn_lib.ModelFn:
  """The configured model for `data`, as the `model_fn` TFF's builders take.

  Args:
    config: the run's model settings and seed.
    data: the run's data (vocabulary size, element spec, ids accuracy leaves out).
    keras_model: your own model's builder (`models.custom`), instead of
      `--keras_model` or the package's model; checked once here.

  Returns:
    A `model_fn.NWPModelFn`.

  Raises:
    ValueError: one line, for a model that does not fit the task.
  """
  builder = keras_model_builder(config, keras_model)
  if builder is not None:
    custom_models.build_checked(builder, data.vocab.size, config.sequence_length, config.keras_model)
  shape = model_config(config, data.vocab.size)
  output_bias = None
  if builder is None and config.output_bias_init == "unigram":  # your own model initializes itself
    # A statistic of the train clients' data, computed centrally: a simulation
    # shortcut (a deployment would estimate it with a federated count).
    output_bias = nwp_models.unigram_log_prior(data.train.values(), data.vocab.size, data.vocab.pad_id)
  return model_fn_lib.build_model_fn(shape, data.element_spec, data.accuracy_excluded_ids,
                                    data.vocab.pad_id, seed=config.seed, output_bias=output_bias,
                                    keras_model=builder)


def algorithm_config(config: ExperimentConfig) -> process_lib.AlgorithmConfig:
  """The run's algorithm and optimizers."""
  return process_lib.AlgorithmConfig(
      algorithm=config.algorithm,
      client_optimizer=optimizers_lib.OptimizerConfig(config.client_optimizer, config.client_learning_rate),
      server_optimizer=optimizers_lib.OptimizerConfig(
          config.server_optimizer, config.server_learning_rate, momentum=config.server_momentum,
          epsilon=config.server_epsilon, beta_2=config.server_beta_2,
          initial_accumulator=config.server_initial_accumulator))


def loop_config(config: ExperimentConfig) -> training_loop.LoopConfig:
  """The run's rounds, sampling, client batches and evaluation."""
  # FedSGD: one gradient over the client's data per round.
  epochs = 1 if config.algorithm == "fedsgd" else config.client_epochs
  return training_loop.LoopConfig(
      rounds=config.rounds, clients_per_round=config.clients_per_round,
      client_spec=nwp.ClientSpec(epochs, config.client_batch_size, config.max_elements_per_client or None),
      eval_every=config.eval_every, eval_clients=config.eval_clients,
      eval_batch_size=config.eval_batch_size, seed=config.seed,
      # DP-FTRL's accounting assumes each client at most once per tree (epoch).
      client_sampling="shuffled_epochs" if config.dp == "ftrl" else "uniform")


def resolve_dp(config: ExperimentConfig, num_train_clients: int,
               model_fn: Optional[model_fn_lib.ModelFn] = None) -> Optional[dp_config_lib.DpConfig]:
  """The run's DP settings with delta and (for `--target_epsilon`) the noise multiplier resolved; None if off.

  Args:
    config: the run's settings.
    num_train_clients: N, the clients a round samples from.
    model_fn: the run's model (`--dp=distributed` calibrates for its number of coordinates).

  Raises:
    ValueError: one line, for a target epsilon the rounds cannot meet.
  """
  dp = config.dp_config()
  if not dp.enabled:
    return None
  delta = dp.resolved_delta(num_train_clients)
  noise_multiplier = dp.noise_multiplier
  if dp.mode == "distributed":
    if model_fn is None:
      raise ValueError("--dp=distributed calibrates for the model's coordinates: pass model_fn")
    given = distributed_parameters(config, dp, model_fn)  # bits too few fail here, before any search
  if dp.target_epsilon:
    try:
      if dp.mode == "distributed":
        noise_multiplier = _calibrate_distributed(config, dp, num_train_clients, given, delta)
      else:
        noise_multiplier = dp_accounting_lib.calibrate_noise_multiplier(
            dp.target_epsilon, rounds=config.rounds, num_clients=num_train_clients,
            clients_per_round=config.clients_per_round, delta=delta,
            rounds_per_epoch=_rounds_per_epoch(config, dp, num_train_clients))
    except ValueError as e:
      raise ValueError(f"--target_epsilon: {e}") from None
  resolved = dataclasses.replace(dp, noise_multiplier=noise_multiplier, delta=delta)
  if dp.mode == "distributed" and dp.target_epsilon:
    distributed_parameters(config, resolved, model_fn)  # the calibrated noise leaves a coarser scale
  return resolved


def distributed_bits(config: ExperimentConfig) -> int:
  """b of `--dp=distributed`'s modular sum: `--secure_bits`, or the default for 0."""
  return config.secure_bits or dp_config_lib.DEFAULT_DISTRIBUTED_BITS


def distributed_parameters(config: ExperimentConfig, dp: dp_config_lib.DpConfig,
                           model_fn: model_fn_lib.ModelFn) -> distributed.DdgaussParameters:
  """The scale, noise and padded dimension `--dp=distributed` uses for this model.

  Raises:
    ValueError: one line, where `--secure_bits` are too few for it.
  """
  dim = _update_coordinates(model_fn)
  try:
    min_clients = distributed.min_survivors(config.clients_per_round, config.secure_sum_config())
    return distributed.ddgauss_parameters(dp, dim, config.clients_per_round, min_clients, distributed_bits(config))
  except ValueError as e:
    raise ValueError(f"--dp=distributed: {e}") from None


@functools.lru_cache(maxsize=8)
def _update_coordinates(model_fn: model_fn_lib.ModelFn) -> int:
  """The trainable coordinates of the model (what a client's update has); builds the model once per model_fn."""
  return sum(int(weight.size) for weight in model_fn.initial_weights().trainable)


def _calibrate_distributed(config: ExperimentConfig, dp: dp_config_lib.DpConfig, num_train_clients: int,
                           given: distributed.DdgaussParameters, delta: float) -> float:
  """The noise multiplier whose DDGauss epsilon, every round at the fewest survivors, meets the target."""
  at_target, min_clients = given, given.min_clients

  def scale_fn(noise_multiplier: float) -> float:
    local = noise_multiplier * dp.clip / min_clients**0.5
    return distributed.choose_scale(local, dp.clip, at_target.bits, config.clients_per_round, at_target.padded_dim)

  return ddgauss_accounting.calibrate_noise_multiplier(
      dp.target_epsilon, rounds=config.rounds, l2_clip=dp.clip, scale_fn=scale_fn, beta=dp.beta,
      dim=at_target.padded_dim, min_clients=min_clients, num_clients=num_train_clients,
      clients_per_round=config.clients_per_round, delta=delta)


def epsilon_tracker(config: ExperimentConfig, dp: dp_config_lib.DpConfig, num_train_clients: int,
                    model_fn: Optional[model_fn_lib.ModelFn] = None):
  """Epsilon after each round of the run (the loop's `round_metrics`).

  `--dp=distributed` counts each round with its survivors, those of rounds
  before a resume read from the run's metrics.csv (`model_fn` needed).
  """
  if dp.mode == "distributed":
    if model_fn is None:
      raise ValueError("--dp=distributed accounts for the model's coordinates: pass model_fn")
    template = distributed_parameters(config, dp, model_fn).accounted_round(num_train_clients)
    return ddgauss_accounting.DdgaussEpsilonTracker(template, dp.delta, dp.noise_multiplier,
                                                    _recorded_survivors(config.run_dir))
  return dp_accounting_lib.EpsilonTracker(dp.noise_multiplier, num_train_clients, config.clients_per_round, dp.delta,
                                          _rounds_per_epoch(config, dp, num_train_clients))


def _recorded_survivors(run_dir: str) -> dict[int, int]:
  """round -> clients summed, from metrics.csv's `dp/clients` (empty for a new run)."""
  path = os.path.join(run_dir, "metrics.csv")
  if not os.path.isfile(path):
    return {}
  key = f"{distributed.MEASUREMENTS_GROUP}/clients"
  return {int(row["round"]): int(row[key]) for row in training_loop.read_metrics_csv(path) if key in row}


def _rounds_per_epoch(config: ExperimentConfig, dp: dp_config_lib.DpConfig, num_train_clients: int) -> int:
  """DP-FTRL's tree length (0 for DP-FedAvg)."""
  if dp.mode != "ftrl":
    return 0
  if num_train_clients < config.clients_per_round:
    raise ValueError(f"--dp=ftrl needs the number of training clients (got {num_train_clients}) to cut its "
                     f"epochs of {config.clients_per_round} clients a round")
  return training_loop.rounds_per_epoch(num_train_clients, config.clients_per_round)


def build_model_aggregator(config: ExperimentConfig, rounding_randomness=None,
                           dp: Optional[dp_config_lib.DpConfig] = None, num_train_clients: int = 0):
  """None (TFF's weighted mean), TFF's DP mean (`--dp=central`, `ftrl`), the secure sum (`--aggregator=secure`),
  or the secure sum with each client's discrete Gaussian noise (`--dp=distributed`).

  Args:
    config: the run's aggregator settings.
    rounding_randomness: tests that compare runs bit for bit only
      (`aggregation.reproducible_rounding`); None leaves each client's
      rounding to its own CSPRNG.
    dp: the resolved DP settings (`resolve_dp`), None without DP.
    num_train_clients: with DP-FTRL, N (its tree restarts every N // k rounds).
  """
  if dp is not None and dp.mode == "distributed":
    try:
      secure = dataclasses.replace(config.secure_sum_config(), bits=0)  # b is the modulus, the encoder's
      return distributed.DistributedDpFactory(dp, secure, config.clients_per_round, distributed_bits(config),
                                              rounding_randomness=rounding_randomness)
    except ValueError as e:
      raise ValueError(f"--dp=distributed: {e}") from None
  if dp is not None:
    try:
      return dp_aggregators.build_dp_aggregator(
          dp, config.clients_per_round, _rounds_per_epoch(config, dp, num_train_clients))
    except ValueError as e:
      raise ValueError(f"--dp={dp.mode}: {e}") from None
  if config.aggregator != "secure":
    return None
  try:
    return masked_sum.SecureSumFactory(config.secure_sum_config(), config.clients_per_round,
                                       rounding_randomness=rounding_randomness)
  except ValueError as e:
    raise ValueError(f"--aggregator=secure: {e}") from None


def build_training_process(config: ExperimentConfig, model_fn: model_fn_lib.ModelFn, *,
                           keep_state_on_worker: bool = True, rounding_randomness=None,
                           log: Optional[Callable[[str], None]] = None,
                           dp: Optional[dp_config_lib.DpConfig] = None, num_train_clients: int = 0,
                           client_data: Optional[worker_data.WorkerData] = None):
  """The run's learning process (`process.build_training_process`) with its aggregator and dropouts.

  Args:
    config: the run's settings.
    model_fn: its model (`build_model_fn`).
    keep_state_on_worker: keep the server state on the TFF worker between rounds.
    rounding_randomness: see `build_model_aggregator`.
    log: where a refused secure round's line goes.
    dp: the resolved DP settings (`resolve_dp`), None without DP.
    num_train_clients: with DP, the training clients N.
    client_data: None: `next` takes datasets; else it takes each client's
      file name and order, and builds its batches on the worker.

  Returns:
    The process.
  """
  aggregator = build_model_aggregator(config, rounding_randomness, dp, num_train_clients)
  secure = config.aggregator == "secure"
  return process_lib.build_training_process(
      model_fn, algorithm_config(config), model_aggregator=aggregator, keep_state_on_worker=keep_state_on_worker,
      dropouts=config.dropout_simulation() if secure else None, log=log if secure else None,
      dataset_computation=client_data.dataset_computation(config.client_batch_size) if client_data else None)


def export_worker_data(data: nwp.NWPData, worker_data_dir: str,
                       log: Callable[[str], None] = print) -> worker_data.WorkerData:
  """`data`'s client files written to `worker_data_dir` where missing (`worker_data.WorkerData.export`)."""
  client_data = worker_data.WorkerData(data, worker_data_dir)
  try:
    written, total = client_data.export()
  except OSError as e:
    raise worker_data.WorkerDataError(f"--worker_data_dir: cannot write {client_data.data_dir}: "
                                      f"{e.strerror or e}") from None
  log(client_data.summary(written, total))
  return client_data


def run_experiment(config: ExperimentConfig, progress: bool = True, plot: bool = True,
                   log: Callable[[str], None] = print, data: Optional[nwp.NWPData] = None,
                   keras_model: Optional[custom_models.KerasModelBuilder] = None,
                   worker_data_dir: Optional[str] = None) -> ExperimentResult:
  """Trains (or resumes) the configured run.

  Args:
    config: every setting of the run (validated here).
    progress: show a progress bar.
    plot: write learning_curve.png into the run directory.
    log: where lines go without a progress bar.
    data: the run's data, if already loaded (`load_nwp_data(config)`).
    keras_model: your own Keras model's builder (`models.custom`: vocab_size
      -> model), e.g. a function defined in a notebook; else `--keras_model`.
    worker_data_dir: build client datasets on the workers from this
      directory (`data.worker_data`; written here first, where missing)
      instead of sending them every round. Same results.

  Returns:
    The run's metrics, final model weights, data, unigram baseline and plot path.
  """
  config.validate()
  data = data or load_nwp_data(config)
  loop = loop_config(config)
  if config.clients_per_round > len(data.train_client_ids):
    raise ValueError(f"--clients_per_round={config.clients_per_round} is larger than the "
                     f"{len(data.train_client_ids)} train clients of {data.name}")
  model_fn = build_model_fn(config, data, keras_model)
  dp = resolve_dp(config, len(data.train_client_ids), model_fn)
  if dp is not None and dp.target_epsilon:
    log(f"--target_epsilon={dp.target_epsilon:g}: noise multiplier {dp.noise_multiplier:.4f} for {config.rounds} "
        f"rounds of {config.clients_per_round} of {len(data.train_client_ids)} clients at delta {dp.delta:.3g}")
  client_data = export_worker_data(data, worker_data_dir, log) if worker_data_dir else None
  training_process = build_training_process(config, model_fn, log=log, dp=dp,
                                            num_train_clients=len(data.train_client_ids), client_data=client_data)
  evaluation_process = evaluation.build_evaluation_process(
      model_fn, dataset_computation=client_data.dataset_computation(config.eval_batch_size) if client_data else None)
  hparams: dict[str, Any] = dataclasses.asdict(config)
  # Before the first round: `predict` reads it to suggest words from an unfinished run's checkpoint.
  os.makedirs(config.run_dir, exist_ok=True)
  with open(os.path.join(config.run_dir, VOCAB_FILE), "w", encoding="utf-8") as f:
    f.write(data.vocab.to_json())
  run = training_loop.run_federated_training(
      training_process, evaluation_process, data, loop, config.run_dir, hparams,
      progress=progress, log=log, hparam_defaults=dataclasses.asdict(ExperimentConfig()),
      round_warning=masked_sum.quantization_warning if config.aggregator == "secure" else None,
      round_metrics=epsilon_tracker(config, dp, len(data.train_client_ids), model_fn) if dp is not None else None,
      client_data=client_data)
  checkpoints.save_model_weights(run.model_weights,
                                 os.path.join(config.run_dir, checkpoints.FINAL_WEIGHTS_FILE))
  unigram = nwp.unigram_baseline_accuracy(data, "test", run.eval_client_ids)
  with open(os.path.join(config.run_dir, BASELINE_FILE), "w", encoding="utf-8") as f:
    json.dump({"round": run.rounds_completed, "accuracy": run.final_eval.get("accuracy"),
               "unigram_accuracy": unigram, "eval_clients": len(run.eval_client_ids)}, f)
  plot_path = None
  if plot:
    from tff_research import plots  # pylint: disable=g-import-not-at-top
    plot_path = plots.plot_runs([config.run_dir], os.path.join(config.run_dir, "learning_curve.png"),
                                metrics=("eval/accuracy", "train/accuracy", "train/loss"),
                                labels=[config.experiment_name], title=f"{data.name} NWP",
                                baselines={"unigram baseline": unigram})
  privacy = None
  if dp is not None:
    privacy = epsilon_tracker(config, dp, len(data.train_client_ids), model_fn)(run.rounds_completed)["privacy"]
  return ExperimentResult(config, run, data, unigram, plot_path, dp, privacy)
