"""Turning many small range requests into few physical fetches, and mapping results back.

Pure functions: ``plan_reads`` merges requests to one file that lie closer than ``gap`` bytes (or
overlap) into one block and splits a block larger than ``split_size`` into near-equal parts that
can be fetched in parallel; ``assemble`` cuts every request's bytes back out of the parts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple


class ReadRequest(NamedTuple):
    """``length`` bytes of the file at ``path`` (relative to the reader's root) from ``offset``."""

    path: str
    offset: int
    length: int


@dataclass(frozen=True)
class Block:
    """One merged byte range ``[start, end)`` of ``path`` and the fetches (parts) that cover it."""

    path: str
    start: int
    end: int
    first_part: int
    num_parts: int


@dataclass(frozen=True)
class ReadPlan:
    """Physical fetches for a list of requests and how to map their results back."""

    requests: tuple[ReadRequest, ...]
    fetches: tuple[ReadRequest, ...]
    blocks: tuple[Block, ...]
    block_of: tuple[int, ...]  # per request: index into blocks, or -1 for an empty request

    @property
    def coalesced(self) -> int:
        """Requests that were merged into another one's fetch."""
        return sum(1 for r in self.requests if r.length > 0) - len(self.blocks)

    @property
    def split_parts(self) -> int:
        """Extra fetches created by splitting large blocks."""
        return len(self.fetches) - len(self.blocks)


def _parts(start: int, end: int, split_size: int | None) -> list[tuple[int, int]]:
    length = end - start
    if not split_size or split_size <= 0 or length <= split_size:
        return [(start, end)]
    count = -(-length // split_size)
    bounds = [start + (length * i) // count for i in range(count + 1)]
    return list(zip(bounds[:-1], bounds[1:], strict=True))


def plan_reads(
    requests: Sequence[ReadRequest], *, gap: int | None = 1 << 20, split_size: int | None = None
) -> ReadPlan:
    """Plan the fetches for ``requests``.

    ``gap=None`` disables merging (every non-empty request is its own block); ``gap=0`` merges only
    overlapping or touching requests. ``split_size`` of None or 0 disables splitting.
    """
    order = sorted(
        (i for i, r in enumerate(requests) if r.length > 0),
        key=lambda i: (requests[i].path, requests[i].offset, i),
    )
    spans: list[list] = []  # [path, start, end, [request indices]]
    for i in order:
        r = requests[i]
        last = spans[-1] if spans else None
        if (
            gap is not None
            and last is not None
            and last[0] == r.path
            and r.offset <= last[2] + gap
        ):
            last[2] = max(last[2], r.offset + r.length)
            last[3].append(i)
        else:
            spans.append([r.path, r.offset, r.offset + r.length, [i]])

    fetches: list[ReadRequest] = []
    blocks: list[Block] = []
    block_of = [-1] * len(requests)
    for path, start, end, members in spans:
        parts = _parts(start, end, split_size)
        blocks.append(Block(path, start, end, len(fetches), len(parts)))
        fetches.extend(ReadRequest(path, a, b - a) for a, b in parts)
        for i in members:
            block_of[i] = len(blocks) - 1
    return ReadPlan(tuple(requests), tuple(fetches), tuple(blocks), tuple(block_of))


def assemble(plan: ReadPlan, results: Sequence[bytes]) -> list[bytes]:
    """The bytes of every planned request, in request order, from the fetches' ``results``."""
    if len(results) != len(plan.fetches):
        raise ValueError(f"expected {len(plan.fetches)} fetch results, got {len(results)}")
    joined: list[bytes] = []
    for block in plan.blocks:
        parts = results[block.first_part : block.first_part + block.num_parts]
        joined.append(parts[0] if len(parts) == 1 else b"".join(parts))
    out: list[bytes] = []
    for req, b in zip(plan.requests, plan.block_of, strict=True):
        if b < 0:
            out.append(b"")
            continue
        block, data = plan.blocks[b], joined[b]
        lo = req.offset - block.start
        if lo == 0 and req.length == len(data):
            out.append(data)
        else:
            out.append(bytes(memoryview(data)[lo : lo + req.length]))
    return out
