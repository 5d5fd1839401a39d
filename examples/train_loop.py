"""Train a tiny policy for a few steps on CPU, streaming a LeRobot v3.0 dataset.

    python examples/train_loop.py ROOT                # a local folder or a URL
    python examples/train_loop.py --make-sample DIR   # write a small sample dataset to DIR first
    python examples/train_loop.py ROOT --uint8 --image-size 224 224 --device cuda   # the fastest path

Prints samples/s at the end. The only line that differs from a LeRobotDataset script is the
dataset constructor. With ``--uint8`` frames leave the workers as uint8 (a quarter of the bytes),
cross to the device from pinned memory, and become float32 there (``frames_to_device``); with
``--image-size`` they are decoded straight to that size.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import asdict
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from lerobot_stream_loader import StreamingDataLoader, StreamingLeRobot
from lerobot_stream_loader.batch.device_frames import frames_to_device


class TinyPolicy(nn.Module):
    """Camera frames + state -> action, small enough to train on a CPU."""

    def __init__(self, cameras: int, state_dim: int, action_dim: int) -> None:
        super().__init__()
        self.vision = nn.Sequential(nn.Conv2d(3, 8, 5, stride=4), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten())
        self.head = nn.Sequential(nn.Linear(cameras * 32 + state_dim, 64), nn.ReLU(), nn.Linear(64, action_dim))

    def forward(self, images: list[torch.Tensor], state: torch.Tensor) -> torch.Tensor:
        features = [self.vision(image) for image in images]
        return self.head(torch.cat([*features, state], dim=1))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", nargs="?", help="dataset root (local folder or URL)")
    parser.add_argument("--make-sample", metavar="DIR", help="write a sample dataset to DIR if absent and use it")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--shuffle", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--uint8", action="store_true", help="uint8 frames, converted to float32 on the device")
    parser.add_argument("--image-size", type=int, nargs=2, metavar=("H", "W"), help="decode frames to H x W")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)

    root = args.root
    if args.make_sample:
        root = args.make_sample
        if not (Path(root) / "meta/info.json").exists():
            from lerobot_stream_loader.synthetic import write_sample_dataset
            from lerobot_stream_loader.synthetic.layout import SampleOptions, plan_episodes

            options = SampleOptions(episodes=20, cameras=2, size=(96, 72), frames_per_episode=(60, 120),
                                    episodes_per_video_file=6, episodes_per_data_file=8)
            frames = plan_episodes(options)[-1].to_index * options.cameras
            with tqdm(total=frames, desc=f"writing a sample dataset to {root}", unit="frame") as bar:
                write_sample_dataset(root, progress=bar.update, **asdict(options))
    if root is None:
        parser.error("give a dataset ROOT or --make-sample DIR")

    dataset = StreamingLeRobot(root, shuffle=args.shuffle, seed=0, return_uint8=args.uint8,
                               image_size=tuple(args.image_size) if args.image_size else None)
    cameras = dataset.meta.video_keys
    state_dim = dataset.meta.features["observation.state"]["shape"][0]
    action_dim = dataset.meta.features["action"]["shape"][0]
    loader = StreamingDataLoader(dataset, batch_size=args.batch_size, num_workers=args.workers,
                                 persistent_workers=args.workers > 0, pin_memory=args.device.startswith("cuda"))
    policy = TinyPolicy(len(cameras), state_dim, action_dim).to(args.device)
    optimizer = torch.optim.AdamW(policy.parameters(), lr=1e-3)

    samples, step, epoch = 0, 0, 0
    start = time.perf_counter()
    with tqdm(total=args.steps, desc="train", unit="step") as bar:
        while step < args.steps:
            dataset.set_epoch(epoch)
            for batch in loader:
                batch = frames_to_device(batch, args.device)  # uint8 frames become float32 there
                prediction = policy([batch[key] for key in cameras], batch["observation.state"])
                loss = nn.functional.mse_loss(prediction, batch["action"])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                samples += len(batch["index"])
                step += 1
                bar.update(1)
                bar.set_postfix(loss=f"{loss.item():.4f}", epoch=epoch)
                if step >= args.steps:
                    break
            epoch += 1
    elapsed = time.perf_counter() - start
    print(f"{samples} samples in {elapsed:.1f} s: {samples / elapsed:.1f} samples/s "
          f"({len(dataset)} samples per epoch, {len(cameras)} cameras)")


if __name__ == "__main__":
    main()
