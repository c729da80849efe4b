r"""Train a federated next-word (or next-character) prediction model (FedAvg / FedAvgM / FedAdagrad / FedAdam / FedYogi / FedSGD).

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

_DEFAULTS = presets.ExperimentConfig()
_HELP = {
    "task": "next_word, or next_char: TFF's Shakespeare character baseline (86 characters, "
            "McMahan et al.'s split on --dataset=shakespeare; see --preset=shakespeare_char)",
    "dataset": "federated text: shakespeare | stackoverflow[:max_clients=N] (TFF's SQLite file "
               "in --data_dir) | jsonl:PATH | textdir:PATH (see docs/data.md)",
    "data_dir": "where corpora are cached (default: ~/.cache/tff_research)",
    "min_words": "jsonl:/textdir: drop clients with fewer words than this",
    "train_fraction": "jsonl:/textdir: share of texts, clients or windows that trains, in (0, 1)",
    "split": "jsonl:/textdir: train/test split: auto (by_text where enough clients have two or more texts, "
             "else by_client), by_text, by_client (hold out whole clients), by_window (last token windows "
             "of each client); see docs/data.md",
    "text_unit": "textdir: a text is a line, or a blank-line separated paragraph (hard-wrapped prose)",
    "vocab_size": "next_word: number of words in the vocabulary (most frequent train words); next_char uses TFF's 86 characters",
    "num_oov_buckets": "next_word: out-of-vocabulary buckets (next_char has one, as TFF)",
    "sequence_length": "tokens (words, or characters for next_char) per training sequence",
    "embedding_size": "word embedding size",
    "latent_size": "LSTM/CIFG units",
    "num_layers": "recurrent layers",
    "cell": "recurrent cell: lstm or cifg (Hard et al. 2018)",
    "output_bias_init": "zeros, or unigram: start the output bias at log word frequencies",
    "algorithm": "fedavg or fedsgd",
    "client_optimizer": "client optimizer: sgd, sgdm, adam",
    "client_learning_rate": "client learning rate",
    "server_optimizer": "server optimizer: sgd (FedAvg), sgdm (FedAvgM), adagrad, adam, yogi",
    "server_learning_rate": "server learning rate",
    "server_momentum": "server momentum (sgdm)",
    "server_epsilon": "server epsilon / tau (adagrad, adam, yogi)",
    "server_beta_2": "server second-moment decay (adam, yogi)",
    "server_initial_accumulator": "server adagrad's initial accumulator (TFF's default 0.1)",
    "aggregator": "plain (TFF weighted mean) or secure (pairwise-masked secure sum)",
    "secure_neighbors": "secure sum: masking neighbours per client k, even (SecAgg+), checked against the "
                        "Bell et al. bound; 0 = the smallest safe k; >= clients_per_round - 1 = the complete graph (SecAgg)",
    "secure_threshold": "secure sum: Shamir threshold t, checked against the bound (0 = chosen within it)",
    "secure_max_dropout": "secure sum: the fraction of a round's clients that may drop (delta); sets k and t, "
                          "and a round with more dropouts is refused on a SecAgg+ graph",
    "secure_max_corrupt": "secure sum: the fraction of clients that may collude with the server (gamma); sets k and t",
    "secure_prg": "secure sum: mask PRG, aes-ctr (AES-128-CTR, cryptographic) or philox (fast, not cryptographic)",
    "secure_clip": "secure sum: clip values to [-c, c] before quantization",
    "secure_bits": "secure sum: bits per quantized coordinate, 2-32 (<= 21 packs 64 // b per masked 64-bit word: fewer mask bits, coarser steps); 0 = 16, else 21, where they hold the clients' sum with >= 2^9 levels per client, else 32",
    "dropout_rate": "secure sum: simulated fraction of sampled clients that drop after sharing keys "
                    "(at most --secure_max_dropout)",
    "rounds": "total rounds (a resumed run continues up to this)",
    "clients_per_round": "clients sampled uniformly each round",
    "client_epochs": "local epochs per round",
    "client_batch_size": "local batch size",
    "max_elements_per_client": "sequences per client per round (0 = all)",
    "eval_every": "evaluate on test clients every this many rounds (and at the end)",
    "eval_clients": "test clients in the evaluation sample (0 = all)",
    "eval_batch_size": "evaluation batch size",
    "seed": "seed for sampling, batch order and initial weights",
    "output_dir": "root directory of runs",
    "experiment_name": "run directory name under output_dir",
}


def _define_config_flags() -> None:
  for field in dataclasses.fields(presets.ExperimentConfig):
    default = getattr(_DEFAULTS, field.name)
    help_text = _HELP.get(field.name, field.name)
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
flags.DEFINE_integer("max_concurrent_computation_calls", None,
                     "TFF worker setting (-1: no limit; default: one per core, each on one core, on up to 4 cores; else no limit)")
flags.DEFINE_bool("verbose", False, "show TensorFlow/TFF's own logs")
flags.DEFINE_bool("progress", True, "show a progress bar")
flags.DEFINE_bool("plot", True, "write learning_curve.png into the run directory")
FLAGS = flags.FLAGS


def config_from_flags() -> presets.ExperimentConfig:
  base = presets.PRESETS[FLAGS.preset] if FLAGS.preset else _DEFAULTS
  overrides = {f.name: FLAGS[f.name].value for f in dataclasses.fields(presets.ExperimentConfig)
               if FLAGS[f.name].present}
  return dataclasses.replace(base, **overrides)


def main(argv) -> int:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  from tff_research.learning import entry_point  # pylint: disable=g-import-not-at-top
  return entry_point.run_training_entry_point(
      config_from_flags(), workers=FLAGS.workers, verbose=FLAGS.verbose, progress=FLAGS.progress,
      plot=FLAGS.plot, max_concurrent_computation_calls=FLAGS.max_concurrent_computation_calls)


if __name__ == "__main__":
  # Quiet TF before it is imported, unless --verbose is on the command line.
  from tff_research.runtime import logs  # pylint: disable=g-import-not-at-top
  logs.configure_logging(verbose="--verbose" in sys.argv or "--verbose=true" in sys.argv)
  app.run(main)
