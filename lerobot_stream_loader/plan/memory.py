"""One memory budget per DataLoader worker, split into the parts a worker holds.

A worker holds, besides the interpreter and its libraries (``BASE_BYTES``): fetched episode bytes
(``cache_bytes``), decoded samples waiting to be shuffled (``shuffle_buffer``), open decoders
(``decoders``) and the shared memory of batches it keeps for reuse. :func:`split_budget` gives each
part its share of ``memory_budget``; a part the user sets keeps its value and the others share what
is left. Parts set so that they cannot fit raise ``ValueError`` naming each part's size.

The batch part depends on the items: ``BATCHES_KEPT`` batches of ``TYPICAL_BATCH`` samples as a
worker's collate builds them (float32 frames are four times uint8 ones), at most a quarter of a given
budget. The rest is shared 4 : 2 : 3 by fetched bytes, decoded samples and decoders.
"""

from __future__ import annotations

from dataclasses import dataclass

MIB = 1 << 20
BASE_BYTES = 256 * MIB  # interpreter, torch, decoding libraries, the metadata and items in flight
DEFAULT_PARTS = 1152 * MIB  # without a budget: 512 MiB fetched bytes, 256 decoded samples, 384 decoders
SHARES = {"cache": 4, "decoded": 2, "decoders": 3}  # of what the batches leave
BATCHES_KEPT = 4  # batches a worker's buffers may have out at once: prefetch_factor 2 + 2 in use
TYPICAL_BATCH = 32  # samples per batch the default batch share is sized for
DEFAULT_MEMORY_BUDGET = BASE_BYTES + DEFAULT_PARTS  # plus the dataset's batch share (memory_budget=None)
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


def split_budget(memory_budget: int | None, *, batch_bytes: int = 0, cache: int | None = None,
                 decoded: int | None = None, decoders: int | None = None) -> MemorySplit:
    """Each part's bytes; ``batch_bytes``: one batch of ``TYPICAL_BATCH`` samples as collated. With
    ``memory_budget``: the batch share (``BATCHES_KEPT`` such batches, at most a quarter of it), given
    parts as given, the others sharing what remains by ``SHARES``. Without: the default parts, given
    parts replacing their shares, and the batch share (the budget is then their sum)."""
    given = {name: value for name, value in {"cache": cache, "decoded": decoded, "decoders": decoders}.items()
             if value is not None}
    batches = BATCHES_KEPT * (int(batch_bytes) + MIB) if batch_bytes > 0 else 0  # + a batch's small tensors
    if memory_budget is None:
        parts = {**_shared(DEFAULT_PARTS, SHARES), **given}
        return MemorySplit(BASE_BYTES + sum(parts.values()) + batches, BASE_BYTES, batches=batches, **parts)
    budget = int(memory_budget)
    batches = min(batches, max(0, budget - BASE_BYTES) // 4)
    left = budget - BASE_BYTES - batches - sum(given.values())
    free = {name: share for name, share in SHARES.items() if name not in given}
    if left < len(free) * MIB:
        shown = "".join(f"{name} {value / MIB:.0f} MiB + " for name, value in given.items())
        raise ValueError(f"memory_budget={budget / MIB:.0f} MiB per worker cannot hold {shown}"
                         f"{BASE_BYTES / MIB:.0f} MiB for the interpreter"
                         + (f" and room for {', '.join(free)}" if free else "")
                         + ": raise memory_budget or lower those settings")
    return MemorySplit(budget, BASE_BYTES, batches=batches, **{**_shared(left, free), **given})


def _shared(total: int, shares: dict[str, int]) -> dict[str, int]:
    whole = sum(shares.values())
    return {name: total * share // whole for name, share in shares.items()}


def batches_kept(share: int, batch_bytes: int, most: int) -> int:
    """Batches' worth of shared memory a worker keeps for reuse within ``share`` (at least one)."""
    return max(1, min(most, share // max(1, batch_bytes)))
