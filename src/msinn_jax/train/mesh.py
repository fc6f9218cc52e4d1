"""Data parallelism with `jax.jit` over a one-axis device mesh (no `pmap`).

Parameters and optimizer state are replicated (`P()`); batches are split along their
leading axis over the mesh axis (`P("data")`). Each host loads only its slice of the
global batch (`train/data.py`) and `host_to_global` assembles the global `jax.Array`:

  host k: [host_batch, ...] numpy  --make_array_from_process_local_data-->
          global [host_batch * process_count, ...] sharded P("data")

The mesh lists `jax.devices()` in order, which groups each process's devices together,
so host k's rows are rows `[k * host_batch, (k + 1) * host_batch)` of the global batch,
matching `CropLoader`'s per-host slices.

Multi-process on CPU. Checked with jax 0.10.2: `jax_cpu_collectives_implementation`
already defaults to `"gloo"` (choices: gloo, mpi, megascale), so
`jax.distributed.initialize` alone gives working cross-process collectives on CPU; no
config update is needed (older JAX versions required setting it).

Every process compiles the training step itself. JAX can instead compile on one process
and send the program to the others (`jax_share_binary_between_hosts`), but it is left
off: with jax 0.10.2 on CPU, two processes hang in their first collective (Orbax's
`sync_global_devices`) when it is on, and NVIDIA's JAX-Toolbox turned it off after hangs
on GPU clusters (NVIDIA/JAX-Toolbox#612).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"


def make_mesh(axis: str = DATA_AXIS, devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A one-dimensional mesh named `axis` over `devices` (default: all, `jax.devices()`)."""
  devices = jax.devices() if devices is None else list(devices)
  return Mesh(np.asarray(devices), (axis,))


def replicated(mesh: Mesh) -> NamedSharding:
  """Sharding that keeps a full copy on every device (parameters, optimizer state)."""
  return NamedSharding(mesh, PartitionSpec())


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Sharding that splits the leading (batch) axis over the mesh's single axis."""
  (axis,) = mesh.axis_names
  return NamedSharding(mesh, PartitionSpec(axis))


def host_to_global(batch: Any, mesh: Mesh) -> Any:
  """Assembles each host's slice of a batch into global arrays sharded `P("data")`.

  Call on every process with that process's rows (same shape on every process).

  Args:
    batch: pytree of host-local arrays, e.g. [host_batch, H, W, 3] uint8.
    mesh: mesh from `make_mesh`.

  Returns:
    The same pytree of global `jax.Array`s with leading axis `host_batch * process_count`.

  Raises:
    ValueError: `host_batch` is not a multiple of this host's device count in the mesh.
  """
  sharding = batch_sharding(mesh)
  num_local = len(mesh.local_devices)

  def to_global(x: Any) -> jax.Array:
    x = np.asarray(x)
    if x.ndim == 0 or x.shape[0] % num_local:
      raise ValueError(f"host batch of shape {x.shape} cannot be split over "
                       f"{num_local} local devices")
    return jax.make_array_from_process_local_data(sharding, x)

  return jax.tree.map(to_global, batch)


def maybe_initialize_distributed(coordinator_address: str | None = None,
                                 num_processes: int | None = None,
                                 process_id: int | None = None,
                                 *,
                                 auto_detect: bool = False,
                                 initialization_timeout: int = 300) -> bool:
  """Starts multi-process JAX if asked to; a no-op for a single process.

  Must run before anything else touches JAX's backends. With no arguments and
  `auto_detect=False` nothing happens; with `auto_detect=True` JAX discovers the
  cluster itself (TPU pods, SLURM, Open MPI).

  Args:
    coordinator_address: `host:port` of process 0's coordinator service.
    num_processes: total number of processes.
    process_id: this process's index in `[0, num_processes)`.
    auto_detect: let `jax.distributed.initialize` detect the cluster.
    initialization_timeout: seconds to wait for all processes to connect.

  Returns:
    Whether `jax.distributed.initialize` was called.
  """
  if jax.distributed.is_initialized():
    return False
  explicit = (coordinator_address, num_processes, process_id)
  if all(v is None for v in explicit) and not auto_detect:
    return False
  if num_processes == 1 and coordinator_address is None:
    return False
  jax.distributed.initialize(
      coordinator_address=coordinator_address,
      num_processes=num_processes,
      process_id=process_id,
      initialization_timeout=initialization_timeout)
  return True
