r"""How much does federation cost? FedAvg round time vs plain Keras doing the same SGD steps.

  python -m benchmarks.round_overhead                 # demo preset
  python -m benchmarks.round_overhead --preset=clients50
  python -m benchmarks.round_overhead --preset=clients1000 --rounds=2   # 100, 300 as well

In one process, side by side: the median of the steady FedAvg rounds (all
but the first of `--rounds`, default 10) of our training path (TFF, local
worker, server state kept on the worker) and of plain Keras (a `tf.function`
train step with an input signature) running exactly the same clients,
examples, batches and steps in sequence, resetting to the global weights for
each client as FedAvg does. Rounds are interleaved (TFF round r and Keras
round r back to back, which one goes first alternating from round to round)
so that a slow spell of a shared machine hits both sides alike. Also: process
build time, first-round time, and peak RSS of this Python process and of the
TFF worker. The last line is `round_time_ratio=<x>`: the median over the
steady rounds of TFF's time over Keras's time for the same round. Rounds
differ in size (the sampled clients hold 16-25 batches in all), so the two
sides' medians can come from different rounds; their ratio is printed too
(`median_ratio`), as is the ratio of the sums.
"""
from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import threading
import time
from typing import TYPE_CHECKING, Callable, Optional, Sequence

from benchmarks import pairing
from tff_research.runtime import logs

if TYPE_CHECKING:  # type hints only: these modules import TensorFlow
  import tensorflow as tf

  from tff_research.data import nwp
  from tff_research.learning import process
  from tff_research.learning import training_loop
  from tff_research.learning.config import ExperimentConfig
  from tff_research.models import nwp as nwp_models

# One side's round on its client datasets; each side keeps its own model state between rounds.
RoundFn = Callable[[Sequence["tf.data.Dataset"]], None]

PRESETS = {
    # The reference setup: vocab 10k, embedding 96, LSTM 670, 10 clients x 64 sequences, batch 16.
    "demo": dict(vocab_size=10000, latent_size=670, clients_per_round=10, max_elements_per_client=64,
                 client_batch_size=16, client_epochs=1),
    "clients50": dict(vocab_size=10000, latent_size=670, clients_per_round=50, max_elements_per_client=64,
                      client_batch_size=16, client_epochs=1),
    # Clients a round at scale (issue: 10, 100, 300 and 1,000), the same model and clients as demo.
    **{f"clients{n}": dict(vocab_size=10000, latent_size=670, clients_per_round=n, max_elements_per_client=64,
                           client_batch_size=16, client_epochs=1) for n in (100, 300, 1000)},
    "small": dict(vocab_size=2000, latent_size=64, embedding_size=32, clients_per_round=10,
                  max_elements_per_client=32, client_batch_size=16, client_epochs=1),
}


class PeakRss:
  """Samples the RSS of this process and of its worker_binary children."""

  def __init__(self, interval: float = 0.2):
    import psutil  # pylint: disable=g-import-not-at-top
    self._psutil = psutil
    self.python_peak = 0
    self.worker_peak = 0
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._run, args=(interval,), daemon=True)
    self._thread.start()

  def _run(self, interval):
    me = self._psutil.Process()
    workers, tick = [], 0
    while not self._stop.is_set():
      try:
        if tick % 10 == 0:  # walking /proc for children is the costly part: rarely
          workers = [c for c in me.children(recursive=True) if "worker_binary" in c.name()]
        tick += 1
        self.python_peak = max(self.python_peak, me.memory_info().rss)
        self.worker_peak = max(self.worker_peak, sum(w.memory_info().rss for w in workers))
      except self._psutil.Error:
        workers = []
      time.sleep(interval)

  def stop(self):
    self._stop.set()
    self._thread.join()


def _parse(argv: Optional[Sequence[str]]) -> argparse.Namespace:
  """The command line's flags."""
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--preset", choices=sorted(PRESETS), default="demo")
  parser.add_argument("--rounds", type=int, default=21, help="rounds timed (the first is reported apart)")
  parser.add_argument("--server_optimizer", default="sgd")
  parser.add_argument("--max_concurrent_computation_calls", type=int, default=None,
                      help="TFF worker setting (-1: no limit; default: the local runtime's)")
  parser.add_argument("--initialize_in_graph", action="store_true",
                      help="run the model's initializers inside TFF's computations (slower; "
                           "measures what initial weights set from Python save)")
  parser.add_argument("--loop", choices=("iterator", "reduce"), default="iterator",
                      help="clients' batch loop (reduce: TFF's default, slower)")
  parser.add_argument("--state_round_trip", action="store_true",
                      help="send the server state to Python and back every round (as a plain tff.learning "
                           "process does; measures what keeping it on the worker saves)")
  parser.add_argument("--order", choices=("interleaved", "sequential"), default="interleaved",
                      help="interleaved: TFF round r then Keras round r; sequential: all TFF rounds, then all Keras")
  parser.add_argument("--clients_per_subround", type=int, default=0,
                      help="stream each round's clients in groups of at most this many (0: all at once; the "
                           "server state then travels through Python every round)")
  parser.add_argument("--data_dir", default=None)
  parser.add_argument("--verbose", action="store_true")
  return parser.parse_args(argv)


def _build_tff_round(args: argparse.Namespace, data: nwp.NWPData, model_config: nwp_models.ModelConfig,
                     algorithm: process.AlgorithmConfig) -> tuple[RoundFn, float]:
  """Builds and initializes our FedAvg process; returns its round function and the seconds that took."""
  from tff_research.learning import model_fn as model_fn_lib  # pylint: disable=g-import-not-at-top
  from tff_research.learning import process  # pylint: disable=g-import-not-at-top

  model_fn = model_fn_lib.build_model_fn(model_config, data.element_spec, data.vocab.special_ids, seed=0,
                                         initialize_in_graph=args.initialize_in_graph)
  # The model function is left out of the build time: only the process's construction is timed.
  start = time.perf_counter()
  training = process.build_training_process(model_fn, algorithm, keep_state_on_worker=not args.state_round_trip)
  state = training.initialize()
  build_seconds = time.perf_counter() - start

  def tff_round(datasets: Sequence[tf.data.Dataset]) -> None:
    nonlocal state
    state = training.next(state, datasets).state

  return tff_round, build_seconds


def _round_data(config: ExperimentConfig, data: nwp.NWPData, loop: training_loop.LoopConfig,
                rounds: int) -> list[list[tf.data.Dataset]]:
  """The sampled clients' training datasets of each round, built once so that both sides get the same."""
  from tff_research.learning import training_loop  # pylint: disable=g-import-not-at-top

  round_data = []
  for r in range(1, rounds + 1):
    ids = training_loop.sample_clients(data.train_client_ids, config.clients_per_round, 0, r)
    round_data.append(data.client_datasets(ids, loop.client_spec, "train", 0, r))
  return round_data


def _build_keras_round(config: ExperimentConfig, data: nwp.NWPData,
                       model_config: nwp_models.ModelConfig) -> RoundFn:
  """A plain Keras FedAvg round: the same clients, batches and steps, one after another."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  from tff_research.learning import centralized  # pylint: disable=g-import-not-at-top
  from tff_research.models import nwp as nwp_models  # pylint: disable=g-import-not-at-top
  from tff_research.runtime.eager import in_eager_mode  # pylint: disable=g-import-not-at-top

  model = in_eager_mode(nwp_models.build_nwp_model)(model_config, seed=0)
  train_step = centralized.build_train_step(model, tf.keras.optimizers.SGD(config.client_learning_rate),
                                            data.sequence_length)
  keras_weights = [model.get_weights()]

  def keras_round(datasets: Sequence[tf.data.Dataset]) -> None:
    global_weights = keras_weights[0]
    deltas, total = None, 0
    for ds in datasets:
      # Each client starts from the global weights, as in FedAvg.
      model.set_weights(global_weights)
      n = 0
      for x, y in ds:
        train_step(x, y)
        n += int(x.shape[0])
      delta = [w - g for w, g in zip(model.get_weights(), global_weights)]
      deltas = delta if deltas is None else [d + n * e for d, e in zip(deltas, delta)]
      total += n
    keras_weights[0] = [g + d / max(total, 1) for g, d in zip(global_weights, deltas)]

  return keras_round


def _timed(fn: RoundFn, datasets: Sequence[tf.data.Dataset]) -> float:
  """Wall seconds of one round of `fn` on `datasets`."""
  start = time.perf_counter()
  fn(datasets)
  return time.perf_counter() - start


def _time_rounds(order: str, round_data: Sequence[Sequence[tf.data.Dataset]], tff_round: RoundFn,
                 keras_round: RoundFn) -> tuple[list[float], list[float]]:
  """Runs every round on both sides in the `--order` given; returns TFF's and Keras's round seconds."""
  # Interleaved (default): round r of TFF and round r of Keras back to back,
  # TFF first in odd rounds and Keras first in even ones, so that a slow
  # spell of the machine, or whatever one side leaves behind for the next,
  # hits both sides alike.
  if order == "interleaved":
    tff_times, keras_times = [], []
    for r, datasets in enumerate(round_data, start=1):
      if r % 2:
        tff_times.append(_timed(tff_round, datasets))
        keras_times.append(_timed(keras_round, datasets))
      else:
        keras_times.append(_timed(keras_round, datasets))
        tff_times.append(_timed(tff_round, datasets))
  else:
    tff_times = [_timed(tff_round, datasets) for datasets in round_data]
    keras_times = [_timed(keras_round, datasets) for datasets in round_data]
  return tff_times, keras_times


def _print_report(args: argparse.Namespace, config: ExperimentConfig, steps: Sequence[int], concurrency: int,
                  build_seconds: float, tff_times: Sequence[float], keras_times: Sequence[float],
                  rss: PeakRss) -> None:
  """Prints the settings, the timings and memory peaks; the last line is `round_time_ratio=<x>`."""
  tff_steady = statistics.median(pairing.steady(tff_times))
  keras_steady = statistics.median(pairing.steady(keras_times))
  print(f"preset={args.preset} clients/round={config.clients_per_round} "
        f"clients_per_subround={args.clients_per_subround or config.clients_per_round} steps/round={steps} "
        f"server={args.server_optimizer} initialize_in_graph={args.initialize_in_graph} loop={args.loop} "
        f"order={args.order} state_round_trip={args.state_round_trip} "
        f"max_concurrent_computation_calls={concurrency}")
  print(f"build_seconds={build_seconds:.2f} first_round_tff={tff_times[0]:.2f} "
        f"first_round_keras={keras_times[0]:.2f}")
  print(f"steady_round_tff_median={tff_steady:.3f} steady_round_keras_median={keras_steady:.3f} "
        f"(over {max(len(tff_times) - 1, 1)} rounds)")
  print("tff_round_seconds=" + ",".join(f"{t:.2f}" for t in tff_times))
  print("keras_round_seconds=" + ",".join(f"{t:.2f}" for t in keras_times))
  print(f"peak_rss_python_gb={rss.python_peak / 2**30:.2f} peak_rss_worker_gb={rss.worker_peak / 2**30:.2f}")
  print("\n".join(pairing.paired_summary("round_time_ratio", tff_times, keras_times)))


def main(argv: Optional[Sequence[str]] = None) -> int:
  """Times FedAvg rounds of our training path against plain Keras on the same clients; prints the report."""
  args = _parse(argv)
  logs.configure_logging(args.verbose)

  # Imported only now: they import TensorFlow, whose logging must be configured first.
  from tff_research import runtime  # pylint: disable=g-import-not-at-top
  from tff_research.learning import experiment  # pylint: disable=g-import-not-at-top
  from tff_research.learning.config import ExperimentConfig  # pylint: disable=g-import-not-at-top

  config = ExperimentConfig(data_dir=args.data_dir, server_optimizer=args.server_optimizer,
                            server_learning_rate=1.0 if args.server_optimizer == "sgd" else 0.01,
                            **PRESETS[args.preset])
  data = experiment.load_nwp_data(config, verbose=False)
  loop = experiment.loop_config(config)
  rss = PeakRss()
  subrounds = runtime.context.subrounds_for(config.clients_per_round, args.clients_per_subround)
  with runtime.local_runtime(max_concurrent_computation_calls=args.max_concurrent_computation_calls,
                             num_subrounds=subrounds) as workers:
    concurrency = workers[0].max_concurrent_computation_calls
    model_config = experiment.model_config(config, data.vocab.size)
    algorithm = dataclasses.replace(experiment.algorithm_config(config), loop=args.loop)
    tff_round, build_seconds = _build_tff_round(args, data, model_config, algorithm)
    round_data = _round_data(config, data, loop, args.rounds)
    steps = [sum(1 for ds in datasets for _ in ds) for datasets in round_data]
    keras_round = _build_keras_round(config, data, model_config)
    tff_times, keras_times = _time_rounds(args.order, round_data, tff_round, keras_round)
  rss.stop()
  _print_report(args, config, steps, concurrency, build_seconds, tff_times, keras_times, rss)
  return 0


if __name__ == "__main__":
  sys.exit(main())
