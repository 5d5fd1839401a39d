"""What a reader does when one episode's own data fails: raise (the default) or skip it.

An episode is bad when reading it fails after the readers' bounded retries: rows that disagree with
the episodes table, a row with no frame within ``tolerance_s`` or whose frame lies outside the
episode's part of its MP4, missing, short or undecodable video bytes, an MP4 whose index cannot be
read, a file that is gone. :class:`BadEpisodes` holds a reader's policy and what it found; the
stream (:mod:`lerobot_stream_loader.stream`) decides which samples stand in for a skipped episode's.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

from ..errors import StreamLoaderError

MODES = ("raise", "skip")
DEFAULT_MAX_BAD_FRACTION = 0.01

# What a bad episode's data raises: our own errors (format, fetch, frame matching), a file that is gone
# or unreadable, and what the decoders raise on bytes they cannot decode.
BAD_DATA_ERRORS: tuple[type[BaseException], ...] = (StreamLoaderError, OSError, RuntimeError)


class SkippedEpisodeWarning(UserWarning):
    """An episode was skipped (``on_bad_episode="skip"``); the message names it, its file and the cause."""


class TooManyBadEpisodes(StreamLoaderError):
    """A reader skipped more episodes than ``max_bad_fraction`` allows."""


def check_policy(on_bad_episode: str, max_bad_fraction: float) -> None:
    """``on_bad_episode`` is one of :data:`MODES` and ``max_bad_fraction`` within [0, 1]."""
    if on_bad_episode not in MODES:
        raise ValueError(f"on_bad_episode must be 'raise' or 'skip', got {on_bad_episode!r}")
    if not 0.0 <= float(max_bad_fraction) <= 1.0:
        raise ValueError(f"max_bad_fraction must be within [0, 1], got {max_bad_fraction!r}")


def with_hint(exc: BaseException, episode: int) -> BaseException:
    """``exc`` again, its message ending with how to skip or exclude the episode (same type when it
    takes a message, else ``exc`` itself)."""
    hint = (f" (to go on without episode {episode}: StreamingLeRobot(..., on_bad_episode=\"skip\") skips bad "
            f"episodes, exclude_episodes=[{episode}] leaves it out; `lerobot-stream validate ROOT --frames all` "
            "finds them all)")
    try:
        out = type(exc)(f"{exc}{hint}")
    except Exception:  # an exception type that takes no message: keep it as it is
        return exc
    out.__cause__ = exc
    return out


@dataclass
class BadEpisodes:
    """One reader's policy on bad episodes and the ones it skipped in this pass (episode index -> cause).

    ``planned``: episodes of the reader's plan. A reader stops with :class:`TooManyBadEpisodes` when it
    has skipped more than ``max(1, max_fraction * planned)`` of them: one bad episode is always
    skipped, a mostly broken dataset never trained on. ``warned``: the episodes this process has
    named in a warning already (shared by its passes: each is named once per process)."""

    mode: str = "raise"
    max_fraction: float = DEFAULT_MAX_BAD_FRACTION
    where: str = ""
    planned: int = 0
    found: dict[int, str] = field(default_factory=dict)
    warned: dict[int, str] = field(default_factory=dict)

    @property
    def skipping(self) -> bool:
        return self.mode == "skip"

    def failed(self, episode: int, exc: BaseException) -> None:
        """Episode ``episode`` failed with ``exc``: raise it (with a hint) unless skipping; else note it,
        warn once, and stop when too many were skipped."""
        if not self.skipping:
            raise with_hint(exc, episode) from exc
        if episode in self.found:
            return
        cause = f"{type(exc).__name__}: {exc}"
        self.found[episode] = cause
        if episode not in self.warned:
            self.warned[episode] = cause
            warnings.warn(f"{self.where}: skipping episode {episode}: {cause}", SkippedEpisodeWarning,
                          stacklevel=2)
        allowed = max(1.0, self.max_fraction * self.planned)
        if len(self.found) > allowed:
            raise TooManyBadEpisodes(
                f"{self.where}: {len(self.found)} of this reader's {self.planned} episodes are bad (more than "
                f"max_bad_fraction={self.max_fraction} allows): {sorted(self.found)[:20]}; first cause: "
                f"episode {next(iter(self.found))}: {next(iter(self.found.values()))}")

    def known(self, skipped: dict[int, str]) -> None:
        """Episodes found bad before a resume: skipped again without reading them (named once here too)."""
        for episode, cause in skipped.items():
            self.found[episode] = cause
            if episode not in self.warned:
                self.warned[episode] = cause
                warnings.warn(f"{self.where}: skipping episode {episode} (found bad before the resume): {cause}",
                              SkippedEpisodeWarning, stacklevel=2)
