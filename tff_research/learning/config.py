"""Experiment configuration: every knob of `experiments/train_nwp.py`, and named presets.

Importing this module does not import TensorFlow (flag parsing and log
configuration happen first); the methods that build TF objects import lazily.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Optional


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
  # Task: next_word (word vocabulary) or next_char (TFF's Shakespeare character
  # baseline: 86 characters + pad/OOV/BOS/EOS, see data/next_char.py).
  task: str = "next_word"
  # Data.
  dataset: str = "shakespeare"
  data_dir: Optional[str] = None
  # Your own corpus (jsonl:, textdir:): filter and train/test split (data/splits.py).
  min_words: int = 20           # clients with fewer words are dropped
  train_fraction: float = 0.8   # share of texts, clients or windows that trains
  split: str = "auto"           # auto, by_text, by_client or by_window
  text_unit: str = "line"       # textdir: a text is a line, or a blank-line separated paragraph
  vocab_size: int = 10000
  num_oov_buckets: int = 1
  sequence_length: int = 20
  # Model.
  embedding_size: int = 96
  latent_size: int = 670
  num_layers: int = 1
  cell: str = "lstm"
  output_bias_init: str = "zeros"   # or "unigram": log word frequencies of the train clients
  # Algorithm.
  algorithm: str = "fedavg"
  client_optimizer: str = "sgd"
  client_learning_rate: float = 0.5
  server_optimizer: str = "sgd"
  server_learning_rate: float = 1.0
  server_momentum: float = 0.9
  server_epsilon: float = 1e-3
  server_beta_2: float = 0.99           # adam, yogi
  server_initial_accumulator: float = 0.1  # adagrad
  aggregator: str = "plain"
  secure_neighbors: int = 0       # 0 = the smallest degree the Bell et al. bound allows
  secure_threshold: int = 0       # 0 = chosen within the bound
  secure_max_dropout: float = 0.1  # delta: fraction of a round's clients the protocol lets drop
  secure_max_corrupt: float = 0.05  # gamma: fraction of corrupt clients it withstands
  secure_prg: str = "aes-ctr"     # mask PRG: aes-ctr (cryptographic) or philox (fast, not cryptographic)
  secure_clip: float = 100.0     # bound on each coordinate of (num_examples x model delta)
  secure_bits: int = 0            # 0 = 16 or 21 when they hold the clients' sum finely enough, else 32
  dropout_rate: float = 0.0
  # Loop.
  rounds: int = 10
  clients_per_round: int = 10
  client_epochs: int = 1
  client_batch_size: int = 16
  max_elements_per_client: int = 64   # sequences per client per round; 0 = all
  eval_every: int = 5
  eval_clients: int = 100
  eval_batch_size: int = 64
  seed: int = 0
  # Output.
  output_dir: str = "results"
  experiment_name: str = "shakespeare_fedavg"

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
    choices = {"task": TASKS, "algorithm": ("fedavg", "fedsgd"), "aggregator": ("plain", "secure"),
               "server_optimizer": ("sgd", "sgdm", "adagrad", "adam", "yogi"),
               "client_optimizer": ("sgd", "sgdm", "adam"), "cell": ("lstm", "cifg"),
               "output_bias_init": ("zeros", "unigram"), "secure_prg": ("aes-ctr", "philox")}
    for name, allowed in choices.items():
      if getattr(self, name) not in allowed:
        raise ValueError(f"--{name}={getattr(self, name)!r} is not one of: {', '.join(allowed)}")
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
      secure.secure_sum_config().protocol_parameters(self.clients_per_round)
    except ValueError as e:
      raise ValueError(f"--aggregator=secure: {e}") from None

  def secure_aggregation_config(self):
    """The `aggregation.SecureAggregationConfig` of this run (imports TensorFlow)."""
    from tff_research.aggregation import secure_fed_avg  # pylint: disable=g-import-not-at-top
    return secure_fed_avg.SecureAggregationConfig(
        neighbors=self.secure_neighbors or None, threshold=self.secure_threshold or None,
        clip=self.secure_clip, bits=self.secure_bits, dropout_rate=self.dropout_rate,
        max_dropout=self.secure_max_dropout, max_corrupt=self.secure_max_corrupt, prg=self.secure_prg,
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
                                  kernel_initializer="he_normal" if char else "glorot_uniform")


TASKS = ("next_word", "next_char")
_CORPUS_OPTIONS = ("min_words", "train_fraction", "split", "text_unit")

# Named starting points; flags given explicitly override them.
PRESETS: dict[str, ExperimentConfig] = {
    # `make demo`: FedAdam (Reddi et al. 2021) on Shakespeare with a smaller LSTM,
    # a few minutes on 2 cores.
    "demo": ExperimentConfig(
        vocab_size=10000, latent_size=256, output_bias_init="unigram", rounds=40,
        clients_per_round=10, max_elements_per_client=64, client_learning_rate=1.0,
        server_optimizer="adam", server_learning_rate=0.02, server_epsilon=1e-5,
        eval_every=10, eval_clients=100, experiment_name="shakespeare_fedavg",
        # --aggregator=secure: the largest |num_examples x delta| measured over
        # 20 rounds x 10 clients of this preset was 8.6 (BENCHMARKS.md).
        secure_clip=16.0),
    # TFF's Shakespeare character baseline with Reddi et al. 2021's FedAvg
    # setting: 10 clients a round, one epoch at batch 4, client lr 1 (their
    # Table 2 runs 1,200 rounds; papers/adaptive_optimizers_char.py runs all five).
    "shakespeare_char": ExperimentConfig(
        task="next_char", sequence_length=80, embedding_size=8, latent_size=256, num_layers=2,
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
