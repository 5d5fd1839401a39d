"""Item comparison for ``check_against_lerobot.py``: what differs between StreamingLeRobot's item and LeRobot's.

Keys, dtypes, shapes and ``torch.equal`` values; for cameras the frame index drawn in each reader's
frame (sample datasets) is shown next to a difference.
"""

from __future__ import annotations

from typing import Any

import torch


def _frame_indices(frames: torch.Tensor) -> list[int | str]:
    """The global index drawn in each frame of a (C, H, W) or (N, C, H, W) camera tensor (sample
    datasets; a one-channel float frame is read as a depth map, in mm when it holds values above 20)."""
    from lerobot_stream_loader.synthetic.checks import read_depth_index, read_frame_index

    stack = frames.unsqueeze(0) if frames.dim() == 3 else frames
    shown: list[int | str] = []
    for frame in stack:
        try:
            if frame.shape[0] == 1 and frame.is_floating_point() and float(frame.max()) > 1.0:
                shown.append(read_depth_index(frame, "mm" if float(frame.max()) > 20 else "m"))
            else:
                shown.append(read_frame_index(frame.float(), strict=False))
        except ValueError:
            shown.append("?")
    return shown


def _describe_values(key: str, ours: torch.Tensor, ref: torch.Tensor, cameras: set[str]) -> str:
    if ours.dtype == torch.bool or ref.dtype == torch.bool or ours.dim() == 0:
        return f"ours {ours.tolist()} vs LeRobot {ref.tolist()}"
    diff = (ours.double() - ref.double()).abs()
    where = int(torch.nonzero(diff.flatten())[0])
    text = (f"{int((diff > 0).sum())} of {diff.numel()} elements differ, max |diff| {float(diff.max()):.3g}, "
            f"first at flat position {where}: ours {ours.flatten()[where].item()!r} vs "
            f"LeRobot {ref.flatten()[where].item()!r}")
    if key in cameras:
        text += f"; frames drawn: ours {_frame_indices(ours)} vs LeRobot {_frame_indices(ref)}"
    return text


def compare_items(ours: dict[str, Any], ref: dict[str, Any], cameras: set[str]) -> list[tuple[str, str]]:
    """(key, what differs) for every key where the two items disagree."""
    problems = [(key, "missing from StreamingLeRobot's item") for key in ref if key not in ours]
    problems += [(key, "not in LeRobot's item") for key in ours if key not in ref]
    for key in (k for k in ref if k in ours):
        a, b = ours[key], ref[key]
        if isinstance(b, torch.Tensor) or isinstance(a, torch.Tensor):
            if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)):
                problems.append((key, f"type: ours {type(a).__name__} vs LeRobot {type(b).__name__}"))
            elif a.dtype != b.dtype:
                problems.append((key, f"dtype: ours {a.dtype} vs LeRobot {b.dtype}"))
            elif a.shape != b.shape:
                extra = (f"; frames drawn: ours {_frame_indices(a)} vs LeRobot {_frame_indices(b)}"
                         if key in cameras else "")
                problems.append((key, f"shape: ours {tuple(a.shape)} vs LeRobot {tuple(b.shape)}{extra}"))
            elif not torch.equal(a, b):
                problems.append((key, _describe_values(key, a, b, cameras)))
        elif type(a) is not type(b) or a != b:
            problems.append((key, f"value: ours {a!r} vs LeRobot {b!r}"))
    return problems
