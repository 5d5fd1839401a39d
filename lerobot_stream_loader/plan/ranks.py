"""Where this process reads in distributed training: its rank and its DataLoader worker."""

from __future__ import annotations

import os


def resolve_rank(rank: int | None = None, world_size: int | None = None) -> tuple[int, int]:
    """(rank, world_size): explicit, else torch.distributed, else RANK/WORLD_SIZE env, else (0, 1)."""
    if (rank is None) != (world_size is None):
        raise ValueError(
            f"give both rank and world_size or neither (got rank={rank}, world_size={world_size})"
        )
    if rank is None or world_size is None:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            rank, world_size = dist.get_rank(), dist.get_world_size()
        elif "RANK" in os.environ and "WORLD_SIZE" in os.environ:
            rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        else:
            rank, world_size = 0, 1
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside world_size {world_size}")
    return rank, world_size


def resolve_worker() -> tuple[int, int]:
    """(worker_id, num_workers) of the current DataLoader worker; (0, 1) in the main process."""
    from torch.utils.data import get_worker_info

    info = get_worker_info()
    return (0, 1) if info is None else (info.id, info.num_workers)
