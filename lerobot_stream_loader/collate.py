"""Collation of StreamingLeRobot items: ``default_collate``'s batches, built with fewer copies.

:class:`StreamingCollate` returns what ``torch.utils.data.default_collate`` returns for the same
items (keys, dtypes, shapes, values), and in a DataLoader worker:

- stacks large tensors into shared memory the worker reuses once the training process has dropped
  the batch (:mod:`~lerobot_stream_loader.batch_buffers`), instead of fresh shared memory per batch;
- converts RGB video frames to float32 while stacking them: the worker's dataset then leaves those
  frames uint8 (a quarter of the bytes) and the division by 255 writes straight into the batch,
  bit for bit the dataset's own conversion.

:class:`~lerobot_stream_loader.StreamingDataLoader` uses it by default; with a plain DataLoader pass
``collate_fn=dataset.collate_fn``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from torch.utils.data import default_collate, get_worker_info

from .batch_buffers import MIN_POOLED_BYTES, BatchBuffers

DEFAULT_IN_FLIGHT = 4  # batches a worker's buffers may have out at once: prefetch_factor 2 + 2 in use

_buffers: BatchBuffers | None = None  # one per worker process, made on first use


class StreamingCollate:
    """``default_collate`` for mapping items; ``float_keys`` are RGB video keys whose frames may
    arrive uint8 and leave as float32 in [0, 1]; ``in_flight`` bounds the batches' worth of shared
    memory a worker keeps for reuse."""

    def __init__(self, float_keys: Iterable[str] = (), in_flight: int = DEFAULT_IN_FLIGHT) -> None:
        self.float_keys = frozenset(float_keys)
        self.in_flight = max(1, int(in_flight))
        self._deferring = False

    def __call__(self, samples: Sequence[Any]) -> Any:
        if not samples or not isinstance(samples[0], Mapping):
            return default_collate(samples)
        worker = get_worker_info()
        if worker is not None and not self._deferring:
            self._deferring = True
            defer = getattr(worker.dataset, "_defer_float_frames", None)
            if callable(defer) and self.float_keys:
                defer(self.float_keys)  # from now on this worker's items leave these frames uint8
        keys = list(samples[0])
        layouts = {key: self._layout(key, [s[key] for s in samples]) for key in keys}
        per_size: dict[int, int] = {}  # tensors of each byte size in one batch: buffers to keep per batch
        for layout in layouts.values():
            if layout is not None:
                per_size[layout[2]] = per_size.get(layout[2], 0) + 1
        stacked: dict[str, torch.Tensor] = {}
        for key, layout in layouts.items():
            if layout is not None:
                shape, dtype, nbytes = layout
                out = _empty(shape, dtype, nbytes, self.in_flight * per_size[nbytes], worker is not None)
                stacked[key] = _fill(out, [s[key] for s in samples])
        rest = [k for k in keys if k not in stacked]
        collated = default_collate([{k: s[k] for k in rest} for s in samples]) if rest else {}
        return {k: stacked[k] if k in stacked else collated[k] for k in keys}

    def _layout(self, key: str, values: list[Any]) -> tuple[tuple[int, ...], torch.dtype, int] | None:
        """(shape, dtype, bytes) of the batch of ``values``, or None where ``default_collate`` should
        handle them (not tensors of one shape and dtype, or small ones outside ``float_keys``)."""
        first = values[0]
        if not isinstance(first, torch.Tensor) or first.device.type != "cpu" or first.layout != torch.strided:
            return None
        to_float = key in self.float_keys
        allowed = (torch.uint8, torch.float32) if to_float else (first.dtype,)
        if any(not isinstance(v, torch.Tensor) or v.shape != first.shape or v.dtype not in allowed
               for v in values):
            return None
        dtype = torch.float32 if to_float else first.dtype
        nbytes = first.numel() * len(values) * dtype.itemsize
        if not to_float and nbytes < MIN_POOLED_BYTES:
            return None
        return (len(values), *first.shape), dtype, nbytes


def _fill(out: torch.Tensor, values: list[torch.Tensor]) -> torch.Tensor:
    """``values`` stacked into ``out``; uint8 frames into a float32 ``out`` divided by 255 on the way."""
    if all(v.dtype == out.dtype for v in values):
        return torch.stack(values, out=out)
    for i, value in enumerate(values):
        if value.dtype == torch.uint8:
            torch.div(value, 255.0, out=out[i])  # the dataset's own conversion (features.video)
        else:
            out[i].copy_(value)
    return out


def _empty(shape: tuple[int, ...], dtype: torch.dtype, nbytes: int, keep: int, in_worker: bool) -> torch.Tensor:
    """An uninitialized tensor for a batch: reusable shared memory in a worker (at most ``keep``
    buffers of this size kept), plain memory elsewhere."""
    global _buffers
    if not in_worker:
        return torch.empty(shape, dtype=dtype)
    if _buffers is None:
        _buffers = BatchBuffers()
    storage = _buffers.storage(nbytes, keep=keep)
    return torch.empty(0, dtype=dtype).set_(storage, 0, shape)
