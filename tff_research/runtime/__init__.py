"""Execution contexts and the TFF worker processes they own."""
from tff_research.runtime.context import local_runtime, shutdown, use_local_runtime, use_remote_workers
from tff_research.runtime.logs import configure_logging
from tff_research.runtime.workers import ManagedWorker, WorkerError, running_worker_pids, stop_all_workers
