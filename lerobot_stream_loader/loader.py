"""A StatefulDataLoader whose checkpoints also resume on another worker count or world size.

torchdata's ``StatefulDataLoader.load_state_dict`` takes a checkpoint only on the worker count it
was saved with (another count ends in a bare ``AssertionError`` when iteration starts).
:class:`StreamingDataLoader` is the same loader; a checkpoint of a :class:`StreamingLeRobot` (or a
mixture of them) saved on another worker count or world size becomes the dataset's elastic resume
(:func:`~lerobot_stream_loader.plan.elastic.elastic_state`): the unread rest of the interrupted epoch is
spread over the new readers, and the loader itself starts fresh.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Mapping
from typing import Any

from torchdata.stateful_dataloader import StatefulDataLoader

from .base import StreamingBase
from .plan.elastic import ElasticState, elastic_state
from .util.stage_clock import merge


class StreamingDataLoader(StatefulDataLoader):
    """``torchdata.stateful_dataloader.StatefulDataLoader`` (same arguments) that resumes a
    :class:`StreamingLeRobot` or ``MixedStreamingLeRobot`` checkpoint on any worker count and world size.

    Without a ``collate_fn`` it collates such a dataset's items with ``dataset.collate_fn``: the
    batches ``default_collate`` makes, built with fewer copies (:mod:`lerobot_stream_loader.batch.collate`).

    ``load_state_dict`` of a checkpoint saved on this worker count and world size is torchdata's own
    (exact). Otherwise the dataset loads the checkpoint's elastic state; another kind of dataset
    raises ``ValueError``. Load one rank's ``state_dict()`` on every new rank.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        bound = _SIGNATURE.bind(None, *args, **kwargs).arguments
        dataset = bound.get("dataset")
        if isinstance(dataset, StreamingBase) and bound.get("collate_fn") is None \
                and bound.get("batch_size", 1) is not None and bound.get("batch_sampler") is None:
            # default_collate's batches, built with fewer copies (lerobot_stream_loader.batch.collate)
            collate = dataset.collate_fn
            collate.in_flight = (bound.get("prefetch_factor") or 2) + 2
            kwargs["collate_fn"] = collate
        with warnings.catch_warnings():  # torchdata calls torch.set_vital, which torch deprecates
            warnings.filterwarnings("ignore", message="'set_vital' is deprecated")
            super().__init__(*args, **kwargs)

    def __iter__(self) -> Any:
        if isinstance(self.dataset, StreamingBase) and self.num_workers > 0:
            self.dataset.begin_pass()  # with no workers the dataset sees the pass begin itself
        return super().__iter__()

    def stats(self) -> dict[str, Any]:
        """Counters of the current pass, every worker's summed (:meth:`StreamingLeRobot.stats
        <lerobot_stream_loader.base.StreamingBase.stats>` lists them), with ``samples_per_s``,
        ``fetch_mb_per_s`` and ``decode_frames_per_s``; ``describe_stats(loader.stats())`` is one log
        line. Workers report theirs with each batch (torchdata's state snapshots), so the numbers lag
        by the batches in flight."""
        if not isinstance(self.dataset, StreamingBase):
            raise TypeError(f"stats() needs a StreamingLeRobot or MixedStreamingLeRobot, not a "
                            f"{type(self.dataset).__name__}")
        if self.num_workers == 0:
            return merge([self.dataset.stats()])
        return merge(_reader_stats(self.state_dict()))

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if not state_dict:
            super().load_state_dict(state_dict)
            return
        dataset = self.dataset
        if not isinstance(dataset, StreamingBase):
            saved = _saved_workers(state_dict)
            if saved is not None and saved != self.num_workers:
                raise ValueError(f"this checkpoint was saved with num_workers={saved}, the loader has "
                                 f"{self.num_workers}; only a StreamingLeRobot or MixedStreamingLeRobot resumes on another worker count")
            super().load_state_dict(state_dict)
            return
        elastic = ElasticState.from_dict(elastic_state(state_dict))
        _, world = dataset._rank_world()
        if (elastic.world_size, elastic.num_workers) == (world, max(self.num_workers, 1)) and \
                _saved_workers(state_dict) == self.num_workers:
            super().load_state_dict(state_dict)  # the same shape: torchdata's exact resume
            return
        dataset.load_state_dict(elastic.to_dict())
        super().load_state_dict({})


_SIGNATURE = inspect.signature(StatefulDataLoader.__init__)


def _reader_stats(state: Any) -> list[dict[str, Any]]:
    """Every reader's ``stats`` in a loader state (the dataset states of its worker snapshots)."""
    if isinstance(state, Mapping):
        if "fingerprint" in state and isinstance(state.get("stats"), Mapping):
            return [dict(state["stats"])]
        return [s for value in state.values() for s in _reader_stats(value)]
    return []


def _saved_workers(state: Mapping[str, Any]) -> int | None:
    """The worker count a StatefulDataLoader state was saved with (None: not such a state)."""
    snapshot = state.get("_snapshot")
    if isinstance(snapshot, Mapping):
        return int(snapshot.get("_main_snapshot", {}).get("_num_workers", 0))
    return 0 if "_num_yielded" in state else None
