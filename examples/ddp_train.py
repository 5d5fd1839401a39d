"""Distributed (DDP, gloo on CPU) training over a streamed dataset; run it under torchrun:

    torchrun --nproc-per-node 2 examples/ddp_train.py ROOT --report OUT_DIR

Each rank streams its own, disjoint share of the episodes; every rank sees the same number of
batches, so the epoch ends cleanly. With --report, each rank writes the global frame indices it
saw to OUT_DIR/rank-<r>.json.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from lerobot_stream_loader import StreamingLeRobot


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--report", help="folder for per-rank JSON reports of the indices seen")
    args = parser.parse_args(argv)

    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    dataset = StreamingLeRobot(args.root, shuffle=True, seed=0)
    loader = DataLoader(dataset, batch_size=args.batch_size, num_workers=args.workers)  # the fast collate by itself
    state_dim = dataset.meta.features["observation.state"]["shape"][0]
    action_dim = dataset.meta.features["action"]["shape"][0]
    model = DistributedDataParallel(nn.Linear(state_dim, action_dim))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)

    seen: list[int] = []
    batches = 0
    for epoch in range(args.epochs):
        dataset.set_epoch(epoch)
        for batch in loader:
            loss = nn.functional.mse_loss(model(batch["observation.state"]), batch["action"])
            optimizer.zero_grad()
            loss.backward()  # all-reduce: a rank with fewer batches would hang here
            optimizer.step()
            seen += batch["index"].tolist()
            batches += 1
    counts = [torch.tensor([batches]) for _ in range(world)]
    dist.all_gather(counts, torch.tensor([batches]))
    if args.report:
        out = Path(args.report)
        out.mkdir(parents=True, exist_ok=True)
        report = {"rank": rank, "world_size": world, "batches": batches, "len": len(dataset), "indices": seen,
                  "batches_per_rank": [int(c) for c in counts], "node": os.environ.get("GROUP_RANK")}
        (out / f"rank-{rank}.json").write_text(json.dumps(report))
    print(f"rank {rank}/{world}: {batches} batches, {len(seen)} samples", flush=True)
    dist.barrier()  # leave together: no rank tears the group down while another still uses it
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
