"""Property tests on synthetic sample tables: spans cover every dependency, and synthesized files parse
back to the same samples, times and bytes."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lerobot_stream_loader.mp4 import index_mp4, synthesize_mp4
from lerobot_stream_loader.mp4.boxes import iter_boxes
from lerobot_stream_loader.mp4.span import compute_span, compute_spans
from tests.support.mp4_files import build_mp4


@st.composite
def streams(draw):
    """A closed-GOP stream: (decode-order durations, cts, sizes, sync, refs, edits, negative_cts).

    Presentation order 0..n-1 is cut into GOPs; in each, anchors (I then P) are decoded first and the
    B-frames between two anchors right after the later one. refs[d] = decode indices frame d needs.
    """
    n = draw(st.integers(1, 40))
    gop_starts = sorted({0, *draw(st.lists(st.integers(1, max(1, n - 1)), max_size=5))} - {n})
    decode: list[int] = []
    kind: dict[int, str] = {}
    for g, start in enumerate(gop_starts):
        end = gop_starts[g + 1] if g + 1 < len(gop_starts) else n
        anchors = sorted({start, end - 1, *draw(st.lists(st.integers(start, end - 1), max_size=4))})
        prev = None
        for a in anchors:
            kind[a] = "I" if a == start else "P"
            decode.append(a)
            if prev is not None:
                decode.extend(range(prev + 1, a))
                for b in range(prev + 1, a):
                    kind[b] = "B"
            prev = a
    position = {p: d for d, p in enumerate(decode)}
    refs: list[set[int]] = []
    for p in decode:
        if kind[p] == "I":
            refs.append(set())
        elif kind[p] == "P":
            refs.append({position[max(q for q in range(p) if kind[q] != "B")]})
        else:
            lo = max(q for q in range(p) if kind[q] != "B")
            hi = min(q for q in range(p + 1, n) if kind[q] != "B")
            refs.append({position[lo], position[hi]})
    base = draw(st.sampled_from([512, 1000, 1001]))
    durations = np.array([base + draw(st.integers(0, 3)) for _ in range(n)], dtype=np.int64)
    pres_time = np.concatenate(([0], np.cumsum(durations)))[np.array(decode)]
    dts = np.concatenate(([0], np.cumsum(durations)[:-1]))
    negative = draw(st.booleans())
    delay = 0 if negative else int(max(0, (dts - pres_time).max()))
    cts = pres_time + delay - dts
    sizes = np.array([draw(st.integers(1, 200)) for _ in range(n)], dtype=np.int64)
    sync = np.array([kind[p] == "I" for p in decode])
    edits = [(10_000, delay * 1000 // 15360)] if draw(st.booleans()) and delay else []
    return durations, cts, sizes, sync, refs, edits


def closure(refs: list[set[int]], frames) -> set[int]:
    need, todo = set(), list(frames)
    while todo:
        d = todo.pop()
        if d not in need:
            need.add(d)
            todo.extend(refs[d])
    return need


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stream=streams(), data=st.data())
def test_span_covers_dependencies_and_synthesis_round_trips(stream, data) -> None:
    durations, cts, sizes, sync, refs, edits = stream
    per_chunk = data.draw(st.sampled_from([(1,), (3,), (2, 5, 1)]))
    gap = data.draw(st.sampled_from([0, 9]))
    source = build_mp4(durations, cts, sizes, sync, per_chunk=per_chunk, gap=gap, edits=edits,
                       moov_first=data.draw(st.booleans()), co64=data.draw(st.booleans()))
    index = index_mp4(source)
    times = index.frame_times()
    a = data.draw(st.integers(0, len(times) - 1))
    b = data.draw(st.integers(a + 1, len(times)))
    to_ts = times[b] if b < len(times) else times[-1] + 1.0
    span = index.span(times[a], to_ts)

    shown = {int(d) for d in index.display_order[a:b]}
    assert span.frames == len(shown)
    needed = closure(refs, shown)
    assert min(needed) >= span.sample_lo and max(needed) < span.sample_hi, "span misses a dependency"
    assert index.sync[span.sample_lo]
    assert span.sample_hi - 1 == max(shown)
    lo, hi = span.sample_lo, span.sample_hi
    assert span.byte_offset <= index.offset[lo:hi].min()
    assert span.byte_offset + span.byte_length >= (index.offset[lo:hi] + index.size[lo:hi]).max()

    payload = source[span.byte_offset : span.byte_offset + span.byte_length]
    mini = synthesize_mp4(index, span, payload)
    # Box sizes are consistent: the top level tiles the file exactly.
    assert sum(b.end - b.offset for b in iter_boxes(mini, 0, len(mini), where="mini")) == len(mini)
    back = index_mp4(mini)
    assert len(back) == hi - lo
    np.testing.assert_array_equal(back.size, index.size[lo:hi])
    np.testing.assert_array_equal(back.duration, index.duration[lo:hi])
    # Sync samples of the mini file: a subset of the source's that are safe seek targets.
    assert back.sync[0] and not (back.sync & ~index.sync[lo:hi]).any()
    pts = index.dts[lo:hi] + index.cts[lo:hi]
    kept = np.flatnonzero(back.sync)
    for prev, k in zip(kept, kept[1:]):
        assert pts[:k].max() < pts[k], "a frame decoded before a sync sample is presented after it"
        assert index.dts[lo + k] > pts[prev], "a sync sample decodes before the previous one is shown"
    assert back.presented.all(), "the mini file presents every sample it holds"
    assert back.pts.min() >= 0
    np.testing.assert_array_equal(back.pts + span.time_offset_ticks, index.dts[lo:hi] + index.cts[lo:hi]
                                  + index.info.edit_shift)
    for k in range(hi - lo):
        got = mini[back.offset[k] : back.offset[k] + back.size[k]]
        assert got == source[index.offset[lo + k] : index.offset[lo + k] + index.size[lo + k]]


@pytest.mark.parametrize("n", [1, 2])
def test_tiny_tables(n: int) -> None:
    source = build_mp4(np.full(n, 512), np.zeros(n), np.full(n, 5), None)
    index = index_mp4(source)
    span = index.span(0.0, 10.0)
    assert (span.sample_lo, span.sample_hi, span.padding_ratio) == (0, n, 1.0)
    assert len(index_mp4(synthesize_mp4(index, span, source[span.byte_offset :][: span.byte_length]))) == n


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stream=streams(), data=st.data())
def test_spans_of_many_ranges_equal_each_range_alone(stream, data) -> None:
    """``compute_spans`` (a file's episodes together) gives each range's ``compute_span``: for ranges
    that follow each other (B-frames, gaps, edits, a range that does not start on a sync sample),
    overlapping or unordered ranges, and ranges that present nothing (the same error)."""
    durations, cts, sizes, sync, _, edits = stream
    index = index_mp4(build_mp4(durations, cts, sizes, sync, edits=edits))
    times = list(index.frame_times()) + [float(index.frame_times()[-1]) + 1.0]
    cuts = sorted(data.draw(st.sets(st.integers(0, len(times) - 1), min_size=2, max_size=8)))
    ranges = [(times[a], times[b]) for a, b in zip(cuts, cuts[1:])]
    ranges = [r for r in ranges if data.draw(st.booleans())] or ranges[:1]
    shape = data.draw(st.sampled_from(["in order", "overlapping", "shuffled", "empty"]))
    if shape == "overlapping":
        ranges.append((times[0], times[-1]))
    elif shape == "shuffled":
        ranges = data.draw(st.permutations(ranges))
    elif shape == "empty":
        ranges.insert(data.draw(st.integers(0, len(ranges))), (times[-1] + 5.0, times[-1] + 6.0))
    try:
        expected = [compute_span(index, lo, hi) for lo, hi in ranges]
    except ValueError as error:
        with pytest.raises(type(error), match="no frame is presented"):
            compute_spans(index, ranges)
        return
    assert compute_spans(index, ranges) == expected
