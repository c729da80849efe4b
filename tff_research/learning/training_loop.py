"""The federated training loop: sample, train, evaluate, record, checkpoint, resume.

Outputs of a run live in one directory (`output_dir/experiment_name/`):
  hparams.json       the configuration (a rerun with other settings is refused)
  metrics.csv        one row per round (`SortedCSVReleaseManager`: the round, then the columns sorted)
  tensorboard/       the same metrics as TensorBoard events
  checkpoints/       server state per round (round_N/state.npz through a
                     tff.program.FileProgramStateManager subclass, written
                     atomically: see checkpoints.py)

Evaluation sets are metrics.csv groups (`EVAL_GROUPS`): `eval/` is the test
split, `validation/` and `heldout/` (clients never trained on) appear where
the data has them; with a validation split the test and held-out clients are
evaluated only at the last round (`_Evaluations`).

Rerunning with the same directory continues after the latest checkpoint. The
CSV release manager drops rows at or after the key it writes, so a round that
was recorded but not checkpointed before a crash is recorded once, not twice.
Client sampling and batch order are functions of (seed, round), so a resumed
run computes exactly what an uninterrupted one would; with
`--aggregator=secure` up to the clients' stochastic rounding, which is each
client's own secret randomness (`aggregation.masked_sum`), not bit for bit.

The loop knows neither the aggregator nor where the server state lives: a
process's aggregator measurements become columns by their group
(`secure/...`), a refused round is the process's to start over
(`composers`), the state manager reads a state wherever it is
(`checkpoints`), and `round_warning` (the caller's) may say a line per run.
Its outputs go through the `RunFiles` it is given.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import csv
import dataclasses
import json
import math
import os
import signal
import time
from typing import Any, Callable, Mapping, Optional, Protocol, Sequence

import numpy as np
import tensorflow_federated as tff
from tqdm.auto import tqdm

from tff_research.data import nwp
from tff_research.data import worker_data
from tff_research.learning import checkpoints
from tff_research.learning import evaluation
from tff_research.runtime import context as runtime_context
from tff_research.runtime import liveness
from tff_research.runtime import resident

CHECKPOINT_PREFIX = "round_"
# How a round's clients are drawn: "uniform" (k of N without replacement,
# anew each round) or "shuffled_epochs" (the N clients in a shuffled order,
# k a round, each at most once an epoch: DP-FTRL's tree assumes it).
CLIENT_SAMPLINGS = ("uniform", "shuffled_epochs")
# hparams that may change between a run and its resumption.
RESUMABLE_KEYS = ("rounds", "eval_every", "verbose", "progress")


class RunConfigError(ValueError):
  """The output directory holds a run with different settings."""


@dataclasses.dataclass(frozen=True)
class LoopConfig:
  rounds: int
  clients_per_round: int
  client_spec: nwp.ClientSpec
  eval_every: int = 5
  eval_clients: int = 100        # test clients sampled once (seeded); 0 = all
  eval_batch_size: int = 64
  seed: int = 0
  keep_checkpoints: int = 3
  client_sampling: str = "uniform"  # one of CLIENT_SAMPLINGS

  def __post_init__(self):
    for name in ("rounds", "clients_per_round", "eval_every", "eval_batch_size", "keep_checkpoints"):
      if getattr(self, name) < 1:
        raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
    if self.eval_clients < 0:
      raise ValueError(f"eval_clients must be 0 (all) or positive, got {self.eval_clients}")
    if self.client_sampling not in CLIENT_SAMPLINGS:
      raise ValueError(f"client_sampling {self.client_sampling!r} is not one of: {', '.join(CLIENT_SAMPLINGS)}")


@dataclasses.dataclass
class RunResult:
  run_dir: str
  rounds_completed: int
  resumed_from: int
  final_eval: dict[str, float]
  history: list[dict[str, float]]
  model_weights: Any
  wall_seconds: float
  eval_client_ids: list[str]
  # The last evaluation of every set by its metrics.csv group (`EVAL_GROUPS`; `eval` is final_eval), and
  # the clients each was evaluated on.
  final_evaluations: dict[str, dict[str, float]] = dataclasses.field(default_factory=dict)
  evaluated_client_ids: dict[str, list[str]] = dataclasses.field(default_factory=dict)


def _run_sync(coroutine):
  """Runs a `tff.program` coroutine to completion, also inside Jupyter's running event loop."""
  try:
    asyncio.get_running_loop()
  except RuntimeError:
    return asyncio.run(coroutine)
  with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
    return pool.submit(asyncio.run, coroutine).result()


def sample_clients(client_ids: Sequence[str], num_clients: int, seed: int, round_num: int) -> list[str]:
  """Uniform sampling without replacement, a pure function of (seed, round)."""
  if num_clients > len(client_ids):
    raise ValueError(f"clients_per_round={num_clients} is larger than the {len(client_ids)} train clients")
  rng = np.random.default_rng([seed, round_num])
  return [client_ids[i] for i in sorted(rng.choice(len(client_ids), num_clients, replace=False))]


def rounds_per_epoch(num_clients: int, clients_per_round: int) -> int:
  """Rounds of a shuffled epoch: floor(N / k) (the N mod k clients left over sit that epoch out)."""
  return max(int(num_clients) // int(clients_per_round), 1)


def sample_clients_in_epochs(client_ids: Sequence[str], num_clients: int, seed: int, round_num: int) -> list[str]:
  """Round `round_num`'s k clients of a shuffled epoch, a pure function of (seed, epoch, round)."""
  if num_clients > len(client_ids):
    raise ValueError(f"clients_per_round={num_clients} is larger than the {len(client_ids)} train clients")
  epoch, position = divmod(round_num - 1, rounds_per_epoch(len(client_ids), num_clients))
  order = np.random.default_rng([seed, epoch, 0x65706f6368]).permutation(len(client_ids))
  chosen = order[position * num_clients:(position + 1) * num_clients]
  return [client_ids[i] for i in sorted(chosen)]


def eval_client_ids(data: nwp.NWPData, config: LoopConfig, split: str = "test") -> list[str]:
  """The clients of `split` a run evaluates on: all, or a sample of `config.eval_clients` drawn once (seeded)."""
  ids = data.client_ids(split)
  if not ids:
    raise ValueError(f"{data.name}: no {split} client has data to evaluate on")
  if config.eval_clients == 0 or config.eval_clients >= len(ids):
    return ids
  # The test sample keeps the stream it has had since the first runs; each other set has its own.
  stream = [config.seed, 2**31 - 1] + ([] if split == "test" else [nwp.SPLITS.index(split)])
  rng = np.random.default_rng(stream)
  return [ids[i] for i in sorted(rng.choice(len(ids), config.eval_clients, replace=False))]


def _write_hparams(run_dir: str, hparams: dict[str, Any], defaults: Mapping[str, Any]) -> None:
  path = os.path.join(run_dir, "hparams.json")
  if os.path.exists(path):
    with open(path, encoding="utf-8") as f:
      old = json.load(f)
    # A setting the package gained after the run started resumes at its default.
    old = {**{k: v for k, v in defaults.items() if k not in old}, **old}
    changed = sorted(k for k in set(old) | set(hparams)
                     if k not in RESUMABLE_KEYS and old.get(k) != hparams.get(k))
    if changed:
      detail = ", ".join(f"{k}: {old.get(k)!r} -> {hparams.get(k)!r}" for k in changed[:4])
      raise RunConfigError(f"{run_dir} holds a run with other settings ({detail}); "
                           "use another --experiment_name or delete that directory")
  tmp = path + ".tmp"
  with open(tmp, "w", encoding="utf-8") as f:
    json.dump(hparams, f, indent=2, sort_keys=True)
  os.replace(tmp, path)


def _finite(metrics: dict[str, float]) -> dict[str, float]:
  return {k: (v if math.isfinite(v) else float("nan")) for k, v in metrics.items()}


class SortedCSVReleaseManager(tff.program.CSVFileReleaseManager):
  """TFF's CSV release manager with one column order for every run: the key, then the other columns sorted.

  TFF's appends a column where a record first brings it (e.g. the first
  evaluation round), so two runs' files differed in order with their
  evaluation schedules. It rewrites the whole file whenever a column is new;
  that rewrite sorts here, and appended rows follow the file's header.
  """

  def _write_values(self, fieldnames, values) -> None:
    key = self._key_fieldname
    super()._write_values([key, *sorted(name for name in fieldnames if name != key)], values)


class RunFiles:
  """Where a run's outputs go: a program state manager, and release managers for the metrics.

  Args:
    run_dir: the run's directory.
    keep_checkpoints: checkpoints kept (the default state manager's).
    states: a `tff.program.ProgramStateManager` instead of the atomic file
      one under `run_dir/checkpoints`.
    releases: `tff.program.ReleaseManager`s instead of metrics.csv (which
      `metrics_path` names, and a resume reads) and TensorBoard events.
  """

  def __init__(self, run_dir: str, keep_checkpoints: int = 3, states=None, releases: Optional[Sequence] = None):
    self.run_dir = run_dir
    self.states = states or checkpoints.AtomicFileProgramStateManager(
        os.path.join(run_dir, "checkpoints"), prefix=CHECKPOINT_PREFIX, keep_total=keep_checkpoints,
        keep_first=False)
    self.metrics_path = os.path.join(run_dir, "metrics.csv")
    self._releases = list(releases) if releases is not None else [
        SortedCSVReleaseManager(self.metrics_path, key_fieldname="round"),
        tff.program.TensorBoardReleaseManager(os.path.join(run_dir, "tensorboard"))]

  def restore(self, initial_state) -> tuple[Any, int]:
    """The latest checkpointed state and its round, or (initial_state, 0)."""
    state, round_num = _run_sync(self.states.load_latest(initial_state))
    return (initial_state, 0) if state is None else (state, round_num)

  def record(self, record: dict[str, Any], round_num: int, state) -> None:
    """Metrics first, then the checkpoint: a crash between them re-records the round once (see module doc)."""
    for manager in self._releases:
      _run_sync(manager.release(record, key=round_num))
    _inject_fault("before_checkpoint", round_num)
    _run_sync(self.states.save(state, round_num))


# The metrics.csv group of each evaluation set; the test split's is `eval/`, its name since the first runs.
EVAL_GROUPS = {"test": "eval", "validation": "validation", "heldout": "heldout"}


class ClientInputs(Protocol):
  """What builds a round's per-client inputs: `NWPData` (datasets) or `worker_data.WorkerData` (file names)."""

  def client_datasets(self, client_ids: Sequence[str], spec: nwp.ClientSpec, split: str = "train",
                      seed: int = 0, round_num: int = 0) -> list[Any]:
    ...


@dataclasses.dataclass(frozen=True)
class _TrainClients:
  """Who a round may sample and what it sends them."""
  ids: Sequence[str]
  inputs: ClientInputs


@contextlib.contextmanager
def _worker_reads(client_data: Optional[worker_data.WorkerData]):
  """A worker's failed read of a client file as one line (`worker_data.WorkerDataError`)."""
  try:
    yield
  except Exception as e:  # pylint: disable=broad-except
    error = worker_data.missing_file_error(e, client_data.data_dir) if client_data is not None else None
    if error is None:
      raise
    raise error from None


class _Evaluator:
  """Federated evaluation of a state's model on the run's fixed clients of one split."""

  def __init__(self, training_process, evaluation_process, data: nwp.NWPData, config: LoopConfig, split: str,
               source: ClientInputs):
    self.client_ids = eval_client_ids(data, config, split)
    spec = nwp.ClientSpec(1, config.eval_batch_size, None, shuffle=False)
    self._datasets = source.client_datasets(self.client_ids, spec, split=split)
    self._training_process, self._process = training_process, evaluation_process
    self._state = evaluation_process.initialize()

  def __call__(self, state) -> dict[str, float]:
    weights = self._training_process.get_model_weights(state)
    self._state, metrics = evaluation.evaluate(self._process, self._state, weights, self._datasets)
    return _finite(metrics)


class _Evaluations:
  """Each evaluation set of the data, and when it is evaluated.

  With a validation split, validation is evaluated every `eval_every` rounds
  and test and held-out clients only at the last round, so tuning on the
  curve never reads test. Without one, every set is evaluated each time.
  """

  def __init__(self, training_process, evaluation_process, data: nwp.NWPData, config: LoopConfig,
               source: ClientInputs):
    self._config = config
    present = [s for s in EVAL_GROUPS if s == "test" or data.client_ids(s)]
    self.by_group = {EVAL_GROUPS[s]: _Evaluator(training_process, evaluation_process, data, config, s, source)
                     for s in present}

  def due(self, round_num: int) -> list[str]:
    """The groups evaluated after `round_num`."""
    if round_num == self._config.rounds:
      return list(self.by_group)
    if round_num % self._config.eval_every:
      return []
    return ["validation"] if "validation" in self.by_group else list(self.by_group)

  def __call__(self, state, groups=None) -> dict[str, dict[str, float]]:
    return {g: self.by_group[g](state) for g in (groups or self.by_group)}

  @property
  def client_ids(self) -> dict[str, list[str]]:
    return {g: e.client_ids for g, e in self.by_group.items()}


def run_federated_training(
    training_process,
    evaluation_process,
    data: nwp.NWPData,
    config: LoopConfig,
    run_dir: str,
    hparams: Optional[dict[str, Any]] = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
    hparam_defaults: Optional[Mapping[str, Any]] = None,
    files: Optional[RunFiles] = None,
    round_warning: Optional[Callable[[dict[str, Any], int], Optional[str]]] = None,
    round_metrics: Optional[Callable[[int, dict[str, Any]], dict[str, Any]]] = None,
    client_data: Optional[worker_data.WorkerData] = None,
) -> RunResult:
  """Trains for `config.rounds` rounds in total, resuming from `run_dir` if it has a checkpoint.

  Args:
    training_process: a learning process (`process.build_training_process`).
    evaluation_process: its federated evaluation (`evaluation.build_evaluation_process`).
    data: the clients' token windows.
    config: rounds, sampling, client batches, evaluation.
    run_dir: where the run's files live (see the module docstring).
    hparams: the run's settings, written to hparams.json; a rerun with others is refused.
    progress: show a progress bar.
    log: where lines go without a progress bar.
    hparam_defaults: the values of settings an older run did not record.
    files: where states and metrics go (default: `RunFiles(run_dir, config.keep_checkpoints)`).
    round_warning: `round_warning(record, round_num)` -> a line to show, or
      None; asked each round until it gives one (e.g. the secure sum's
      `masked_sum.quantization_warning`).
    round_metrics: `round_metrics(round_num, record)` -> more groups of the
      round's record (e.g. `{"privacy": {"epsilon": ...}}`, the accountant's,
      which may read the aggregator's groups of `record`).
    client_data: None: each round sends its clients' datasets, built here
      from `data`; a `worker_data.WorkerData`: it sends their file names and
      window orders, and the processes (composed with its
      `dataset_computation`) build the datasets on the workers.

  Returns:
    The rounds run, the final evaluation, each round's metrics and the final model weights.
  """
  start_time = time.time()
  os.makedirs(run_dir, exist_ok=True)
  _write_hparams(run_dir, hparams or {}, hparam_defaults or {})
  files = files or RunFiles(run_dir, config.keep_checkpoints)
  with runtime_context.guard_worker_calls():  # rounds are guarded one at a time, checkpoints outside
    state, resumed_from = _restore(files, training_process, config, log)
  source = client_data or data
  evaluations = _Evaluations(training_process, evaluation_process, data, config, source)
  rounds = range(resumed_from + 1, config.rounds + 1)
  bar = tqdm(total=config.rounds, initial=resumed_from, unit="round", dynamic_ncols=True) if (
      progress and len(rounds)) else None
  try:
    hooks = _Hooks(round_warning, round_metrics)
    with _worker_reads(client_data):
      state, history, final = _train_rounds(training_process, state, _TrainClients(data.train_client_ids, source),
                                            config, rounds, files, evaluations, hooks, bar, log)
  finally:
    if bar is not None:
      bar.close()
  if not len(rounds):
    final = _recorded_evals(files.metrics_path, resumed_from, evaluations.by_group)
  with runtime_context.guard_worker_calls(), _worker_reads(client_data):
    if set(final) != set(evaluations.by_group):
      final = evaluations(state)
    weights = training_process.get_model_weights(state)
  ids = evaluations.client_ids
  return RunResult(run_dir, max(resumed_from, config.rounds) if len(rounds) else resumed_from,
                   resumed_from, final["eval"], history, weights, time.time() - start_time, ids["eval"],
                   final, ids)


def _restore(files: RunFiles, training_process, config: LoopConfig, log) -> tuple[Any, int]:
  """The state to continue from and its round (0: a new run), said in one line when resumed."""
  state, resumed_from = files.restore(training_process.initialize())
  if resumed_from >= config.rounds:
    log(f"Run in {files.run_dir} is already complete at round {resumed_from} (asked for {config.rounds}); "
        "reporting its final evaluation.")
  elif resumed_from:
    log(f"Resuming from the round-{resumed_from} checkpoint in {files.run_dir}; "
        f"continuing at round {resumed_from + 1} of {config.rounds}.")
  return state, resumed_from


@dataclasses.dataclass(frozen=True)
class _Hooks:
  """What the caller adds to each round: a warning line, more metrics."""
  warning: Optional[Callable[[dict[str, Any], int], Optional[str]]] = None
  metrics: Optional[Callable[[int, dict[str, Any]], dict[str, Any]]] = None


def _train_rounds(training_process, state, clients: _TrainClients, config: LoopConfig,
                  rounds: range, files: RunFiles, evaluations: _Evaluations, hooks: _Hooks, bar, log):
  """Trains, evaluates and records `rounds`; returns the last state, each round's metrics and the last
  evaluation of each set (by group)."""
  history: list[dict[str, float]] = []
  final: dict[str, dict[str, float]] = {}
  warned = False
  for round_num in rounds:
    # A worker lost mid-round stops the loop here, before this round's checkpoint (runtime.liveness).
    # Everything that talks to a worker is inside: the round, its evaluations and the fetch of a state
    # kept on the worker for the checkpoint; the files are written outside, never interrupted.
    try:
      with runtime_context.guard_worker_calls():
        state, record = _train_round(training_process, state, clients, config, round_num)
        due = evaluations.due(round_num)
        results = evaluations(state, due) if due else {}
        checkpoint = resident.fetch(state)
    except liveness.WorkerLostError as e:
      raise e.during_round(round_num) from None
    if hooks.metrics is not None:
      record.update(hooks.metrics(round_num, record))
    warned = warned or _warn(hooks.warning, record, round_num, bar, log)
    record.update(results)
    final.update(results)
    files.record(record, round_num, checkpoint)
    history.append(_report(record, round_num, config.rounds, bar, log))
  return state, history, final


def _train_round(training_process, state, clients: _TrainClients, config: LoopConfig, round_num: int):
  """One round on its sampled clients; returns the new state and the round's record."""
  round_start = time.time()
  sample = sample_clients_in_epochs if config.client_sampling == "shuffled_epochs" else sample_clients
  client_ids = sample(clients.ids, config.clients_per_round, config.seed, round_num)
  datasets = clients.inputs.client_datasets(client_ids, config.client_spec, "train", config.seed, round_num)
  output = training_process.next(state, datasets)
  record: dict[str, Any] = {"train": _finite(evaluation.train_metrics(output.metrics))}
  record.update(evaluation.aggregator_metrics(output.metrics))
  record["round_seconds"] = time.time() - round_start
  return output.state, record


def _warn(round_warning, record: dict[str, Any], round_num: int, bar, log) -> bool:
  """Writes `round_warning`'s line, if any, to the run's log; returns whether it did.

  The caller stops asking after the first (once a run: metrics.csv has every round's figure).
  """
  warning = round_warning(record, round_num) if round_warning is not None else None
  if warning:
    (bar.write if bar is not None else log)(warning)
  return warning is not None


def _report(record: dict[str, Any], round_num: int, rounds: int, bar, log) -> dict[str, float]:
  """Shows a finished round on the progress bar or the log; returns its flat metrics."""
  flat = _flatten(record)
  flat["round"] = round_num
  line = f"round {round_num}/{rounds}: {_postfix(flat)} ({record['round_seconds']:.1f} s)"
  if bar is not None:
    bar.update(1)
    bar.set_postfix_str(_postfix(flat))
    bar.write(line)
  else:
    log(line)
  return flat


FAULT_ENV = "TFF_RESEARCH_FAULT"


def _inject_fault(point: str, round_num: int) -> None:
  """Crash tests: `TFF_RESEARCH_FAULT=before_checkpoint:3` SIGKILLs this process there.

  The kill lands after round 3's metrics were released and before its
  checkpoint exists, the worst moment for a resume to get right.
  """
  spec = os.environ.get(FAULT_ENV)
  if spec and spec == f"{point}:{round_num}":
    os.kill(os.getpid(), signal.SIGKILL)


def _recorded_evals(path: str, round_num: int, groups) -> dict[str, dict[str, float]]:
  """The evaluations metrics.csv holds for `round_num`, by group (a finished run is not evaluated again)."""
  if not os.path.isfile(path):
    return {}
  row = next((r for r in read_metrics_csv(path) if int(r["round"]) == round_num), {})
  found = {g: {k.split("/", 1)[1]: v for k, v in row.items() if k.startswith(f"{g}/")} for g in groups}
  return {g: metrics for g, metrics in found.items() if metrics}


def _flatten(record: dict[str, Any], prefix: str = "") -> dict[str, float]:
  flat = {}
  for key, value in record.items():
    if isinstance(value, dict):
      flat.update(_flatten(value, f"{prefix}{key}/"))
    else:
      flat[f"{prefix}{key}"] = float(value)
  return flat


def _postfix(flat: dict[str, float]) -> str:
  parts = [f"train loss {flat['train/loss']:.3f}", f"train acc {flat['train/accuracy']:.4f}"]
  for group, label in (("validation", "val"), ("eval", "eval"), ("heldout", "heldout")):
    if f"{group}/accuracy" in flat:
      parts.append(f"{label} acc {flat[f'{group}/accuracy']:.4f}")
  if "privacy/epsilon" in flat:
    parts.append(f"epsilon {flat['privacy/epsilon']:.3g}")
  return " ".join(parts)


def read_metrics_csv(path: str) -> list[dict[str, float]]:
  """metrics.csv as a list of rows (empty cells dropped), for plots and tests."""
  rows = []
  with open(path, encoding="utf-8", newline="") as f:
    for row in csv.DictReader(f):
      rows.append({k: float(v) for k, v in row.items() if v not in ("", None)})
  return rows
