"""Load a federated text corpus by name: `load_federated_text("shakespeare")`."""
from __future__ import annotations

import os
from typing import Callable, Optional

from tff_research.data import federated_text
from tff_research.data import shakespeare

FederatedText = federated_text.FederatedText
DataError = federated_text.DataError


def _build_shakespeare() -> FederatedText:
  return federated_text.split_by_order(shakespeare.iter_role_speeches(), "shakespeare")


_BUILDERS: dict[str, Callable[[], FederatedText]] = {
    "shakespeare": _build_shakespeare,
}


def dataset_names() -> list[str]:
  return sorted(_BUILDERS)


def load_federated_text(name: str, data_dir: Optional[str] = None, verbose: bool = True) -> FederatedText:
  """Builds the corpus once, then reads it from `data_dir` (default: user cache)."""
  if name not in _BUILDERS:
    raise DataError(f"unknown dataset {name!r}; choose one of: {', '.join(dataset_names())}")
  data_dir = data_dir or federated_text.default_data_dir()
  cache = os.path.join(data_dir, f"{name}.v{federated_text.CACHE_VERSION}.json")
  corpus = FederatedText.load(cache)
  source = f"cached in {cache}"
  if corpus is None:
    corpus = _BUILDERS[name]()
    try:
      corpus.save(cache)
      source = f"built and cached in {cache}"
    except OSError as e:
      source = f"built (not cached: {e.strerror} for {data_dir})"
  if verbose:
    print(f"{corpus.summary()} [{source}]", flush=True)
  return corpus
