"""One memory budget per DataLoader worker, split into the parts a worker holds.

A worker holds, besides the interpreter and its libraries (``BASE_BYTES``): fetched episode bytes
(``cache_bytes``), decoded samples waiting to be shuffled (``shuffle_buffer``), open decoders
(``decoders``) and the shared memory of batches it keeps for reuse. :func:`split_budget` gives each
part its share of ``memory_budget``; a part the user sets keeps its value and the others share what
is left. Parts set so that they cannot fit raise ``ValueError`` naming each part's size.
"""

from __future__ import annotations

from dataclasses import dataclass

MIB = 1 << 20
DEFAULT_MEMORY_BUDGET = 1792 * MIB
BASE_BYTES = 256 * MIB  # interpreter, torch, decoding libraries, the metadata and items in flight
# Shares of what is left after BASE_BYTES: 1/3 fetched bytes, 1/6 decoded samples, 1/4 open decoders,
# 1/4 kept batch memory (at the default budget: 512, 256, 384 and 384 MiB).
SHARES = {"cache": 4, "decoded": 2, "decoders": 3, "batches": 3}
DECODER_BYTES_PER_PIXEL = 10  # an open decoder's frames and state: about 3 MB at 640x480
DECODER_BASE_BYTES = 256 << 10


def decoder_bytes(pixels: int) -> int:
    """Estimated memory of one open decoder of frames of ``pixels`` pixels."""
    return DECODER_BASE_BYTES + DECODER_BYTES_PER_PIXEL * pixels


@dataclass(frozen=True)
class MemorySplit:
    """Bytes of each part of a worker's budget (``base`` is the fixed allowance for the interpreter)."""

    budget: int
    base: int
    cache: int
    decoded: int
    decoders: int
    batches: int

    def describe(self) -> str:
        """One line: the budget and its parts in MiB."""
        parts = ", ".join(f"{name} {getattr(self, name) / MIB:.0f}" for name in
                          ("base", "cache", "decoded", "decoders", "batches"))
        return f"memory_budget {self.budget / MIB:.0f} MiB per worker ({parts} MiB)"


def split_budget(memory_budget: int | None, *, cache: int | None = None, decoded: int | None = None,
                 decoders: int | None = None, batches: int | None = None) -> MemorySplit:
    """Each part's bytes. With ``memory_budget``: given parts as given, the others sharing what remains
    by ``SHARES``. Without: the default budget's split, given parts replacing their shares (the
    budget is then their sum)."""
    given = {name: value for name, value in
             {"cache": cache, "decoded": decoded, "decoders": decoders, "batches": batches}.items()
             if value is not None}
    if memory_budget is None:
        parts = {**_shared(DEFAULT_MEMORY_BUDGET - BASE_BYTES, SHARES), **given}
        return MemorySplit(BASE_BYTES + sum(parts.values()), BASE_BYTES, **parts)
    budget = int(memory_budget)
    left = budget - BASE_BYTES - sum(given.values())
    free = {name: share for name, share in SHARES.items() if name not in given}
    if left < len(free) * MIB:
        shown = "".join(f"{name} {value / MIB:.0f} MiB + " for name, value in given.items())
        raise ValueError(f"memory_budget={budget / MIB:.0f} MiB per worker cannot hold {shown}"
                         f"{BASE_BYTES / MIB:.0f} MiB for the interpreter"
                         + (f" and room for {', '.join(free)}" if free else "")
                         + ": raise memory_budget or lower those settings")
    return MemorySplit(budget, BASE_BYTES, **{**_shared(left, free), **given})


def _shared(total: int, shares: dict[str, int]) -> dict[str, int]:
    whole = sum(shares.values())
    return {name: total * share // whole for name, share in shares.items()}


def batches_kept(share: int, batch_bytes: int, most: int) -> int:
    """Batches' worth of shared memory a worker keeps for reuse within ``share`` (at least one)."""
    return max(1, min(most, share // max(1, batch_bytes)))
