"""Execution contexts and the TFF worker processes they own."""
from tff_research.runtime.context import guard_worker_calls
from tff_research.runtime.context import local_runtime
from tff_research.runtime.context import shutdown
from tff_research.runtime.context import tff_test_context
from tff_research.runtime.context import use_local_runtime
from tff_research.runtime.context import use_remote_workers
from tff_research.runtime.liveness import WorkerLostError
from tff_research.runtime.logs import configure_logging
from tff_research.runtime.workers import ManagedWorker
from tff_research.runtime.workers import WorkerError
from tff_research.runtime.workers import running_worker_pids
from tff_research.runtime.workers import stop_all_workers

__all__ = [
    "guard_worker_calls",
    "WorkerLostError",
    "local_runtime",
    "shutdown",
    "tff_test_context",
    "use_local_runtime",
    "use_remote_workers",
    "configure_logging",
    "ManagedWorker",
    "WorkerError",
    "running_worker_pids",
    "stop_all_workers",
]
