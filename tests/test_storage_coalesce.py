"""Coalescing and splitting of range requests: properties over random request sets."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lerobot_stream_loader.storage.coalesce import ReadRequest, assemble, plan_reads

FILES = {name: random.Random(name).randbytes(5000) for name in ("a", "b", "c")}


def _fetch(req: ReadRequest) -> bytes:
    data = FILES[req.path]
    assert 0 <= req.offset and req.offset + req.length <= len(data), req
    return data[req.offset : req.offset + req.length]


requests_strategy = st.lists(
    st.tuples(st.sampled_from(sorted(FILES)), st.integers(0, 4999), st.integers(0, 800)).map(
        lambda t: ReadRequest(t[0], t[1], min(t[2], 5000 - t[1]))
    ),
    max_size=30,
)
gap_strategy = st.one_of(st.none(), st.integers(0, 2000))
split_strategy = st.one_of(st.none(), st.just(0), st.integers(1, 3000))


@settings(max_examples=300, deadline=None)
@given(requests_strategy, gap_strategy, split_strategy)
def test_assembled_bytes_equal_direct_slices(requests, gap, split_size):
    plan = plan_reads(requests, gap=gap, split_size=split_size)
    out = assemble(plan, [_fetch(f) for f in plan.fetches])
    assert out == [FILES[r.path][r.offset : r.offset + r.length] for r in requests]


@settings(max_examples=300, deadline=None)
@given(requests_strategy, gap_strategy, split_strategy)
def test_plan_shape(requests, gap, split_size):
    plan = plan_reads(requests, gap=gap, split_size=split_size)
    nonempty = [r for r in requests if r.length > 0]
    assert all(f.length > 0 for f in plan.fetches)
    if split_size:
        assert all(f.length <= split_size for f in plan.fetches)
    else:
        assert len(plan.fetches) == len(plan.blocks)
    assert plan.coalesced == len(nonempty) - len(plan.blocks) >= 0
    assert plan.split_parts == len(plan.fetches) - len(plan.blocks) >= 0
    if gap is None:
        assert len(plan.blocks) == len(nonempty)
        return
    # merged blocks of one file never overlap and lie more than `gap` apart
    by_path: dict[str, list] = {}
    for block in plan.blocks:
        by_path.setdefault(block.path, []).append(block)
    for blocks in by_path.values():
        blocks.sort(key=lambda b: b.start)
        for left, right in zip(blocks, blocks[1:], strict=False):
            assert right.start > left.end + gap
    # each block spans exactly from its first member's start to its last member's end
    for block in plan.blocks:
        members = [r for r, b in zip(plan.requests, plan.block_of, strict=True) if b >= 0 and plan.blocks[b] == block]
        assert block.start == min(r.offset for r in members)
        assert block.end == max(r.offset + r.length for r in members)


def test_close_requests_merge_and_far_ones_do_not():
    reqs = [ReadRequest("a", 0, 10), ReadRequest("a", 100, 10), ReadRequest("a", 4000, 10), ReadRequest("b", 5, 5)]
    plan = plan_reads(reqs, gap=100)
    assert [(f.path, f.offset, f.length) for f in plan.fetches] == [("a", 0, 110), ("a", 4000, 10), ("b", 5, 5)]
    assert plan.coalesced == 1
    assert plan_reads(reqs, gap=89).coalesced == 0


def test_large_range_splits_into_near_equal_parts():
    plan = plan_reads([ReadRequest("a", 10, 1000)], gap=0, split_size=300)
    assert [(f.offset, f.length) for f in plan.fetches] == [(10, 250), (260, 250), (510, 250), (760, 250)]
    assert plan.split_parts == 3


def test_duplicates_and_empty_requests():
    reqs = [ReadRequest("a", 7, 3), ReadRequest("a", 7, 3), ReadRequest("a", 9, 0)]
    plan = plan_reads(reqs, gap=0)
    assert len(plan.fetches) == 1
    assert assemble(plan, [_fetch(f) for f in plan.fetches]) == [FILES["a"][7:10]] * 2 + [b""]


def test_assemble_refuses_wrong_result_count():
    plan = plan_reads([ReadRequest("a", 0, 5)])
    with pytest.raises(ValueError, match="expected 1 fetch results"):
        assemble(plan, [])
