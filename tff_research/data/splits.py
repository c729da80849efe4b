"""Train/test split policies for a corpus of texts per client.

* `by_text`: within each client, the first `train_fraction` of its texts
  train and the rest test, in order (McMahan et al. 2017's Shakespeare
  split). A client with one text has only train data.
* `by_client`: a fixed fraction (1 - `train_fraction`) of the clients is held
  out whole as test clients, as TFF's Stack Overflow and EMNIST evaluations
  do; the evaluation then runs on clients the training never saw. Which
  clients is decided by a hash of their ids, so it does not depend on the
  file's order and is the same on every run.
* `by_window`: within each client, the first `train_fraction` of its token
  windows train and the rest test, in order (`nwp.build_nwp_data` makes the
  cut, since windows depend on the sequence length); for one long text per
  client.
* `auto` (the default): `by_text` where it leaves enough test clients (at
  least `AUTO_MIN_TEST_CLIENTS`, or a tenth of the clients if that is
  fewer), else `by_client`.

`split_clients` returns a `FederatedText` whose `split_note` says which
policy was used and why; the loaders print it in their summary line.

Apart from the policy, `hold_out_users` takes a share of the clients out of
training altogether (their texts are neither trained on nor counted for the
vocabulary; they are evaluated as `heldout/` in metrics.csv), for any corpus;
and `validation_ids` picks the test clients that tuning evaluates on, leaving
the rest for a test the training loop evaluates only once, at the end. Both
choose by a salted hash of the client id, like `by_client`.
"""
from __future__ import annotations

import hashlib
import math
from typing import Sequence

from tff_research.data import federated_text

SPLITS = ("auto", "by_text", "by_client", "by_window")
DEFAULT_SPLIT = "auto"
DEFAULT_TRAIN_FRACTION = 0.8
AUTO_MIN_TEST_CLIENTS = 10
_SALT = b"tff_research/split/v1/"
_HELDOUT_SALT = b"tff_research/heldout/v1/"
_VALIDATION_SALT = b"tff_research/validation/v1/"

DataError = federated_text.DataError


def check_split(policy: str, train_fraction: float) -> None:
  """ValueError (one line) unless `policy` is one of SPLITS and 0 < train_fraction < 1."""
  if policy not in SPLITS:
    raise ValueError(f"split must be one of: {', '.join(SPLITS)}; got {policy!r}")
  if not (isinstance(train_fraction, (int, float)) and 0.0 < train_fraction < 1.0):
    raise ValueError(f"train_fraction must be in (0, 1), the rest being the test split; got {train_fraction}")


def check_share(name: str, share: float) -> None:
  """ValueError (one line naming `name`) unless 0 <= share < 1."""
  if not (isinstance(share, (int, float)) and not isinstance(share, bool) and 0.0 <= share < 1.0):
    raise ValueError(f"{name} must be in [0, 1), the share of clients it takes; got {share!r}")


def hash_ranked(client_ids, salt: bytes) -> list[str]:
  """`client_ids` in the order of a salted SHA-256 of each id: the same on every run, whatever the file order."""
  return sorted(client_ids, key=lambda c: hashlib.sha256(salt + c.encode("utf-8")).digest())


def _share_of(count: int, share: float) -> int:
  """round(share * count), at least one where share > 0, and never all `count`."""
  return 0 if share == 0 else min(count - 1, max(1, round(share * count)))


def hold_out_users(corpus: federated_text.FederatedText, share: float) -> federated_text.FederatedText:
  """Moves `share` of the corpus' clients, all their texts, to `corpus.heldout`; returns the corpus.

  Chosen by a salted hash of the id among every client of the corpus (train
  and test), so the choice does not depend on the split policy. A corpus that
  already brings held-out users (Stack Overflow's heldout split) is refused:
  two definitions of one set would disagree.

  Raises:
    DataError: one line, where no train client would be left.
  """
  check_share("heldout_clients", share)
  if not share:
    return corpus
  if corpus.heldout:
    raise DataError(f"{corpus.name} brings its own held-out users ({len(corpus.heldout):,} clients)")
  ids = sorted(set(corpus.train) | set(corpus.test))
  held = set(hash_ranked(ids, _HELDOUT_SALT)[:_share_of(len(ids), share)])
  if not held or not set(corpus.train) - held:
    raise DataError(f"{corpus.name}: holding out {share:g} of {len(ids):,} clients leaves no train client")
  corpus.heldout = {c: corpus.train.get(c, []) + corpus.test.get(c, []) for c in sorted(held)}
  corpus.train = {c: t for c, t in corpus.train.items() if c not in held}
  corpus.test = {c: t for c, t in corpus.test.items() if c not in held}
  note = f"{len(held):,} of {len(ids):,} clients held out whole from training"
  corpus.split_note = f"{corpus.split_note}; {note}" if corpus.split_note else note
  return corpus


def validation_ids(test_client_ids, share: float) -> list[str]:
  """The `share` of the test clients (by salted hash, at least one, never all) that tuning evaluates on."""
  check_share("validation_fraction", share)
  ids = sorted(test_client_ids)
  if share and len(ids) < 2:
    raise DataError(f"a validation share needs at least 2 test clients to divide; there are {len(ids)}")
  return sorted(hash_ranked(ids, _VALIDATION_SALT)[:_share_of(len(ids), share)])


def split_clients(texts_by_client: Sequence[tuple[str, list[str]]], name: str, policy: str = DEFAULT_SPLIT,
                  train_fraction: float = DEFAULT_TRAIN_FRACTION) -> federated_text.FederatedText:
  """Splits each client's non-blank texts by `policy` (see the module docstring).

  Args:
    texts_by_client: (client id, texts in order) for every client.
    name: the corpus' name, for messages.
    policy: one of SPLITS.
    train_fraction: the share of texts, clients or windows that trains.

  Returns:
    A `FederatedText` with a `split_note`.

  Raises:
    DataError: one line saying what would make the corpus splittable.
  """
  check_split(policy, train_fraction)
  clients = [(c, [t for t in texts if t.strip()]) for c, texts in texts_by_client]
  clients = [(c, texts) for c, texts in clients if texts]
  if not clients:
    raise DataError(f"{name}: no client has any text")
  several = sum(1 for _, texts in clients if len(texts) > 1)
  count = f"{several:,} of {len(clients):,} clients have two or more texts"
  if policy == "auto":
    needed = min(AUTO_MIN_TEST_CLIENTS, max(1, math.ceil(0.1 * len(clients))))
    if several >= needed:
      policy, why = "by_text", f"{count}"
    else:
      _check_clients_to_hold_out(name, clients, several, "auto")
      policy, why = "by_client", f"only {count}, too few to evaluate on"
  else:
    why = ""
  if policy == "by_text":
    if not several:
      raise DataError(f"{name}: split by text leaves no test client (every client has a single text): "
                      "use --split=by_client (hold out whole clients) or --split=by_window")
    corpus = federated_text.split_by_order(clients, name, train_fraction, min_texts=1)
    corpus.split_note = f"split by text{': ' + why if why else ''}"
    return corpus
  if policy == "by_client":
    _check_clients_to_hold_out(name, clients, several, "by_client")
    return _hold_out_clients(clients, name, train_fraction, why)
  corpus = federated_text.FederatedText(name, dict(clients), {}, window_split=train_fraction)
  corpus.split_note = f"split by token window: the last {1 - train_fraction:.0%} of each client's windows test"
  return corpus


def _check_clients_to_hold_out(name: str, clients, several: int, policy: str) -> None:
  if len(clients) >= 2:
    return
  texts = len(clients[0][1])
  advice = ("add clients (the by-client split holds some out whole), or use --split=by_window to hold out "
            "the last token windows of each client")
  if policy == "auto" and texts == 1:
    advice = "add clients, split the text into lines or paragraphs, or use --split=by_window"
  raise DataError(f"{name}: 1 client with {texts} text{'s' if texts > 1 else ''} leaves no client to hold out "
                  f"for evaluation: {advice}")


def _hold_out_clients(clients, name: str, train_fraction: float, why: str) -> federated_text.FederatedText:
  n = len(clients)
  held = _share_of(n, 1 - train_fraction)
  by_id = dict(clients)
  test = {c: by_id[c] for c in hash_ranked(by_id, _SALT)[:held]}
  train = {c: texts for c, texts in clients if c not in test}
  corpus = federated_text.FederatedText(name, train, test)
  reason = f"{why}, so " if why else ""
  corpus.split_note = f"split by client: {reason}{held:,} of {n:,} clients are held out whole"
  return corpus
