"""Experiment configuration: every knob of `experiments/train_nwp.py`, and named presets.

Importing this module does not import TensorFlow (flag parsing and log
configuration happen first); the methods that build TF objects import lazily.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Optional

from tff_research.data import shakespeare as shakespeare_lib

TASKS = ("next_word", "next_char")


def setting(default: Any, description: str, choices: Optional[tuple[str, ...]] = None) -> Any:
  """A config field whose flag help (and allowed values) live beside it."""
  return dataclasses.field(default=default, metadata={"help": description, "choices": choices})


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
  """Every setting of one run. Each field is one command-line flag of the same name.

  Settings of the secure sum carry the prefix `secure_` here and drop it in
  `aggregation.SecureAggregationConfig` (`secure_neighbors` is its `neighbors`).
  """
  task: str = setting("next_word", "next_word, or next_char: TFF's Shakespeare character baseline (86 characters, "
                      "McMahan et al.'s split on --dataset=shakespeare; see --preset=shakespeare_char)", TASKS)
  # Data.
  dataset: str = setting("shakespeare", "federated text: shakespeare | stackoverflow[:max_clients=N] (TFF's "
                         "SQLite file in --data_dir) | jsonl:PATH | textdir:PATH (see docs/data.md)")
  data_dir: Optional[str] = setting(None, "where corpora are cached (default: ~/.cache/tff_research)")
  shakespeare_unit: str = setting(shakespeare_lib.DEFAULT_UNIT, "next_char on --dataset=shakespeare: an example "
                                  "is a speech, or one line of it (McMahan et al. 2017's examples)",
                                  shakespeare_lib.UNITS)
  min_words: int = setting(20, "jsonl:/textdir: drop clients with fewer words than this")
  train_fraction: float = setting(0.8, "jsonl:/textdir: share of texts, clients or windows that trains, in (0, 1)")
  split: str = setting("auto", "jsonl:/textdir: train/test split: auto (by_text where enough clients have two or "
                       "more texts, else by_client), by_text, by_client (hold out whole clients), by_window (last "
                       "token windows of each client); see docs/data.md")
  text_unit: str = setting("line", "textdir: a text is a line, or a blank-line separated paragraph "
                           "(hard-wrapped prose)")
  vocab_size: int = setting(10000, "next_word: number of words in the vocabulary (most frequent train words); "
                            "next_char uses TFF's 86 characters")
  num_oov_buckets: int = setting(1, "next_word: out-of-vocabulary buckets (next_char has one, as TFF)")
  sequence_length: int = setting(20, "tokens (words, or characters for next_char) per training sequence")
  # Model.
  embedding_size: int = setting(96, "token embedding size")
  latent_size: int = setting(670, "LSTM/CIFG units")
  num_layers: int = setting(1, "recurrent layers")
  cell: str = setting("lstm", "recurrent cell: lstm, or cifg (Hard et al. 2018)", ("lstm", "cifg"))
  lstm_implementation: str = setting(
      "keras", "how lstm cells run: keras (tf.keras.layers.LSTM), or block (TF's fused kernel, the same function "
      "for padding that trails each sequence, as in next_char windows; about 5x faster steps on a CPU)",
      ("keras", "block"))
  output_bias_init: str = setting("zeros", "zeros, or unigram: start the output bias at log token frequencies "
                                  "of the train clients", ("zeros", "unigram"))
  # Algorithm.
  algorithm: str = setting("fedavg", "fedavg or fedsgd", ("fedavg", "fedsgd"))
  client_optimizer: str = setting("sgd", "client optimizer", ("sgd", "sgdm", "adam"))
  client_learning_rate: float = setting(0.5, "client learning rate")
  server_optimizer: str = setting("sgd", "server optimizer: sgd (FedAvg), sgdm (FedAvgM), adagrad, adam, yogi",
                                  ("sgd", "sgdm", "adagrad", "adam", "yogi"))
  server_learning_rate: float = setting(1.0, "server learning rate")
  server_momentum: float = setting(0.9, "server momentum (sgdm)")
  server_epsilon: float = setting(1e-3, "server epsilon / tau (adagrad, adam, yogi)")
  server_beta_2: float = setting(0.99, "server second-moment decay (adam, yogi)")
  server_initial_accumulator: float = setting(0.1, "server adagrad's initial accumulator (TFF's default 0.1)")
  aggregator: str = setting("plain", "plain (TFF's weighted mean) or secure (pairwise-masked secure sum)",
                            ("plain", "secure"))
  secure_neighbors: int = setting(0, "secure sum: masking neighbours per client k, even (SecAgg+), checked "
                                  "against the Bell et al. bound; 0 = the smallest safe k; >= clients_per_round "
                                  "- 1 = the complete graph (SecAgg)")
  secure_threshold: int = setting(0, "secure sum: Shamir threshold t, checked against the bound (0 = chosen "
                                  "within it)")
  secure_max_dropout: float = setting(0.1, "secure sum: the fraction of a round's clients that may drop (delta); "
                                      "sets k and t, and a round with more dropouts is refused")
  secure_max_corrupt: float = setting(0.05, "secure sum: the fraction of clients that may collude with the server "
                                      "(gamma); sets k and t")
  secure_min_honest: int = setting(2, "secure sum: honest inputs every released sum must hold even if the corrupt "
                                   "clients all survive; rounds too small for it are refused")
  secure_server_chosen_dropouts: bool = setting(False, "secure sum: the threat model lets the server choose who "
                                                "drops (it knows the masking graph): k > corrupt + dropped clients")
  secure_active_server: bool = setting(False, "secure sum: the server may deviate from the protocol: signed keys "
                                       "(Ed25519, simulated PKI) and Bonawitz et al.'s consistency check; implies "
                                       "--secure_server_chosen_dropouts")
  secure_prg: str = setting("aes-ctr", "secure sum: mask PRG, aes-ctr (AES-128-CTR, cryptographic) or philox "
                            "(fast, not cryptographic)", ("aes-ctr", "philox"))
  secure_clip: float = setting(100.0, "secure sum: clip each coordinate of (num_examples x model delta) to "
                               "[-c, c] before quantization (secure/clipped counts what it clips; the demo's "
                               "updates on Shakespeare and on a man-page corpus stayed below 100)")
  secure_bits: int = setting(0, "secure sum: bits per quantized coordinate, 2-32 (<= 21 packs 64 // b per masked "
                             "64-bit word: fewer mask bits, coarser steps); 0 = 16, else 21, where they hold the "
                             "clients' sum with >= 2^13 levels per client (16 for up to 7 clients, 21 up to "
                             "255), else 32; secure/quantization_error in metrics.csv says how far it moved each "
                             "round's mean")
  dropout_rate: float = setting(0.0, "secure sum: simulated fraction of sampled clients that drop after sharing "
                                "keys (at most --secure_max_dropout)")
  # Loop.
  rounds: int = setting(10, "total rounds (a resumed run continues up to this)")
  clients_per_round: int = setting(10, "clients sampled uniformly each round")
  client_epochs: int = setting(1, "local epochs per round")
  client_batch_size: int = setting(16, "local batch size")
  max_elements_per_client: int = setting(64, "sequences per client per round (0 = all)")
  eval_every: int = setting(5, "evaluate on test clients every this many rounds (and at the end)")
  eval_clients: int = setting(100, "test clients in the evaluation sample (0 = all)")
  eval_batch_size: int = setting(64, "evaluation batch size")
  seed: int = setting(0, "seed for sampling, batch order and initial weights")
  # Output.
  output_dir: str = setting("results", "root directory of runs")
  experiment_name: str = setting("shakespeare_fedavg", "run directory name under output_dir")

  @property
  def run_dir(self) -> str:
    return os.path.join(self.output_dir, self.experiment_name)

  def validate(self) -> None:
    """Raises ValueError with one line naming the first bad setting."""
    positive = ("vocab_size", "num_oov_buckets", "sequence_length", "embedding_size", "latent_size",
                "num_layers", "rounds", "clients_per_round", "client_epochs", "client_batch_size",
                "eval_every", "eval_batch_size", "client_learning_rate", "server_learning_rate",
                "secure_clip")
    for name in positive:
      if not getattr(self, name) > 0:
        raise ValueError(f"--{name} must be positive, got {getattr(self, name)}")
    for name in ("max_elements_per_client", "eval_clients", "secure_neighbors", "secure_threshold"):
      if getattr(self, name) < 0:
        raise ValueError(f"--{name} must be 0 or positive, got {getattr(self, name)}")
    if not 0.0 <= self.server_beta_2 < 1.0:
      raise ValueError(f"--server_beta_2 must be in [0, 1), got {self.server_beta_2}")
    if not self.server_initial_accumulator >= 0.0:
      raise ValueError(f"--server_initial_accumulator must be 0 or positive, got {self.server_initial_accumulator}")
    if not 0.0 <= self.dropout_rate < 1.0:
      raise ValueError(f"--dropout_rate must be in [0, 1), got {self.dropout_rate}")
    if self.secure_bits != 0 and not 2 <= self.secure_bits <= 32:
      raise ValueError(f"--secure_bits must be 0 (choose) or in [2, 32], got {self.secure_bits}")
    if not self.experiment_name or os.sep in self.experiment_name:
      raise ValueError(f"--experiment_name must be a plain name, got {self.experiment_name!r}")
    for field in dataclasses.fields(self):
      allowed = field.metadata.get("choices")
      name = field.name
      if allowed and getattr(self, name) not in allowed:
        raise ValueError(f"--{name}={getattr(self, name)!r} is not one of: {', '.join(allowed)}")
    if (self.shakespeare_unit != shakespeare_lib.DEFAULT_UNIT
        and (self.task, self.dataset) != ("next_char", "shakespeare")):
      raise ValueError("--shakespeare_unit applies to --task=next_char with --dataset=shakespeare")
    if self.aggregator == "secure" and self.algorithm != "fedavg":
      raise ValueError("--aggregator=secure is implemented for --algorithm=fedavg")
    if self.aggregator == "secure":
      self._validate_secure()
    self._validate_corpus_options()

  def _validate_corpus_options(self) -> None:
    kind = self.dataset.partition(":")[0]
    defaults = ExperimentConfig()
    given = [name for name in _CORPUS_OPTIONS if getattr(self, name) != getattr(defaults, name)]
    if kind not in ("jsonl", "textdir") and given:
      raise ValueError(f"--{given[0]} applies to jsonl: and textdir: corpora, not --dataset={self.dataset}")
    if kind == "jsonl" and self.text_unit != defaults.text_unit:
      raise ValueError("--text_unit applies to textdir: corpora (a JSON Lines record is one text)")
    from tff_research.data import user_corpus  # pylint: disable=g-import-not-at-top
    try:
      user_corpus.check_settings(self.min_words, self.train_fraction, self.split, self.text_unit)
    except ValueError as e:
      raise ValueError(f"--{e}") from None

  def corpus_options(self) -> dict[str, object]:
    """Options for `data.load_federated_text` (your own corpus only)."""
    kind = self.dataset.partition(":")[0]
    if kind not in ("jsonl", "textdir"):
      return {}
    options = {"min_words": self.min_words, "train_fraction": self.train_fraction, "split": self.split}
    if kind == "textdir":
      options["text_unit"] = self.text_unit
    return options

  def _validate_secure(self) -> None:
    """The secure sum's settings, checked for this run's clients per round (imports TensorFlow)."""
    try:
      secure = self.secure_aggregation_config()
      secure.secure_sum_config().smallest_round(self.clients_per_round)  # every round size up to it
    except ValueError as e:
      raise ValueError(f"--aggregator=secure: {e}") from None

  def secure_aggregation_config(self):
    """The `aggregation.SecureAggregationConfig` of this run (imports TensorFlow)."""
    from tff_research.aggregation import secure_fed_avg  # pylint: disable=g-import-not-at-top
    return secure_fed_avg.SecureAggregationConfig(
        neighbors=self.secure_neighbors or None, threshold=self.secure_threshold or None,
        clip=self.secure_clip, bits=self.secure_bits, dropout_rate=self.dropout_rate,
        max_dropout=self.secure_max_dropout, max_corrupt=self.secure_max_corrupt, prg=self.secure_prg,
        min_honest=self.secure_min_honest, server_chosen_dropouts=self.secure_server_chosen_dropouts,
        active_server=self.secure_active_server,
        seed=self.seed,
        # The overflow bound needs only this run's clients per round and the
        # most examples a client can weigh in with: tighter bounds leave a
        # finer fixed-point scale (which matters at 16 bits).
        num_clients=self.clients_per_round,
        int_clip=(self.max_elements_per_client * self.client_epochs
                           if self.max_elements_per_client else 2**16))

  def algorithm_config(self):
    """A `process.AlgorithmConfig` (imports TensorFlow)."""
    from tff_research.learning import optimizers as optimizers_lib  # pylint: disable=g-import-not-at-top
    from tff_research.learning import process as process_lib  # pylint: disable=g-import-not-at-top
    secure = self.secure_aggregation_config() if self.aggregator == "secure" else None
    return process_lib.AlgorithmConfig(
        algorithm=self.algorithm,
        client_optimizer=optimizers_lib.OptimizerConfig(self.client_optimizer, self.client_learning_rate),
        server_optimizer=optimizers_lib.OptimizerConfig(
            self.server_optimizer, self.server_learning_rate, momentum=self.server_momentum,
            epsilon=self.server_epsilon, beta_2=self.server_beta_2,
            initial_accumulator=self.server_initial_accumulator),
        aggregator=self.aggregator, secure=secure)

  def loop_config(self):
    """A `training_loop.LoopConfig` (imports TensorFlow)."""
    from tff_research.data import nwp  # pylint: disable=g-import-not-at-top
    from tff_research.learning import training_loop  # pylint: disable=g-import-not-at-top
    epochs, max_elements = self.client_epochs, self.max_elements_per_client or None
    batch_size = self.client_batch_size
    if self.algorithm == "fedsgd":
      epochs = 1  # FedSGD: one gradient over the client's data per round
    return training_loop.LoopConfig(
        rounds=self.rounds, clients_per_round=self.clients_per_round,
        client_spec=nwp.ClientSpec(epochs, batch_size, max_elements),
        eval_every=self.eval_every, eval_clients=self.eval_clients,
        eval_batch_size=self.eval_batch_size, seed=self.seed)

  def model_config(self, vocab_size: int):
    """A `models.nwp.ModelConfig` for an output layer of `vocab_size` classes.

    For next_char, TFF's character model's shape: no projection layer, he-normal LSTM kernels.
    """
    from tff_research.models import nwp as nwp_models  # pylint: disable=g-import-not-at-top
    char = self.task == "next_char"
    return nwp_models.ModelConfig(vocab_size, self.embedding_size, self.latent_size,
                                  self.num_layers, self.cell, projection=not char,
                                  kernel_initializer="he_normal" if char else "glorot_uniform",
                                  lstm_implementation=self.lstm_implementation)


_CORPUS_OPTIONS = ("min_words", "train_fraction", "split", "text_unit")

# Named starting points; flags given explicitly override them.
PRESETS: dict[str, ExperimentConfig] = {
    # `make demo`: FedAdam (Reddi et al. 2021) on Shakespeare, sized to learn
    # the most in about three minutes on 2 cores (BENCHMARKS.md "make demo"):
    # a 5,000-word vocabulary, embedding 64, LSTM 128, 80 rounds of 10 clients
    # at batch 4 (the median role has about 8 train windows, so batch 16 would
    # be one step a round), the word-level experiments' learning rates.
    "demo": ExperimentConfig(
        vocab_size=5000, embedding_size=64, latent_size=128, output_bias_init="unigram", rounds=80,
        clients_per_round=10, max_elements_per_client=64, client_batch_size=4, client_learning_rate=10 ** -0.5,
        server_optimizer="adam", server_learning_rate=10 ** -1.5, server_epsilon=1e-5,
        eval_every=40, eval_clients=100, experiment_name="shakespeare_fedavg"),
    # The benchmarks' model (secure aggregation, memory, remote workers): FedAdam
    # with a 10,000-word vocabulary and LSTM 256 at batch 16.
    "reference": ExperimentConfig(
        vocab_size=10000, latent_size=256, output_bias_init="unigram", rounds=40,
        clients_per_round=10, max_elements_per_client=64, client_learning_rate=1.0,
        server_optimizer="adam", server_learning_rate=0.02, server_epsilon=1e-5,
        eval_every=10, eval_clients=100, experiment_name="reference",
        # --aggregator=secure: the largest |num_examples x delta| measured over
        # 20 rounds x 10 clients of this preset was 8.6 (BENCHMARKS.md).
        secure_clip=16.0),
    # TFF's Shakespeare character baseline with Reddi et al. 2021's FedAvg
    # setting: 10 clients a round, one epoch at batch 4, client lr 1 (their
    # Table 2 runs 1,200 rounds; papers/adaptive_optimizers_char.py runs all five).
    "shakespeare_char": ExperimentConfig(
        task="next_char", sequence_length=80, embedding_size=8, latent_size=256, num_layers=2,
        lstm_implementation="block",
        rounds=1200, clients_per_round=10, client_batch_size=4, max_elements_per_client=0,
        client_learning_rate=1.0, server_optimizer="sgd", server_learning_rate=1.0,
        eval_every=50, eval_clients=0, eval_batch_size=64, experiment_name="shakespeare_char"),
    # Tests: tiny model and data, seconds per round.
    "smoke": ExperimentConfig(
        vocab_size=200, embedding_size=8, latent_size=16, rounds=2, clients_per_round=3,
        max_elements_per_client=8, client_batch_size=4, eval_every=1, eval_clients=4,
        experiment_name="smoke"),
    # TFF's Stack Overflow baseline sizes on Shakespeare (Reddi et al. 2021 learning rates).
    "baseline": ExperimentConfig(
        vocab_size=10000, latent_size=670, rounds=200, clients_per_round=10,
        client_learning_rate=10 ** -0.5, server_optimizer="adam", server_learning_rate=0.01,
        server_epsilon=1e-5, eval_every=10, experiment_name="shakespeare_baseline"),
}
