"""Next-word suggestions from a run: `python -m tff_research.predict RUN_DIR "to be or not to"`.

What a keyboard does with the trained model: read the text typed so far,
suggest the k most likely next words. The model is rebuilt from the run's
`hparams.json`, holds its final `model_weights.npz` (or, for a run not
finished yet, the model of its latest checkpoint, and says which round) and
reads ids from its `vocab.json` (written before the first round), so a
suggestion uses exactly the vocabulary the model was trained on.
Prediction is plain Keras: no TFF computation runs, so no TFF worker is
started.

TensorFlow is imported lazily (as in `learning.config`), so the command line
can quiet its logs before the import.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from typing import Any, Callable, Optional, Sequence

import numpy as np

from tff_research.data import vocab as vocab_lib
from tff_research.learning.config import ExperimentConfig

HPARAMS_FILE = "hparams.json"
VOCAB_FILE = "vocab.json"              # the name `learning.experiment` writes
WEIGHTS_FILE = "model_weights.npz"     # `learning.checkpoints.FINAL_WEIGHTS_FILE`
BASELINE_FILE = "baseline.json"        # `learning.experiment.BASELINE_FILE`


class PredictError(ValueError):
  """A run directory or input the predictor cannot use; the message is one line."""


_EMPTY_PROMPT = "the prompt is empty; give the text typed so far, e.g. \"to be or not to\""


def encode_prompt(vocab: vocab_lib.Vocabulary, prompt: str, max_length: Optional[int] = None) -> list[int]:
  """BOS and the prompt's word ids, without the EOS `Vocabulary.encode` appends.

  EOS would tell the model the text is over; we want the word that comes next.
  With `max_length`, only the last `max_length` ids are kept: the model was
  trained on windows of that many inputs, and windows after a text's first
  start mid-text (without BOS), so a long prompt is cut the same way.
  """
  if not prompt.strip():
    raise PredictError(_EMPTY_PROMPT)
  ids = vocab.encode(prompt)[:-1]
  if len(ids) < 2:
    raise PredictError(f"the prompt {prompt!r} has no words (tokenizer: {vocab.tokenizer})")
  if max_length is not None and len(ids) > max_length:
    ids = ids[-max_length:]
  return ids


@dataclasses.dataclass
class Predictor:
  """A trained NWP model with its vocabulary: `top_k("to be or not to")`."""
  model: Any                  # tf.keras.Model: [batch, time] ids -> [batch, time, vocab] logits
  vocab: vocab_lib.Vocabulary
  config: ExperimentConfig
  checkpoint_round: Optional[int] = None  # None: the final weights; else the round of the checkpoint used

  def next_word_probabilities(self, prompt: str) -> np.ndarray:
    """p(next id | prompt) over all `vocab.size` ids (softmax of the last position's logits)."""
    return self._probabilities(encode_prompt(self.vocab, prompt, self.config.sequence_length))

  def _probabilities(self, ids: Sequence[int]) -> np.ndarray:
    window = list(ids)[-self.config.sequence_length:]  # the model was trained on windows this long
    logits = np.asarray(self.model(np.asarray([window], np.int32), training=False))[0, -1]
    logits = logits.astype(np.float64)
    exp = np.exp(logits - logits.max())
    return exp / exp.sum()

  def generate(self, prompt: str, max_tokens: int = 20, temperature: float = 1.0, top_k: int = 0,
               top_p: float = 1.0, seed: Optional[int] = None) -> str:
    """The prompt's continuation, sampled a token at a time (`sample_next_id`) until EOS or `max_tokens`.

    Args:
      prompt: the text so far.
      max_tokens: the most words (characters, for a character model) to add.
      temperature: > 0; below 1 sharpens the model's distribution, above 1 flattens it.
      top_k: sample among the k most likely tokens only (0: all).
      top_p: sample among the fewest most likely tokens whose probability reaches p (nucleus; 1: all).
      seed: for a repeatable sample (None: fresh randomness each call).

    Returns:
      The generated tokens only, words joined by spaces (characters joined as they are).
    """
    check_sampling(max_tokens, temperature, top_k, top_p)
    rng = np.random.default_rng(seed)
    ids = encode_prompt(self.vocab, prompt)
    generated: list[str] = []
    for _ in range(max_tokens):
      next_id = sample_next_id(self._probabilities(ids), rng, self.vocab, temperature, top_k, top_p)
      if next_id == self.vocab.eos_id:
        break
      ids.append(next_id)
      generated.append(self.vocab.decode_id(next_id))
    return ("" if self.vocab.tokenizer == "bytes" else " ").join(generated)

  def top_k(self, prompt: str, k: int = 5, include_special: bool = False) -> list[tuple[str, float]]:
    """The `k` most likely next words with their probabilities, most likely first.

    Pad, OOV, BOS and EOS are not words a keyboard could offer, so they are left
    out unless `include_special` (then named `<pad>`, `<oov>`, `<bos>`, `<eos>`).
    Probabilities are the model's own, not renormalized over the candidates.
    """
    if k < 1:
      raise PredictError(f"top_k must be positive, got {k}")
    probs = self.next_word_probabilities(prompt)
    candidates = np.arange(len(probs))
    if not include_special:
      candidates = candidates[~np.isin(candidates, self.vocab.special_ids)]
    # Stable sort: ties go to the lower id, i.e. the more frequent train word.
    order = candidates[np.argsort(-probs[candidates], kind="stable")][:k]
    return [(self.vocab.decode_id(int(i)), float(probs[i])) for i in order]


def check_sampling(max_tokens: int, temperature: float, top_k: int, top_p: float) -> None:
  """Raises PredictError (one line) for a sampling setting `generate` cannot use."""
  if max_tokens < 1:
    raise PredictError(f"--generate must be positive, got {max_tokens}")
  if not temperature > 0:
    raise PredictError(f"--temperature must be positive, got {temperature}")
  if top_k < 0:
    raise PredictError(f"--sample_top_k must be 0 (all) or positive, got {top_k}")
  if not 0 < top_p <= 1:
    raise PredictError(f"--top_p must be in (0, 1], got {top_p}")


def sample_next_id(probs: np.ndarray, rng: np.random.Generator, vocab: vocab_lib.Vocabulary,
                   temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0) -> int:
  """One token drawn from `probs` reshaped by temperature, top-k and top-p (nucleus); never pad, OOV or BOS.

  EOS stays a candidate: it ends the text. Ties in the ranking go to the lower id (the more frequent word).
  """
  allowed = np.ones(len(probs), bool)
  allowed[[vocab.pad_id, vocab.bos_id, *vocab.oov_ids]] = False
  # p^(1/T), in log space so that a small temperature does not underflow.
  logits = np.where(allowed, np.log(np.maximum(probs, 1e-300)) / temperature, -np.inf)
  order = np.argsort(-logits, kind="stable")[:int(allowed.sum())]
  if top_k:
    order = order[:top_k]
  weights = np.exp(logits[order] - logits[order[0]])
  weights /= weights.sum()
  if top_p < 1:
    keep = int(np.searchsorted(np.cumsum(weights), top_p) + 1)  # the fewest whose mass reaches top_p
    order, weights = order[:keep], weights[:keep] / weights[:keep].sum()
  return int(order[rng.choice(len(order), p=weights)])


def below_baseline_note(run_dir: str) -> Optional[str]:
  """A line saying the run's final model is at or below the unigram baseline, or None (above it, or unknown)."""
  try:
    with open(os.path.join(run_dir, BASELINE_FILE), encoding="utf-8") as f:
      figures = json.load(f)
    accuracy, unigram = float(figures["accuracy"]), float(figures["unigram_accuracy"])
  except (OSError, ValueError, KeyError, TypeError):
    return None
  if accuracy > unigram:
    return None
  return (f"note: this model's test accuracy {accuracy:.4f} after {figures.get('round', '?')} rounds is at or below "
          f"the unigram baseline {unigram:.4f}: it has not learned yet, and suggests mostly the most frequent words")


def _read_text(run_dir: str, name: str, what: str) -> str:
  path = os.path.join(run_dir, name)
  try:
    with open(path, encoding="utf-8") as f:
      return f.read()
  except OSError as e:
    raise PredictError(f"cannot read {what} {path}: {e.strerror}") from None


def load_config(run_dir: str) -> ExperimentConfig:
  """The run's `ExperimentConfig` from hparams.json (keys it does not know are ignored)."""
  text = _read_text(run_dir, HPARAMS_FILE, "the run's settings")
  try:
    hparams = json.loads(text)
  except ValueError as e:
    raise PredictError(f"{os.path.join(run_dir, HPARAMS_FILE)} is not valid JSON: {e}") from None
  if not isinstance(hparams, dict):
    raise PredictError(f"{os.path.join(run_dir, HPARAMS_FILE)} does not hold a settings object")
  known = {f.name for f in dataclasses.fields(ExperimentConfig)}
  try:
    return ExperimentConfig(**{k: v for k, v in hparams.items() if k in known})
  except TypeError as e:
    raise PredictError(f"{os.path.join(run_dir, HPARAMS_FILE)}: {e}") from None


def load_predictor(run_dir: str, keras_model: Optional[Callable[[int], Any]] = None) -> Predictor:
  """The model of the run in `run_dir` (`output_dir/experiment_name`): its final weights, else its latest checkpoint.

  Args:
    run_dir: the run's directory.
    keras_model: the builder of your own model the run trained (`models.custom`)
      where it was a Python function rather than `--keras_model`'s path.
  """
  if not os.path.isdir(run_dir):
    raise PredictError(f"no run directory at {run_dir}")
  config = load_config(run_dir)
  vocab_text = _read_text(run_dir, VOCAB_FILE, "the run's vocabulary")
  try:
    vocab = vocab_lib.Vocabulary.from_json(vocab_text)
  except (ValueError, KeyError, TypeError) as e:
    raise PredictError(f"{os.path.join(run_dir, VOCAB_FILE)} is not a vocabulary: {e}") from None
  weights_path = os.path.join(run_dir, WEIGHTS_FILE)
  from tff_research.learning import checkpoints  # pylint: disable=g-import-not-at-top
  from tff_research.learning import experiment  # pylint: disable=g-import-not-at-top
  from tff_research.models import custom as custom_models  # pylint: disable=g-import-not-at-top
  from tff_research.models import nwp as nwp_models  # pylint: disable=g-import-not-at-top
  try:
    builder = experiment.keras_model_builder(config, keras_model)
    model = (custom_models.build(builder, vocab.size, config.sequence_length) if builder is not None
             else nwp_models.build_nwp_model(experiment.model_config(config, vocab.size)))
    checkpoint_round = None
    if os.path.isfile(weights_path):
      weights = checkpoints.load_model_weights(weights_path)
    else:
      weights, checkpoint_round = _latest_checkpoint_weights(run_dir, model)
  except (OSError, ValueError) as e:
    raise PredictError(f"cannot load the model of {run_dir}: {e}") from None
  _check_weights_fit(model, weights, run_dir)
  # Same order as the `tff.learning` model the run trained: Keras' trainable, then non-trainable.
  weights.assign_weights_to(model)
  return Predictor(model, vocab, config, checkpoint_round)


def _latest_checkpoint_weights(run_dir: str, model) -> tuple[Any, int]:
  """The model weights of the run's latest checkpoint, and its round (a run not finished has no final file).

  A checkpoint is the flattened `LearningAlgorithmState`, whose first leaves
  are its `global_model_weights`: trainable, then non-trainable, in order.
  """
  import tensorflow_federated as tff  # pylint: disable=g-import-not-at-top

  from tff_research.learning import checkpoints  # pylint: disable=g-import-not-at-top
  from tff_research.learning import training_loop  # pylint: disable=g-import-not-at-top
  root = os.path.join(run_dir, "checkpoints")
  rounds = sorted(int(name[len(training_loop.CHECKPOINT_PREFIX):]) for name in
                  (os.listdir(root) if os.path.isdir(root) else ())
                  if name.startswith(training_loop.CHECKPOINT_PREFIX)
                  and name[len(training_loop.CHECKPOINT_PREFIX):].isdigit())
  if not rounds:
    raise PredictError(f"the run in {run_dir} has not finished a round yet: no {WEIGHTS_FILE} and no checkpoint")
  path = os.path.join(root, f"{training_loop.CHECKPOINT_PREFIX}{rounds[-1]}", checkpoints.STATE_FILE)
  with np.load(path) as data:
    leaves = [data[name] for name in sorted(data.files)]
  trainable, rest = len(model.trainable_weights), len(model.non_trainable_weights)
  if len(leaves) < trainable + rest:
    raise PredictError(f"{path} holds {len(leaves)} values, fewer than the model's {trainable + rest} weights")
  return tff.learning.models.ModelWeights(trainable=leaves[:trainable],
                                          non_trainable=leaves[trainable:trainable + rest]), rounds[-1]


def _check_weights_fit(model, weights, run_dir: str) -> None:
  """`ModelWeights.assign_weights_to` zips and would silently skip weights that do not fit."""
  for kind in ("trainable", "non_trainable"):
    variables, values = getattr(model, f"{kind}_weights"), list(getattr(weights, kind))
    shapes = [tuple(v.shape) for v in variables]
    saved = [tuple(np.shape(v)) for v in values]
    if len(shapes) != len(saved):
      raise PredictError(f"{WEIGHTS_FILE} in {run_dir} holds {len(saved)} {kind} arrays, the model of "
                         f"its hparams.json has {len(shapes)}")
    for i, (want, got) in enumerate(zip(shapes, saved)):
      if want != got:
        raise PredictError(f"{WEIGHTS_FILE} in {run_dir} does not fit the model of its hparams.json: "
                           f"{kind} array {i} has shape {got}, the model wants {want}")


def main(argv: Optional[Sequence[str]] = None) -> int:
  parser = argparse.ArgumentParser(description="Suggest the next words after a prompt with a trained run.")
  parser.add_argument("run_dir", help="a run directory (output_dir/experiment_name); an unfinished run's "
                      "latest checkpoint is used")
  parser.add_argument("prompts", nargs="+", metavar="prompt",
                      help="the text typed so far, e.g. \"to be or not to\" (several: one line each)")
  parser.add_argument("--top_k", type=int, default=5, help="number of suggestions")
  parser.add_argument("--include_special", action="store_true",
                      help="also offer pad/OOV/BOS/EOS as candidates")
  parser.add_argument("--generate", type=int, default=0, metavar="N",
                      help="instead of suggestions, continue each prompt by up to N sampled words (characters "
                      "for a character model)")
  parser.add_argument("--temperature", type=float, default=1.0, help="--generate: sampling temperature (> 0)")
  parser.add_argument("--sample_top_k", type=int, default=0, help="--generate: among the k most likely only (0 = all)")
  parser.add_argument("--top_p", type=float, default=1.0, help="--generate: nucleus sampling's mass (1 = all)")
  parser.add_argument("--seed", type=int, default=None, help="--generate: seed of a repeatable sample")
  args = parser.parse_args(argv)
  try:
    if args.top_k < 1:
      raise PredictError(f"--top_k must be positive, got {args.top_k}")
    if args.generate:
      check_sampling(args.generate, args.temperature, args.sample_top_k, args.top_p)
    if not all(prompt.strip() for prompt in args.prompts):  # fail before TensorFlow loads
      raise PredictError(_EMPTY_PROMPT)
    predictor = load_predictor(args.run_dir)
    note = below_baseline_note(args.run_dir) if predictor.checkpoint_round is None else None
    if note:
      print(note, file=sys.stderr)
    if predictor.checkpoint_round is not None:
      print(f"note: the run has not finished ({predictor.checkpoint_round} of {predictor.config.rounds} rounds): "
            f"suggestions from its checkpoint of round {predictor.checkpoint_round}", file=sys.stderr)
    if args.generate:
      for prompt in args.prompts:
        text = predictor.generate(prompt, args.generate, args.temperature, args.sample_top_k, args.top_p, args.seed)
        print(f"{prompt}{'' if predictor.vocab.tokenizer == 'bytes' else ' '}{text}")
      return 0
    answers = [predictor.top_k(prompt, args.top_k, args.include_special) for prompt in args.prompts]
  except PredictError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  if len(answers) == 1:
    width = max(len(word) for word, _ in answers[0])
    for word, prob in answers[0]:
      print(f"{word:<{width}}  {prob:.4f}")
    return 0
  for prompt, suggestions in zip(args.prompts, answers):
    print(f"{prompt!r} -> " + ", ".join(f"{word} ({prob:.3f})" for word, prob in suggestions))
  return 0


if __name__ == "__main__":
  from tff_research.runtime import logs  # pylint: disable=g-import-not-at-top
  logs.configure_logging()
  sys.exit(main())
