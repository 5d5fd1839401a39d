"""Stop mid-epoch, save the loader state, resume in a new loader, and compare with an uninterrupted run.

    python examples/resume.py ROOT [--stop-after 5] [--workers 2]

Exits non-zero if the resumed run yields different batches than the uninterrupted one.
"""

from __future__ import annotations

import argparse
import sys
import warnings

from torchdata.stateful_dataloader import StatefulDataLoader

from lerobot_stream_loader import StreamingLeRobot


def make_loader(root: str, workers: int, batch_size: int) -> StatefulDataLoader:
    dataset = StreamingLeRobot(root, shuffle=True, seed=1)
    with warnings.catch_warnings():  # torchdata calls torch.set_vital, which torch deprecates
        warnings.filterwarnings("ignore", message="'set_vital' is deprecated")
        return StatefulDataLoader(dataset, batch_size=batch_size, num_workers=workers)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root")
    parser.add_argument("--stop-after", type=int, default=5, help="batches before the interruption")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args(argv)

    uninterrupted = [batch["index"].tolist() for batch in make_loader(args.root, args.workers, args.batch_size)]

    first = make_loader(args.root, args.workers, args.batch_size)
    iterator = iter(first)
    head = [next(iterator)["index"].tolist() for _ in range(args.stop_after)]
    state = first.state_dict()  # what a training checkpoint stores
    del iterator, first

    resumed = make_loader(args.root, args.workers, args.batch_size)
    resumed.load_state_dict(state)
    tail = [batch["index"].tolist() for batch in resumed]

    same = head + tail == uninterrupted
    print(f"{len(uninterrupted)} batches uninterrupted; stopped after {len(head)}, resumed {len(tail)}: "
          f"{'identical' if same else 'DIFFERENT'}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
