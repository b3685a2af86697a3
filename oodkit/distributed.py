"""torch.distributed, as oodkit uses it: under ``torchrun`` every process joins one group
(gloo on CPU, NCCL on CUDA); training wraps the model in DDP (:mod:`oodkit.training`),
and scoring splits the batches of each forward pass over the processes and gathers them
back in order (:func:`oodkit.representation.represent`), so that every process holds
the whole representation and rank 0 writes the one output. Without ``torchrun`` every
function here is the one-process case."""
from __future__ import annotations

import datetime
import os
import time

import torch
import torch.distributed as dist

__all__ = ["rank_world", "maybe_init", "gather_in_order", "gather_to_root", "barrier", "shared_batches"]


def rank_world() -> tuple[int, int]:
    """(rank, world size) of this process; (0, 1) outside a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def maybe_init(device: torch.device) -> bool:
    """Join the process group when started by ``torchrun`` (WORLD_SIZE > 1)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and dist.is_available() and not dist.is_initialized():
        missing = [k for k in ("RANK", "MASTER_ADDR", "MASTER_PORT") if not os.environ.get(k)]
        if missing:  # a WORLD_SIZE left in the environment, not a torchrun start
            raise ValueError(f"WORLD_SIZE={os.environ['WORLD_SIZE']} is set but {', '.join(missing)} "
                             f"{'is' if len(missing) == 1 else 'are'} not: start the command with torchrun, "
                             "or unset WORLD_SIZE")
        wait = _join_timeout()
        if device.type == "cuda":
            torch.cuda.set_device(device)
        rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        start = time.monotonic()
        try:
            # the wait bounds the rendezvous only: given to init_process_group it would bound every later
            # collective too (a rank that waits long at a barrier for a slow shard is not a missing process)
            store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world,
                                  is_master=rank == 0 and os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True",
                                  timeout=datetime.timedelta(seconds=wait))
        except (RuntimeError, TimeoutError) as e:  # DistStoreError / DistNetworkError are RuntimeErrors
            timed_out = time.monotonic() - start >= wait or "timed out" in str(e).lower() or \
                "timeout" in str(e).lower()
            if not timed_out:
                raise
            raise ValueError(f"WORLD_SIZE={os.environ['WORLD_SIZE']} but no other process joined within {wait:g} s "
                             f"at {os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']}: start the command with "
                             "torchrun (every process), or unset WORLD_SIZE; OODKIT_DIST_TIMEOUT sets the wait "
                             "in seconds") from None
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo", store=store, rank=rank,
                                world_size=world)
        return True
    return False


def _join_timeout() -> float:
    """Seconds to wait for the other processes (``OODKIT_DIST_TIMEOUT``; default 600, not
    torch's 30 minutes: torchrun starts every process of a group together)."""
    raw = os.environ.get("OODKIT_DIST_TIMEOUT", "600")
    try:
        wait = float(raw)
    except ValueError:
        wait = float("nan")
    if not 0 < wait < float("inf"):
        raise ValueError(f"OODKIT_DIST_TIMEOUT={raw!r}: a number of seconds is needed")
    return wait


def gather_in_order(mine: dict) -> list:
    """Every process's ``{batch index: value}`` merged, as the list of values in batch
    order (the one-process case returns its own in order)."""
    _, world = rank_world()
    parts = [mine]
    if world > 1:
        parts = [None] * world
        dist.all_gather_object(parts, mine)
    merged = {k: v for part in parts for k, v in part.items()}
    return [merged[k] for k in sorted(merged)]


def shared_batches(run, batches, shard: bool = True, progress: bool = False, desc: str = "") -> list:
    """``run(batch)`` for every batch of ``batches``, in order. Under ``torchrun`` (with
    ``shard``) each process runs every world-th batch and every process gets all the
    results back: a batch is the tensor one process would have run, so the numbers do
    not depend on the number of processes. ``shard=False``: this process runs them all
    and no collective is entered (a process scoring images of its own)."""
    from tqdm.auto import tqdm

    rank, world = rank_world() if shard else (0, 1)
    todo = [(i, b) for i, b in enumerate(batches) if i % world == rank]
    mine = {i: run(b) for i, b in tqdm(todo, desc=desc, disable=not progress or rank != 0, leave=False)}
    return gather_in_order(mine) if shard else [mine[i] for i in sorted(mine)]


def barrier() -> None:
    """Wait for every process of the group (nothing outside one)."""
    if rank_world()[1] > 1:
        dist.barrier()


def gather_to_root(obj) -> list:
    """Every process's ``obj``, in rank order, on rank 0 (other ranks get an empty list)."""
    rank, world = rank_world()
    if world == 1:
        return [obj]
    out = [None] * world if rank == 0 else None
    dist.gather_object(obj, out, dst=0)
    return out or []
