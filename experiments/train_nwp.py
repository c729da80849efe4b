r"""Train a federated next-word (or next-character) prediction model with FedAvg and its variants, or FedSGD.

  python -m experiments.train_nwp --preset=demo
  python -m experiments.train_nwp --rounds=50 --server_optimizer=adam --server_learning_rate=0.01
  python -m experiments.train_nwp --preset=shakespeare_char --rounds=100

Rerunning with the same --output_dir/--experiment_name resumes from the last
checkpoint. All logic lives in `tff_research.learning.experiment`.
"""
from __future__ import annotations

import dataclasses
import sys

from absl import app
from absl import flags

from tff_research.learning import config as presets
from tff_research.learning import entry_point

_DEFAULTS = presets.ExperimentConfig()


def _define_config_flags() -> None:
  for field in dataclasses.fields(presets.ExperimentConfig):
    default = getattr(_DEFAULTS, field.name)
    help_text = field.metadata["help"]
    if isinstance(default, bool):
      flags.DEFINE_bool(field.name, default, help_text)
    elif isinstance(default, int):
      flags.DEFINE_integer(field.name, default, help_text)
    elif isinstance(default, float):
      flags.DEFINE_float(field.name, default, help_text)
    else:
      flags.DEFINE_string(field.name, default, help_text)


_define_config_flags()
flags.DEFINE_enum("preset", None, list(presets.PRESETS),
                  "start from a named configuration; flags given explicitly still win")
flags.DEFINE_string("workers", None, "comma-separated host:port of TFF workers "
                    "(python -m tff_research.runtime.worker); default: a local worker")
flags.DEFINE_float("worker_timeout", None, "seconds a worker may go without accepting a connection "
                   "before the run stops at its last checkpoint, naming it (default 60)")
flags.DEFINE_integer("clients_per_subround", 0, "stream each round's clients through the workers in groups of "
                     "at most this many, bounding their memory (0: the whole round at once)")
flags.DEFINE_string("worker_data_dir", None, "build client datasets on the workers from this directory (the "
                    "same path on every worker host; written here first where missing) instead of sending "
                    "them every round; same results")
flags.DEFINE_bool("export_worker_data_only", False, "write --worker_data_dir's client files and exit (to prepare "
                  "a worker host that shares no file system with the driver)")
flags.DEFINE_integer("max_concurrent_computation_calls", None,
                     "TFF worker setting (-1: no limit; default: one per core, each on one core, on up to 4 "
                     "cores; else no limit)")
flags.DEFINE_bool("verbose", False, "show TensorFlow/TFF's own logs")
flags.DEFINE_bool("progress", True, "show a progress bar (where stderr is a terminal; else a line per round)")
flags.DEFINE_bool("plot", True, "write learning_curve.png into the run directory")
FLAGS = flags.FLAGS


def config_from_flags() -> presets.ExperimentConfig:
  base = presets.PRESETS[FLAGS.preset] if FLAGS.preset else _DEFAULTS
  overrides = {f.name: FLAGS[f.name].value for f in dataclasses.fields(presets.ExperimentConfig)
               if FLAGS[f.name].present}
  return dataclasses.replace(base, **overrides)


def main(argv) -> int:
  del argv  # entry_point.parse_flags refused any left over
  deployment = entry_point.Deployment(
      workers=FLAGS.workers, worker_timeout=FLAGS.worker_timeout, clients_per_subround=FLAGS.clients_per_subround,
      max_concurrent_computation_calls=FLAGS.max_concurrent_computation_calls,
      worker_data_dir=FLAGS.worker_data_dir, export_worker_data_only=FLAGS.export_worker_data_only)
  return entry_point.run_training_entry_point(config_from_flags(), deployment, verbose=FLAGS.verbose,
                                              progress=FLAGS.progress, plot=FLAGS.plot)


if __name__ == "__main__":
  # Quiet TF before it is imported, unless --verbose is on the command line.
  from tff_research.runtime import logs  # pylint: disable=g-import-not-at-top
  logs.configure_logging(verbose="--verbose" in sys.argv or "--verbose=true" in sys.argv)
  app.run(main, flags_parser=entry_point.parse_flags)
