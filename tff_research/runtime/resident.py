"""Values that stay on the TFF worker between computation calls.

A `tff.learning` process is called once per round as `next(state, data)`. The
execution context sends the whole server state (the model, plus the server
optimizer's slots: 40 MB for the demo LSTM, 120 MB with Adam) from Python to
the `worker_binary` and back on every call: serialized into protos, through
gRPC, parsed again. Measured at the demo preset, that round trip alone is
0.15-0.26 s, a third to a half of all federation overhead in a round.

`call(comp, *args, keep=...)` runs a computation through TFF's own executor
API (`tff.framework.RemoteExecutor`: `create_value`, `create_call`,
`create_selection`, `compute`), the same calls TFF's execution context makes,
except that the named result elements in `keep` are not sent back: they come
back as `Resident` handles, and a handle passed as an argument to the next
call is used where it is, on the worker. `fetch(x)` brings a handle's value to
Python (a checkpoint, an evaluation) and returns any other value unchanged.
TFF's C++ executor keeps the inputs of every computed value alive, so a
handle is re-sent from Python every `MAX_CHAIN` calls: the worker then holds
at most that many extra states (without it: one more per round, unbounded).

The computation, its compiler (`tff.backends.native.desugar_and_transform_to_native`)
and the executor stack are TFF's, so results are bit-identical to calling the
computation directly (tests/test_resident.py). Where no single worker of ours
is installed (TFF's mergeable multi-worker context, the test context), `call`
falls back to a plain call, and handles simply hold Python values.
"""
from __future__ import annotations

import asyncio
import threading
from typing import Any, Callable, Iterable, Optional

import tensorflow_federated as tff

from tff_research.runtime import context as context_lib
from tff_research.runtime import tff_internals


class Resident:
  """A computation result kept where it was computed; `fetch(handle)` reads it."""

  def __init__(self, value: Any, type_spec, executor=None, clients: Optional[int] = None,
               meta: Optional[dict[str, Any]] = None, chain: int = 0):
    self._value = value            # a RemoteValue on `executor`, or the Python value when executor is None
    self._chain = chain            # calls since its ancestor was sent from Python (see MAX_CHAIN)
    self.type_signature = type_spec
    self._executor = executor
    self._clients = clients
    self._fetched: Any = None
    self._has_fetched = executor is None
    self._copies: dict[int, Any] = {}  # id(executor) -> this value sent to another executor
    self.meta = dict(meta or {})   # small facts a caller wants without a fetch (e.g. the round number)

  @property
  def is_remote(self) -> bool:
    return self._executor is not None

  def __getattr__(self, name: str):
    # `state.global_model_weights` and the like keep working in user code: the
    # first such read fetches the value (a full download; see fetch()).
    if name.startswith("_"):
      raise AttributeError(name)
    return getattr(fetch(self), name)

  def __getitem__(self, key):
    return fetch(self)[key]

  def __repr__(self) -> str:
    where = "on the worker" if self.is_remote else "in Python"
    return f"Resident({self.type_signature}, {where})"


_runner = None
_executors: dict[tuple[int, int], Any] = {}
_lock = threading.Lock()
_compiled: dict[int, Any] = {}
_comp_values: dict[tuple[int, int], Any] = {}
# Values are freed on the worker in batches of this many dropped handles.
_DISPOSE_BATCH = 4
# TFF's C++ executor keeps every computed value's inputs alive as long as the
# value lives, so a handle that is the result of a result of ... of an upload
# holds that whole history on the worker (measured: one model-sized state per
# round, without bound). A handle this many calls away from its upload is
# therefore read back and sent again, which starts a fresh history: the worker
# holds at most this many extra states, and the round trip is paid once per
# MAX_CHAIN calls instead of every call.
MAX_CHAIN = 4


def _run(coroutine):
  global _runner
  if _runner is None:
    _runner = tff_internals.async_utils().AsyncThreadRunner()
  try:
    loop = asyncio.get_running_loop()
  except RuntimeError:
    loop = None
  if loop is not None and loop is getattr(_runner, "_event_loop", None):
    coroutine.close()
    raise RuntimeError("runtime.resident: nested blocking call on its own event loop (would deadlock)")
  return _runner.run_coro_and_return_result(coroutine)


def reset() -> None:
  """Forgets every executor (the workers behind them were stopped or replaced).

  Handles dropped later free nothing on a stopped worker: `shutdown()` closes its stub.
  """
  with _lock:
    _executors.clear()
    _compiled.clear()
    _comp_values.clear()


context_lib.on_shutdown(reset)


def _executor_for(stub, clients: int):
  key = (id(stub), clients)
  with _lock:
    executor = _executors.get(key)
    if executor is None:
      executor = tff.framework.RemoteExecutor(stub, dispose_batch_size=_DISPOSE_BATCH)
      executor.set_cardinalities({tff.CLIENTS: clients})
      _executors[key] = executor
    return executor


def _compile(comp):
  compiled = _compiled.get(id(comp))
  if compiled is None or compiled[0] is not comp:
    compiled = (comp, tff.backends.native.desugar_and_transform_to_native(comp))
    _compiled[id(comp)] = compiled
  return compiled[1]


def _to_python(value, type_spec):
  return tff.tensorflow.transform_result(tff_internals.type_conversions().type_to_py_container(value, type_spec))


def fetch(value: Any) -> Any:
  """The Python value of a `Resident` handle (read from the worker once); other values unchanged."""
  if isinstance(value, Resident) and not value._has_fetched:  # pylint: disable=protected-access
    return _run(_fetch_async(value))
  return _fetch_async_done(value)


def read_model_weights(state: Any, model_weights_at_server, from_state: Callable[[Any], Any]) -> Any:
  """The model weights in a learning process's `state`, wherever the state is.

  A state left on the worker is read there by the federated computation
  `model_weights_at_server` (only the model comes to Python); any other
  state is brought to Python and read by `from_state`.
  """
  if isinstance(state, Resident) and state.is_remote:
    return call(model_weights_at_server, state)
  return from_state(fetch(state))


def _fetch_async_done(value: Any) -> Any:
  if not isinstance(value, Resident):
    return value
  return value._fetched if value.is_remote else value._value  # pylint: disable=protected-access


async def _fetch_async(value: Any) -> Any:
  """`fetch` for code already running on the runner's event loop (no nested wait)."""
  if isinstance(value, Resident) and not value._has_fetched:  # pylint: disable=protected-access
    computed = await value._value.compute()  # pylint: disable=protected-access
    value._fetched = _to_python(computed, value.type_signature)  # pylint: disable=protected-access
    value._has_fetched = True  # pylint: disable=protected-access
  return _fetch_async_done(value)


def _clients_of(args: Iterable[Any], types) -> Optional[int]:
  """CLIENTS cardinality of the call: from its Python arguments, else from its handles."""
  from_python = {len(arg) for arg, t in zip(args, types)
                 if not isinstance(arg, Resident) and isinstance(t, tff.FederatedType)
                 and t.placement == tff.CLIENTS and not t.all_equal}
  if from_python:
    return from_python.pop() if len(from_python) == 1 else None
  # (a handle of an executor of another cardinality is fetched and re-sent)
  from_handles = {arg._clients for arg in args  # pylint: disable=protected-access
                  if isinstance(arg, Resident) and arg.is_remote and arg._clients is not None}  # pylint: disable=protected-access
  return from_handles.pop() if len(from_handles) == 1 else None


def call(comp, *args: Any, keep: Iterable[str] = (), meta: Optional[dict[str, dict[str, Any]]] = None,
         chain_step: int = 1):
  """`comp(*args)`, keeping the result elements named in `keep` on the worker.

  Returns what `comp(*args)` returns (a Python container of the result), with
  the kept elements replaced by `Resident` handles (`meta[name]` attaches
  small Python facts to a handle). `args` may be Python values or handles.
  `chain_step`: how far this call moves its results along the MAX_CHAIN
  count. A round made of two calls (secure FedAvg: client stage, then server
  stage) passes 0 for the first, so that its state is re-sent every MAX_CHAIN
  rounds as a one-call round's is, not twice as often; the worker then holds
  the first call's results of up to MAX_CHAIN rounds as well.
  """
  keep = tuple(keep)
  meta = meta or {}
  parameter = comp.type_signature.parameter
  if parameter is None:
    types = []
  elif len(args) == 1:
    types = [parameter]
  elif isinstance(parameter, tff.StructType):
    types = [t for _, t in tff.structure.iter_elements(parameter)]
  else:
    types = [parameter]
  if len(args) != len(types):
    raise TypeError(f"{len(args)} arguments for a computation of parameter type {parameter}")
  result_type = comp.type_signature.result
  stub = context_lib.single_worker_stub()
  clients = _clients_of(args, types)
  if stub is None:
    return _call_in_context(comp, args, keep, meta, result_type)
  if clients is None:
    clients = 0
  return _run(_call_remote(stub, comp, args, types, keep, meta, result_type, clients, chain_step))


def _call_in_context(comp, args, keep, meta, result_type):
  """Fallback without our single worker: a plain call; handles hold Python values."""
  result = comp(*[fetch(a) for a in args])
  if not keep:
    return result
  names = _result_names(result_type, keep)
  values = [result[n] if isinstance(result, dict) else getattr(result, n) for n in names]
  return _assemble([(n, Resident(v, result_type[n], meta=meta.get(n)) if n in keep else v)
                    for n, v in zip(names, values)], result_type)


def _result_names(result_type, keep) -> list[str]:
  """The result's element names, checking that `keep` names some of them."""
  names = [name for name, _ in tff.structure.iter_elements(result_type)]
  missing = set(keep) - set(names)
  if missing:
    raise KeyError(f"keep={sorted(missing)}: not in the result type {result_type}")
  return names


async def _call_remote(stub, comp, args, types, keep, meta, result_type, clients, chain_step):
  executor = _executor_for(stub, clients)
  values, chain = [], 0
  for arg, type_spec in zip(args, types):
    if (isinstance(arg, Resident) and arg._executor is executor  # pylint: disable=protected-access
        and arg._chain < MAX_CHAIN):  # pylint: disable=protected-access
      values.append(arg._value)  # pylint: disable=protected-access
      chain = max(chain, arg._chain)  # pylint: disable=protected-access
    else:
      values.append(await _sent_to(executor, arg, type_spec))
  compiled = _compile(comp)
  # The computation is sent once per executor (the context sends it every call).
  comp_value = _comp_values.get((id(compiled), id(executor)))
  if comp_value is None:
    comp_value = await executor.create_value(compiled, compiled.type_signature)
    _comp_values[(id(compiled), id(executor))] = comp_value
  parameter = comp.type_signature.parameter
  if parameter is None:
    arg_value = None
  elif len(values) == 1:
    arg_value = values[0]
  else:
    names = [name for name, _ in tff.structure.iter_elements(parameter)]
    arg_value = await executor.create_struct(tff.structure.Struct(list(zip(names, values))))
  result = await executor.create_call(comp_value, arg_value)
  if not keep:
    return _to_python(await result.compute(), result_type)
  parts = []
  for index, name in enumerate(_result_names(result_type, keep)):
    type_spec = result_type[index]
    selected = await executor.create_selection(result, index)
    if name in keep:
      parts.append((name, Resident(selected, type_spec, executor, clients, meta.get(name), chain + chain_step)))
    else:
      parts.append((name, _to_python(await selected.compute(), type_spec)))
  return _assemble(parts, result_type)


async def _sent_to(executor, arg: Any, type_spec):
  """`arg` created on `executor`; a handle of another executor goes via Python, once per executor.

  (Calls on groups of two sizes, the streamed secure round's, use two
  executors: its state would otherwise be re-sent every call.)
  """
  copies = (arg._copies if isinstance(arg, Resident) and arg.is_remote  # pylint: disable=protected-access
            and arg._executor is not executor else None)  # pylint: disable=protected-access
  if copies is not None and id(executor) in copies:
    return copies[id(executor)]
  value = await executor.create_value(tff.tensorflow.transform_args(await _fetch_async(arg)), type_spec)
  if copies is not None:
    copies[id(executor)] = value
  return value


def _assemble(parts, result_type):
  """The Python container of `result_type` around already converted elements."""
  container = getattr(result_type, "python_container", None)
  if container is None:
    return tff.structure.Struct(parts)
  if issubclass(container, dict):
    return container(parts)
  try:  # namedtuples, attrs classes (e.g. LearningProcessOutput)
    return container(**dict(parts))
  except TypeError:
    return container(value for _, value in parts)
