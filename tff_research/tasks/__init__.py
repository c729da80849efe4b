"""Learning tasks: next word or next character, each one `Task` object (see `tasks.base`).

`TASKS` maps each `--task` name to its task, in the order the flag's help
lists them; `get_task(name)` looks one up. Importing this package does not
import TensorFlow.
"""
from __future__ import annotations

import types
from typing import Mapping

from tff_research.tasks import next_char
from tff_research.tasks import next_word
from tff_research.tasks.base import Task

# Read-only, next_word first: it is `--task`'s default.
TASKS: Mapping[str, Task] = types.MappingProxyType({task.name: task for task in (next_word.TASK, next_char.TASK)})


def get_task(name: str) -> Task:
  """The task called `name`.

  Args:
    name: a `--task` value.

  Returns:
    Its `Task`.

  Raises:
    ValueError: one line listing the tasks, for an unknown name.
  """
  try:
    return TASKS[name]
  except KeyError:
    raise ValueError(f"--task={name!r} is not one of: {', '.join(TASKS)}") from None


def shakespeare_unit_scope() -> str:
  """Where `--shakespeare_unit` applies, for an error message: "--task=T with --dataset=D" [or ...]."""
  return " or ".join(f"--task={task.name} with --dataset={dataset}"
                     for task in TASKS.values() for dataset in task.shakespeare_unit_datasets)


__all__ = ["TASKS", "Task", "get_task", "shakespeare_unit_scope"]
