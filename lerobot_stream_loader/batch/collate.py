"""Collation of StreamingLeRobot items: ``default_collate``'s batches, built with fewer copies.

:class:`StreamingCollate` returns what ``torch.utils.data.default_collate`` returns for the same
items (keys, dtypes, shapes, values), and in a DataLoader worker:

- stacks large tensors into shared memory the worker reuses once the training process has dropped
  the batch (:mod:`~lerobot_stream_loader.batch.buffers`), instead of fresh shared memory per batch;
- converts RGB video frames to float32 while stacking them: the worker's dataset then leaves those
  frames uint8 (a quarter of the bytes) and the division by 255 writes straight into the batch,
  bit for bit the dataset's own conversion.

:class:`~lerobot_stream_loader.StreamingDataLoader` uses it by default, and so does a plain
``DataLoader``: ``default_collate`` hands a batch of :class:`~lerobot_stream_loader.items.item.Item`
to it (registered in torch's ``default_collate_fn_map``, its extension point for element types).
"""

from __future__ import annotations

import math
import os
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch.utils.data import default_collate, get_worker_info
from torch.utils.data._utils.collate import default_collate_fn_map

from ..items.item import Item
from ..items.planar import fast_deinterleave, stack_planar
from ..items.video import float_frames
from ..plan.memory import BATCHES_KEPT, MemorySplit, batches_kept
from ..util.stage_clock import clock
from .buffers import MIN_POOLED_BYTES, BatchBuffers

_AUTO: tuple[int, StreamingCollate] | None = None  # (pid, the collate default_collate hands items to)

DEFAULT_IN_FLIGHT = BATCHES_KEPT  # batches a worker's buffers may have out at once

_ALIGN = 64  # byte alignment of each small tensor in the shared buffer they share
_buffers: BatchBuffers | None = None  # one per worker process, made on first use


class StreamingCollate:
    """``default_collate`` for mapping items; ``float_keys`` are RGB video keys whose frames may
    arrive uint8 and leave as float32 in [0, 1]; ``in_flight`` bounds the batches' worth of shared
    memory a worker keeps for reuse."""

    def __init__(self, float_keys: Iterable[str] = (), in_flight: int = DEFAULT_IN_FLIGHT) -> None:
        self.float_keys = frozenset(float_keys)
        self.in_flight = max(1, int(in_flight))
        self._deferring = False
        self._batch_share: int | None = None  # the worker's memory budget share for kept batches

    def __call__(self, samples: list[Any]) -> Any:
        with clock().timed("collate"):
            return self._collate(samples)

    def _collate(self, samples: list[Any]) -> Any:  # a DataLoader hands its collate_fn a list
        if not samples or not isinstance(samples[0], Mapping):
            return default_collate(samples)
        worker = get_worker_info()
        if worker is not None and not self._deferring:
            self._deferring = True
            defer = getattr(worker.dataset, "defer_float_frames", None)
            if callable(defer) and self.float_keys:
                defer(self.float_keys)  # from now on this worker's items leave these frames uint8
            split = getattr(worker.dataset, "memory", None)
            self._batch_share = split.batches if isinstance(split, MemorySplit) else None
        keys = list(samples[0])
        layouts = {key: self._layout(key, [s[key] for s in samples]) for key in keys}
        outs = _outputs({k: v for k, v in layouts.items() if v is not None}, self.in_flight, worker is not None,
                        self._batch_share)
        stacked = {key: _fill(out, [s[key] for s in samples]) for key, out in outs.items()}
        rest = [k for k in keys if k not in stacked]
        collated = default_collate([{k: s[k] for k in rest} for s in samples]) if rest else {}
        return {k: stacked[k] if k in stacked else collated[k] for k in keys}

    def _layout(self, key: str, values: list[Any]) -> tuple[tuple[int, ...], torch.dtype] | None:
        """(shape, dtype) of the batch of ``values``, or None where ``default_collate`` should handle
        them (not CPU tensors of one shape and dtype)."""
        first = values[0]
        if not isinstance(first, torch.Tensor) or first.device.type != "cpu" or first.layout != torch.strided:
            return None
        to_float = key in self.float_keys
        allowed = (torch.uint8, torch.float32) if to_float else (first.dtype,)
        if any(not isinstance(v, torch.Tensor) or v.shape != first.shape or v.dtype not in allowed
               for v in values):
            return None
        return (len(values), *first.shape), torch.float32 if to_float else first.dtype


def _outputs(layouts: dict[str, tuple[tuple[int, ...], torch.dtype]], in_flight: int,
             in_worker: bool, share: int | None = None) -> dict[str, torch.Tensor]:
    """Uninitialized batch tensors. Outside a worker: plain memory. In a worker: reusable shared
    memory, a buffer of its own for each large tensor (keeping one key, e.g. ``batch["action"]``,
    never holds the camera frames) and one buffer for all the small ones (one file descriptor sent
    to the training process instead of one per key); at most ``in_flight`` batches' worth, and
    within ``share`` bytes (at least one batch) when the worker's memory budget gives one."""
    global _buffers
    if not in_worker:
        return {key: torch.empty(shape, dtype=dtype) for key, (shape, dtype) in layouts.items()}
    if _buffers is None:
        _buffers = BatchBuffers()
    sizes = {key: math.prod(shape) * dtype.itemsize for key, (shape, dtype) in layouts.items()}
    if share is not None:
        in_flight = batches_kept(share, sum(sizes.values()), in_flight)
    large = {key for key, n in sizes.items() if n >= MIN_POOLED_BYTES}
    per_size = Counter(sizes[key] for key in large)  # buffers of each size one batch takes
    outs = {}
    for key in large:
        storage = _buffers.storage(sizes[key], keep=in_flight * per_size[sizes[key]])
        outs[key] = _view(storage, 0, *layouts[key])
    offsets, end = {}, 0
    for key in layouts:
        if key not in large:
            offsets[key] = end
            end += -(-sizes[key] // _ALIGN) * _ALIGN
    if offsets:
        arena = _buffers.storage(end, keep=in_flight, pooled_below=True)
        outs.update({key: _view(arena, offset, *layouts[key]) for key, offset in offsets.items()})
    return outs


def _view(storage: torch.UntypedStorage, offset: int, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    # torch's stubs lack set_(source, offset, size), which the runtime has (contiguous strides)
    return torch.empty(0, dtype=dtype).set_(  # type: ignore[call-overload]
        storage, offset // dtype.itemsize, shape)


def _fill(out: torch.Tensor, values: list[torch.Tensor]) -> torch.Tensor:
    """``values`` stacked into ``out``; uint8 frames into a float32 ``out`` divided by 255 on the way."""
    if out.dtype == torch.uint8 and fast_deinterleave():
        return stack_planar(values, out)  # camera frames: OpenCV's deinterleave instead of a byte-wise copy
    if all(v.dtype == out.dtype for v in values):
        return torch.stack(values, out=out)
    for i, value in enumerate(values):
        if value.dtype == torch.uint8:
            float_frames(value, out[i])  # the dataset's own conversion
        else:
            out[i].copy_(value)
    return out


def _collate_items(batch: list[Any], *, collate_fn_map: Any = None) -> Any:
    """``default_collate`` of items: the dataset's own collate in a DataLoader worker (its RGB frames
    then arrive uint8 and become float32 in the batch), a plain :class:`StreamingCollate` elsewhere."""
    global _AUTO
    if _AUTO is None or _AUTO[0] != os.getpid():  # a forked worker makes its own
        worker = get_worker_info()
        made = getattr(worker.dataset, "collate_fn", None) if worker is not None else None
        _AUTO = os.getpid(), made if isinstance(made, StreamingCollate) else StreamingCollate()
    return _AUTO[1](batch)


default_collate_fn_map[Item] = _collate_items
