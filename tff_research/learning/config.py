"""Experiment configuration: every knob of `experiments/train_nwp.py`, and named presets.

Plain data: importing this module does not import TensorFlow (flag parsing
and log configuration happen first), and the objects a run is built of are
built from it in `experiment`. Each setting is validated once, by the object
that owns it (`aggregation.SecureSumConfig`, `composers.DropoutSimulation`,
`training_loop.LoopConfig`, ...); `validate` builds the TF-free ones early
and names the flag of the first bad value.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Optional

from tff_research import tasks as tasks_lib
from tff_research.aggregation import config as secure_config_lib
from tff_research.data import datasets as datasets_lib
from tff_research.data import shakespeare as shakespeare_lib
from tff_research.data import splits as splits_lib
from tff_research.learning import dropouts as dropouts_lib
from tff_research.privacy import config as dp_config_lib

TASKS = tuple(tasks_lib.TASKS)


def setting(default: Any, description: str, choices: Optional[tuple[str, ...]] = None) -> Any:
  """A config field whose flag help (and allowed values) live beside it."""
  return dataclasses.field(default=default, metadata={"help": description, "choices": choices})


_SECURE = secure_config_lib.SecureSumConfig()  # the secure sum's defaults, named once (there)


def secure_setting(name: str, description: str, choices: Optional[tuple[str, ...]] = None) -> Any:
  """`--secure_<name>`: the secure sum's field `name`, with its default (0 on the command line for None)."""
  default = getattr(_SECURE, name)
  return setting(0 if default is None else default, f"secure sum: {description}", choices)


_DP = dp_config_lib.DpConfig()  # differential privacy's defaults, named once (there)


def dp_setting(name: str, description: str, choices: Optional[tuple[str, ...]] = None) -> Any:
  """`--dp_<name>` (`--dp` for the mode, `--target_epsilon`): the DpConfig field `name`, with its default."""
  return setting(getattr(_DP, name), f"differential privacy: {description}", choices)


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
  """Every setting of one run. Each field is one command-line flag of the same name.

  Settings of the secure sum carry the prefix `secure_` here and drop it in
  `aggregation.SecureSumConfig`, which owns their defaults and checks
  (`secure_neighbors` is its `neighbors`; `secure_sum_config`).
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
  heldout_clients: float = setting(0.0, "share of clients held out whole: never trained on, not in the "
                                   "vocabulary, evaluated as heldout/ in metrics.csv (stackoverflow: 0.1 reads "
                                   "TFF's heldout split)")
  validation_fraction: float = setting(0.0, "share of the test clients evaluated every --eval_every rounds as "
                                       "validation/ (what tuning reads); the other test clients are evaluated "
                                       "only at the end")
  vocab_size: int = setting(10000, "next_word: number of words in the vocabulary (most frequent train words); "
                            "next_char uses TFF's 86 characters")
  num_oov_buckets: int = setting(1, "next_word: out-of-vocabulary buckets (next_char has one, as TFF)")
  sequence_length: int = setting(20, "tokens (words, or characters for next_char) per training sequence")
  # Model.
  keras_model: str = setting("", "your own Keras model instead of ours: 'package.module:function', a function of "
                             "the vocabulary size returning a model from [batch, time] token ids to [batch, time, "
                             "vocab] logits (models/custom.py); the model-shape settings below are then unused")
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
  secure_neighbors: int = secure_setting("neighbors", "masking neighbours per client k, even (SecAgg+), checked "
                                          "against the Bell et al. bound; 0 = the smallest safe k; >= "
                                          "clients_per_round - 1 = the complete graph (SecAgg)")
  secure_threshold: int = secure_setting("threshold", "Shamir threshold t, checked against the bound (0 = chosen "
                                          "within it)")
  secure_max_dropout: float = secure_setting("max_dropout", "the fraction of a round's clients that may drop "
                                             "(delta); sets k and t, and a round with more dropouts is refused")
  secure_max_corrupt: float = secure_setting("max_corrupt", "the fraction of clients that may collude with the "
                                             "server (gamma); sets k and t")
  secure_min_honest: int = secure_setting("min_honest", "honest inputs every released sum must hold even if the "
                                          "corrupt clients all survive; rounds too small for it are refused")
  secure_server_chosen_dropouts: bool = secure_setting(
      "server_chosen_dropouts", "the threat model lets the server choose who drops (it knows the masking graph): "
      "k > corrupt + dropped clients")
  secure_active_server: bool = secure_setting(
      "active_server", "the server may deviate from the protocol: signed keys (Ed25519, simulated PKI) and "
      "Bonawitz et al.'s consistency check; implies --secure_server_chosen_dropouts")
  secure_prg: str = secure_setting("prg", "mask PRG, aes-ctr (AES-128-CTR, cryptographic) or philox (fast, not "
                                   "cryptographic)", secure_config_lib.PRGS)
  secure_clip: float = secure_setting("clip", "clip each coordinate of (num_examples x model delta) to [-c, c] "
                                      "before quantization (secure/clipped counts what it clips; the demo's "
                                      "updates on Shakespeare and on a man-page corpus stayed below 100)")
  secure_bits: int = secure_setting("bits", "bits per quantized coordinate, 2-32 (<= 21 packs 64 // b per "
                                    "masked 64-bit word: fewer mask bits, coarser steps); 0 = 16, else 21, where "
                                    "they hold the clients' sum with >= 2^13 levels per client (16 for up to 7 "
                                    "clients, 21 up to 255), else 32; secure/quantization_error in metrics.csv "
                                    "says how far it moved each round's mean")
  dropout_rate: float = setting(0.0, "secure sum: simulated fraction of sampled clients that drop after sharing "
                                "keys (at most --secure_max_dropout)")
  dp: str = dp_setting("mode", "none; central: user-level DP-FedAvg (McMahan et al. 2018), each client's update "
                       "clipped to L2 norm --dp_clip and Gaussian noise of stddev --dp_noise_multiplier x clip on "
                       "the sum, unweighted mean; ftrl: DP-FTRL (Kairouz et al. 2021), the same clip with tree "
                       "noise, clients in shuffled epochs, server sgd or sgdm; distributed: the same clip, each "
                       "client adds its share of discrete Gaussian noise before the secure sum masks it (needs "
                       "--aggregator=secure; --secure_bits is the modulus 2^b, 0 = 20); epsilon every round in "
                       "metrics.csv (privacy/epsilon)", dp_config_lib.MODES)
  dp_mechanism: str = dp_setting("mechanism", "--dp=distributed: ddgauss (the distributed discrete Gaussian, "
                                 "Kairouz, Liu and Steinke 2021)", dp_config_lib.MECHANISMS)
  dp_beta: float = dp_setting("beta", "--dp=distributed: conditional rounding's bias in [0, 1) (the rounded "
                              "norm's bound holds with probability 1 - beta; 0 = plain stochastic rounding)")
  dp_noise_multiplier: float = dp_setting("noise_multiplier", "noise stddev over the clip (ignored with "
                                          "--target_epsilon)")
  dp_clip: float = dp_setting("clip", "L2 norm each client's model update is clipped to (the initial clip with "
                              "--dp_adaptive_clip)")
  dp_adaptive_clip: bool = dp_setting("adaptive_clip", "track the median update norm as the clip (Andrew et al. "
                                      "2021; needs clients_per_round > 10 x the noise multiplier)")
  dp_delta: float = dp_setting("delta", "delta of (epsilon, delta)-DP; 0 = 1 / (train clients)^1.1")
  target_epsilon: float = dp_setting("target_epsilon", "calibrate the noise multiplier before training so that "
                                     "epsilon after --rounds rounds is this (0 = use --dp_noise_multiplier)")
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
                "eval_every", "eval_batch_size", "client_learning_rate", "server_learning_rate")
    for name in positive:
      if not getattr(self, name) > 0:
        raise ValueError(f"--{name} must be positive, got {getattr(self, name)}")
    for name in ("max_elements_per_client", "eval_clients"):
      if getattr(self, name) < 0:
        raise ValueError(f"--{name} must be 0 or positive, got {getattr(self, name)}")
    self._validate_evaluation_sets()
    if not 0.0 <= self.server_beta_2 < 1.0:
      raise ValueError(f"--server_beta_2 must be in [0, 1), got {self.server_beta_2}")
    if not self.server_initial_accumulator >= 0.0:
      raise ValueError(f"--server_initial_accumulator must be 0 or positive, got {self.server_initial_accumulator}")
    try:
      self.dropout_simulation()
    except ValueError as e:
      raise ValueError(f"--{e}") from None
    if not self.experiment_name or os.sep in self.experiment_name:
      raise ValueError(f"--experiment_name must be a plain name, got {self.experiment_name!r}")
    for place in (self.output_dir, self.run_dir):
      if os.path.exists(place) and not os.path.isdir(place):
        raise ValueError(f"--output_dir: {place} is a file, not a directory (runs are written under it)")
    for field in dataclasses.fields(self):
      allowed = field.metadata.get("choices")
      name = field.name
      if allowed and getattr(self, name) not in allowed:
        raise ValueError(f"--{name}={getattr(self, name)!r} is not one of: {', '.join(allowed)}")
    if (self.shakespeare_unit != shakespeare_lib.DEFAULT_UNIT
        and not tasks_lib.get_task(self.task).takes_shakespeare_unit(self.dataset)):
      raise ValueError(f"--shakespeare_unit applies to {tasks_lib.shakespeare_unit_scope()}")
    if self.keras_model:  # the import and the name, before any data loads; its shape once the vocabulary is known
      from tff_research.models import custom  # pylint: disable=g-import-not-at-top
      custom.resolve(self.keras_model)
    if tasks_lib.get_task(self.task).fixed_vocabulary:
      defaults = ExperimentConfig()
      for name in ("vocab_size", "num_oov_buckets"):
        if getattr(self, name) != getattr(defaults, name):
          raise ValueError(f"--{name} applies to --task=next_word: --task={self.task} has its own fixed "
                           "vocabulary (TFF's characters)")
    if self.aggregator == "secure":
      self._validate_secure()
    self._validate_dp()
    self._validate_corpus_options()

  def _validate_evaluation_sets(self) -> None:
    try:
      splits_lib.check_share("validation_fraction", self.validation_fraction)
      datasets_lib.check_heldout(self.dataset, self.heldout_clients)
    except ValueError as e:
      raise ValueError(f"--{e}") from None

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
    """The secure sum's settings, checked by their owner for this run's clients per round (no TensorFlow)."""
    try:
      if self.dropout_rate > self.secure_max_dropout:
        raise ValueError(f"dropout_rate {self.dropout_rate:g} exceeds max_dropout {self.secure_max_dropout:g}: "
                         "the protocol's parameters assume at most that fraction of clients drops")
      self.secure_sum_config().smallest_round(self.clients_per_round)  # every round size up to it
    except ValueError as e:
      raise ValueError(f"--aggregator=secure: {e}") from None

  def dropout_simulation(self) -> dropouts_lib.DropoutSimulation:
    """The run's simulated dropouts (secure sum; they draw from the run's seed, not a client's secret)."""
    return dropouts_lib.DropoutSimulation(self.dropout_rate, self.seed)

  def _validate_dp(self) -> None:
    """Differential privacy's settings, checked by their owner, and where they do not fit this run."""
    try:
      dp = self.dp_config()
    except ValueError as e:
      raise ValueError(f"--{e}") from None
    if not dp.enabled:
      return
    if self.dp == "distributed" and self.aggregator != "secure":
      raise ValueError("--dp=distributed adds each client's noise under the secure sum's masks: it needs "
                       "--aggregator=secure (--dp=central adds the noise at the server instead)")
    if self.dp != "distributed" and self.aggregator == "secure":
      raise ValueError(f"--dp={self.dp} adds the noise at the server after a plain sum (TFF's DP factory); it "
                       "does not run with --aggregator=secure (--dp=distributed does)")
    if self.algorithm != "fedavg":
      raise ValueError(f"--dp={self.dp} clips and averages client updates (DP-FedAvg, DP-FTRL): it needs "
                       "--algorithm=fedavg")
    if self.dp == "ftrl" and self.server_optimizer not in dp_config_lib.FTRL_SERVER_OPTIMIZERS:
      raise ValueError(f"--dp=ftrl is FTRL: the server optimizer is one of "
                       f"{', '.join(dp_config_lib.FTRL_SERVER_OPTIMIZERS)}, not {self.server_optimizer}")
    try:
      dp.check_cohort(self.clients_per_round)
    except ValueError as e:
      raise ValueError(f"--dp_adaptive_clip: {e}") from None

  def dp_config(self) -> dp_config_lib.DpConfig:
    """The run's `privacy.DpConfig` as given (`--target_epsilon` is resolved when the data is loaded)."""
    return dp_config_lib.DpConfig(
        mode=self.dp, noise_multiplier=self.dp_noise_multiplier, clip=self.dp_clip,
        adaptive_clip=self.dp_adaptive_clip, delta=self.dp_delta, target_epsilon=self.target_epsilon,
        mechanism=self.dp_mechanism, beta=self.dp_beta)

  def secure_sum_config(self) -> secure_config_lib.SecureSumConfig:
    """The run's `aggregation.SecureSumConfig` (plain data; it checks every value)."""
    return secure_config_lib.SecureSumConfig(
        neighbors=self.secure_neighbors or None, threshold=self.secure_threshold or None,
        clip=self.secure_clip, bits=self.secure_bits, max_dropout=self.secure_max_dropout,
        max_corrupt=self.secure_max_corrupt, prg=self.secure_prg, min_honest=self.secure_min_honest,
        server_chosen_dropouts=self.secure_server_chosen_dropouts, active_server=self.secure_active_server,
        # The overflow bound needs only the most examples a client can weigh
        # in with: a tighter bound leaves a finer fixed-point scale.
        int_clip=(self.max_elements_per_client * self.client_epochs if self.max_elements_per_client
                  else _SECURE.int_clip))


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
