"""Test-suite wide setup: quiet logs, one TFF worker owned by pytest, none left after.

The session fixture runs TFF on a `ManagedWorker` (see tff_research.runtime),
and at the end checks that no `worker_binary` started during the session is
still alive: a leftover worker hangs CI.
"""
from __future__ import annotations

import os
import sys

import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
  sys.path.insert(0, REPO_ROOT)

from tff_research.runtime import logs  # noqa: E402

logs.configure_logging(verbose=bool(os.environ.get("TFF_RESEARCH_VERBOSE")))


@pytest.fixture(scope="session", autouse=True)
def tff_runtime():
  from tff_research import runtime  # pylint: disable=g-import-not-at-top
  workers = runtime.use_local_runtime()
  yield workers
  runtime.shutdown()
  leftover = runtime.running_worker_pids(descendants_of=os.getpid())
  assert not leftover, f"worker_binary processes left running: {sorted(leftover)}"


@pytest.fixture(scope="session")
def shakespeare_dir(tmp_path_factory) -> str:
  """A data_dir with the Shakespeare corpus cached once for the whole session."""
  from tff_research.data import load_federated_text  # pylint: disable=g-import-not-at-top
  path = str(tmp_path_factory.mktemp("data"))
  load_federated_text("shakespeare", path, verbose=False)
  return path


@pytest.fixture(scope="session")
def python_env() -> dict[str, str]:
  """Environment for subprocesses running the package from this checkout."""
  env = dict(os.environ)
  env["PYTHONPATH"] = REPO_ROOT + os.pathsep + env.get("PYTHONPATH", "")
  env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  return env


@pytest.fixture(scope="session")
def repo_root() -> str:
  return REPO_ROOT
