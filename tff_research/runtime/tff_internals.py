"""Every piece of TFF this package uses that is not part of `tff`'s public API, in one place.

Written against TFF 0.87.0. Another installed version, or an upgrade that
moves one of these, fails here, on first use, with one message naming the
piece and the versions, instead of somewhere deep in a run:

  worker_binary_path()   the C++ worker shipped in the wheel (`data/worker_binary`)
  async_utils()          `AsyncThreadRunner`, TFF's own event-loop thread
  type_conversions()     `type_to_py_container`, results as Python containers
  executors_errors()     `RetryableGRPCError`, what an unreachable worker raises
  structure_utils()      `flatten` / `unflatten_as` of program state (checkpoints)
  fed_sgd_client_work()  FedSGD's client work, to compose FedSGD around an interactive aggregator
"""
from __future__ import annotations

import functools
import importlib
import importlib.metadata
import importlib.util
import os
from types import ModuleType

SUPPORTED_TFF = "0.87.0"


class TffInternalsError(ImportError):
  """A TFF internal this package relies on is missing or moved (another TFF version)."""


@functools.cache
def tff_version() -> str:
  try:
    return importlib.metadata.version("tensorflow-federated")
  except importlib.metadata.PackageNotFoundError as e:
    raise TffInternalsError("tensorflow-federated is not installed; run `make setup`") from e


def _check_version() -> None:
  if tff_version() != SUPPORTED_TFF:
    raise TffInternalsError(
        f"TFF {tff_version()} is installed; tff_research relies on TFF {SUPPORTED_TFF}'s internals "
        "(tff_research/runtime/tff_internals.py): install the pinned environment (`make setup`)")


def _fail(piece: str) -> TffInternalsError:
  return TffInternalsError(
      f"TFF {tff_version()}: {piece} is not where tff_research expects it (written for TFF {SUPPORTED_TFF}); "
      "install the pinned environment (`make setup`) or update tff_research/runtime/tff_internals.py")


def _module(path: str, *names: str) -> ModuleType:
  _check_version()
  try:
    module = importlib.import_module(path)
  except ImportError as e:
    raise _fail(path) from e
  for name in names:
    if not hasattr(module, name):
      raise _fail(f"{path}.{name}")
  return module


def worker_binary_path() -> str:
  """Path of the `worker_binary` inside the installed TFF wheel (found without importing TFF)."""
  _check_version()
  spec = importlib.util.find_spec("tensorflow_federated")
  if spec is None or not spec.submodule_search_locations:
    raise TffInternalsError("tensorflow_federated is not installed; run `make setup`")
  path = os.path.join(list(spec.submodule_search_locations)[0], "data", "worker_binary")
  if not os.path.isfile(path):
    raise _fail(f"the worker binary ({path})")
  return path


def async_utils() -> ModuleType:
  return _module("tensorflow_federated.python.common_libs.async_utils", "AsyncThreadRunner")


def type_conversions() -> ModuleType:
  return _module("tensorflow_federated.python.core.impl.types.type_conversions", "type_to_py_container")


def executors_errors() -> ModuleType:
  return _module("tensorflow_federated.python.core.impl.executors.executors_errors", "RetryableGRPCError")


def structure_utils() -> ModuleType:
  return _module("tensorflow_federated.python.program.structure_utils", "flatten", "unflatten_as")


def fed_sgd_client_work(model_fn, loop_implementation):
  """TFF's FedSGD client work (`fed_sgd._build_fed_sgd_client_work`), metrics summed then finalized as TFF does."""
  fed_sgd = _module("tensorflow_federated.python.learning.algorithms.fed_sgd", "_build_fed_sgd_client_work")
  aggregator = _module("tensorflow_federated.python.learning.metrics.aggregator", "sum_then_finalize")
  return fed_sgd._build_fed_sgd_client_work(  # pylint: disable=protected-access
      model_fn, aggregator.sum_then_finalize, loop_implementation=loop_implementation)
