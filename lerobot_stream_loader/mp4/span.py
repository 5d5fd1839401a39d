"""Episode spans: the samples and bytes that decode every frame presented in a time range."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Protocol

import numpy as np

from .boxes import Mp4FormatError


class _EditShift(Protocol):
    edit_shift: int


class SampleTable(Protocol):
    """What a span is computed from: an MP4 track's sample table (:class:`~.index.Mp4Index` is one)."""

    name: str | None
    offset: np.ndarray
    size: np.ndarray
    dts: np.ndarray
    cts: np.ndarray
    display_order: np.ndarray
    display_seconds: np.ndarray
    sync_samples: np.ndarray

    @property
    def info(self) -> _EditShift: ...  # read-only, so that a richer track info (Mp4Index's) fits

    @property
    def timescale(self) -> int: ...


@dataclass(frozen=True)
class Span:
    """Samples [sample_lo, sample_hi) in decode order and the byte range that holds them.

    A mini-MP4 made from the span presents every sample from the leading sync sample on; its times map
    to the source file's as `source = mini + time_offset` (exactly `time_offset_ticks` / `timescale`).
    """

    sample_lo: int
    sample_hi: int
    byte_offset: int
    byte_length: int
    time_offset: float
    time_offset_ticks: int
    timescale: int
    cts_shift: int  # ticks added to every composition offset so that mini times start at >= 0
    frames: int  # frames presented in the requested range
    presented_bytes: int  # bytes of those frames

    @property
    def samples(self) -> int:
        return self.sample_hi - self.sample_lo

    @property
    def padding_ratio(self) -> float:
        """Bytes fetched / bytes of the frames presented in the range (>= 1)."""
        return self.byte_length / self.presented_bytes if self.presented_bytes else float("inf")

    def to_dict(self) -> dict[str, float | int]:
        """Plain values, e.g. for JSON output."""
        out: dict[str, float | int] = asdict(self)
        out["padding_ratio"] = self.padding_ratio
        return out


def compute_span(index: SampleTable, from_ts: float, to_ts: float, *, tolerance: float = 1e-4) -> Span:
    """From the sync sample at or before the first presented frame (in decode order) through the last
    sample any presented frame needs: a frame's references are always decoded before it, so that is
    the presented frame that comes last in decode order."""
    seconds = index.display_seconds
    i0 = int(np.searchsorted(seconds, from_ts - tolerance, side="left"))
    i1 = int(np.searchsorted(seconds, to_ts - tolerance, side="left"))
    where = index.name or "<bytes>"
    if i1 <= i0:
        raise ValueError(f"{where}: no frame is presented in [{from_ts}, {to_ts}) s")
    shown = index.display_order[i0:i1]
    first, last = int(shown.min()), int(shown.max())
    k = int(np.searchsorted(index.sync_samples, first, side="right")) - 1
    if k < 0:
        raise Mp4FormatError(f"{where}: 'stss' has no sync sample at or before sample {first}")
    lo, hi = int(index.sync_samples[k]), last + 1
    offsets = index.offset[lo:hi]
    start = int(offsets.min())
    end = int((offsets + index.size[lo:hi]).max())
    local_pts = index.dts[lo:hi] - index.dts[lo] + index.cts[lo:hi]
    cts_shift = max(0, -int(local_pts.min()))
    ticks = int(index.dts[lo]) - cts_shift + index.info.edit_shift
    return Span(
        sample_lo=lo,
        sample_hi=hi,
        byte_offset=start,
        byte_length=end - start,
        time_offset=ticks / index.timescale,
        time_offset_ticks=ticks,
        timescale=index.timescale,
        cts_shift=cts_shift,
        frames=i1 - i0,
        presented_bytes=int(index.size[shown].sum()),
    )


def compute_spans(index: SampleTable, ranges: list[tuple[float, float]], *, tolerance: float = 1e-4) -> list[Span]:
    """:func:`compute_span` of each (from_ts, to_ts) in ``ranges``, equal span for span, computed for all
    at once when the ranges follow each other in the file (as a file's episodes do) and their samples
    do not overlap; otherwise (or to raise the first range's error) one range at a time."""
    if not ranges:
        return []
    bounds = np.asarray(ranges, dtype=np.float64)
    seconds = index.display_seconds
    i0 = np.searchsorted(seconds, bounds[:, 0] - tolerance, side="left")
    i1 = np.searchsorted(seconds, bounds[:, 1] - tolerance, side="left")
    shown = np.concatenate((index.display_order, [0]))  # a sentinel: reduceat may start at the end
    if not _in_order(i0, i1) or not len(index.sync_samples):
        return _each(index, ranges, tolerance)
    cuts = np.column_stack((i0, i1)).ravel()
    first = np.minimum.reduceat(shown, cuts)[::2]
    last = np.maximum.reduceat(shown, cuts)[::2]
    k = np.searchsorted(index.sync_samples, first, side="right") - 1
    if (k < 0).any():
        return _each(index, ranges, tolerance)
    lo, hi = index.sync_samples[k], last + 1
    if not _in_order(lo, hi):
        return _each(index, ranges, tolerance)
    samples = np.column_stack((lo, hi)).ravel()
    start = np.minimum.reduceat(np.concatenate((index.offset, [0])), samples)[::2]
    end = np.maximum.reduceat(np.concatenate((index.offset + index.size, [0])), samples)[::2]
    earliest = np.minimum.reduceat(np.concatenate((index.dts + index.cts, [0])), samples)[::2] - index.dts[lo]
    presented = np.add.reduceat(np.concatenate((index.size[index.display_order], [0])), cuts)[::2]
    spans = []
    for j in range(len(ranges)):
        cts_shift = max(0, -int(earliest[j]))
        ticks = int(index.dts[lo[j]]) - cts_shift + index.info.edit_shift
        spans.append(Span(sample_lo=int(lo[j]), sample_hi=int(hi[j]), byte_offset=int(start[j]),
                          byte_length=int(end[j]) - int(start[j]), time_offset=ticks / index.timescale,
                          time_offset_ticks=ticks, timescale=index.timescale, cts_shift=cts_shift,
                          frames=int(i1[j] - i0[j]), presented_bytes=int(presented[j])))
    return spans


def _each(index: SampleTable, ranges: list[tuple[float, float]], tolerance: float) -> list[Span]:
    """:func:`compute_span` of one range after another (the first one without a span raises)."""
    return [compute_span(index, start, stop, tolerance=tolerance) for start, stop in ranges]


def _in_order(starts: np.ndarray, ends: np.ndarray) -> bool:
    """Whether the half-open ranges [starts[j], ends[j]) are each non-empty and follow each other."""
    return bool((ends > starts).all() and (starts[1:] >= ends[:-1]).all())
