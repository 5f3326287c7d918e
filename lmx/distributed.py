"""Multi-process start-up through JAX's own multi-controller runtime (`jax.distributed`).

Every process runs the same command. Three ways in:
  - explicit: --coordinator_address=HOST:PORT --num_processes=N --process_id=I (any cluster, or several
    processes on one machine for tests);
  - detected: on a Cloud TPU pod slice, under SLURM (srun) or Open MPI (mpirun) with more than one task,
    `jax.distributed.initialize()` reads the topology from the environment;
  - single process: nothing to do.
Must run before anything touches a JAX device.
"""

from __future__ import annotations

import os

import jax

# Environment variables that mean "one of several processes" for jax.distributed's cluster detection.
_CLUSTER_MARKERS = {
    "SLURM_NTASKS": lambda v: int(v) > 1,  # srun with several tasks
    "OMPI_COMM_WORLD_SIZE": lambda v: int(v) > 1,  # mpirun
    "TPU_WORKER_HOSTNAMES": lambda v: "," in v,  # Cloud TPU pod slice (several workers)
    "MEGASCALE_COORDINATOR_ADDRESS": lambda v: bool(v),  # multi-slice TPU
}


def detected_cluster() -> str | None:
    """The environment variable that shows a multi-process launch, if any."""
    for name, is_multi in _CLUSTER_MARKERS.items():
        value = os.environ.get(name)
        if value:
            try:
                if is_multi(value):
                    return name
            except ValueError:
                continue
    return None


def initialize(coordinator_address: str | None, num_processes: int | None, process_id: int | None) -> str:
    """Starts jax.distributed if this is a multi-process run; returns how ('explicit', 'detected', 'single')."""
    explicit = [coordinator_address, num_processes, process_id]
    if any(v is not None for v in explicit):
        if any(v is None for v in explicit):
            raise ValueError(
                "--coordinator_address, --num_processes and --process_id go together; pass all three "
                f"(got {coordinator_address!r}, {num_processes!r}, {process_id!r}) or none to auto-detect"
            )
        if not 0 <= process_id < num_processes:
            raise ValueError(f"--process_id={process_id} must be in [0, --num_processes={num_processes})")
        _cpu_collectives()
        jax.distributed.initialize(coordinator_address, num_processes=num_processes, process_id=process_id)
        return "explicit"
    if detected_cluster():
        _cpu_collectives()
        jax.distributed.initialize()
        return "detected"
    return "single"


def _cpu_collectives() -> None:
    # CPU-only processes need a collectives backend to talk to each other (GPUs/TPUs have their own).
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
