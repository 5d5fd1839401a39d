"""What :class:`~lerobot_stream_loader.StreamingLeRobot` and
:class:`~lerobot_stream_loader.MixedStreamingLeRobot` share: the epoch, this process's place among
the readers, ``len()``, the resumable state and the skeleton of an iteration.

A subclass says how its plan is made (:meth:`StreamingBase._fresh_plan`,
:meth:`StreamingBase._elastic_plan`), what fingerprints it (:meth:`StreamingBase._fingerprint`) and
which RGB video keys a batch's collate may convert (:meth:`StreamingBase.float_frame_keys`).
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypedDict, TypeVar

from torch.utils.data import IterableDataset, get_worker_info

from .batch.collate import StreamingCollate
from .plan.elastic import ElasticState
from .plan.ranks import resolve_rank, resolve_worker
from .plan.state import PlanState
from .util.process_local import ProcessLocal
from .util.stage_clock import clock

if TYPE_CHECKING:
    from typing_extensions import Self, Unpack


class SkippablePlan(Protocol):
    """A reader's plan for one epoch, from which the samples already read can be skipped."""

    def skip(self, consumed: int) -> Self: ...


PlanT = TypeVar("PlanT", bound=SkippablePlan)


class ReaderPlace(TypedDict):
    """This reader's place among all readers: what a subclass's planner is given as keywords."""

    rank: int
    world_size: int
    worker_id: int
    num_workers: int


def check_place(rank: int | None, world_size: int | None) -> None:
    """``rank`` and ``world_size`` come together or not at all."""
    if (rank is None) != (world_size is None):
        raise ValueError(f"give both rank and world_size or neither (rank={rank}, world_size={world_size})")


def check_resources(**sizes: int | None) -> None:
    """Every given resource size (pool_size, shuffle_buffer, cache_bytes, ...) is at least 1."""
    if any(value is not None and value < 1 for value in sizes.values()):
        raise ValueError(f"{', '.join(sizes)} must be >= 1; got "
                         + ", ".join(f"{k}={v}" for k, v in sizes.items() if v is not None and v < 1))


class StreamingBase(ProcessLocal, IterableDataset, Generic[PlanT]):
    """Epoch, ranks, length and resumable state of a streaming dataset (see the module's docstring)."""

    _plan_name = "plan"  # how an elastic state's mismatch names what differs

    def _start(self, rank: int | None, world_size: int | None) -> None:
        """Set up the shared state; called by a subclass's constructor once its own fields are set."""
        check_place(rank, world_size)
        self._rank, self._world_size = rank, world_size
        self._epoch = multiprocessing.Value("q", 0, lock=False)
        self._epoch_set = multiprocessing.Value("b", 0, lock=False)  # set_epoch() since the last pass began
        self._passes = 0  # passes begun in the process that owns the dataset
        self._consumed = 0
        self._resumed_skipped: list[dict[str, Any]] = []  # what the loaded state's reader had skipped
        self._loaded: PlanState | ElasticState | None = None
        self._resources: Any = None
        self._io_base: dict[str, int] = {}  # this process's storage counters when its pass began
        self._pass_cache: Any = None  # the current pass's episode cache counters (CacheStats)

    # -- what a subclass provides ------------------------------------------------------------------------
    def _fingerprint(self, world: int, workers: int) -> str:
        raise NotImplementedError

    def _fresh_plan(self, *, epoch: int, **place: Unpack[ReaderPlace]) -> PlanT:
        raise NotImplementedError

    def _elastic_plan(self, loaded: ElasticState, **place: Unpack[ReaderPlace]) -> PlanT:
        raise NotImplementedError

    def _samples_per_rank(self, world: int) -> int:
        raise NotImplementedError

    def _skipped_now(self) -> list[dict[str, Any]]:
        """The episodes this reader skipped in the current pass (for :meth:`state_dict`)."""
        return []

    def _io_stats(self) -> dict[str, int]:
        """This process's storage and cache counters of the current pass (for :meth:`stats`): its
        resources' counters since the pass began (``_io_base``) and the pass's episode cache's."""
        resources, cache = self._resources, self._pass_cache
        if resources is None or resources.pid != os.getpid() or cache is None:
            return {}
        base = self._io_base
        out = {name: value - base.get(name, 0) for name, value in resources.io_counters().items()}
        return {**out, "episodes_fetched": cache.fetched, "cache_hits": cache.hits, "cache_misses": cache.misses}

    def stats(self) -> dict[str, Any]:
        """Counters of the current pass in this process: ``wall`` seconds, ``seconds`` per stage
        (``fetch_wait``: waiting on episodes being fetched; ``decode``: decoding and building items;
        ``collate``), ``samples``, ``frames_decoded``, ``stand_ins``, ``fetched_bytes``, ``fetches``,
        ``retries``, ``throttled``, ``episodes_fetched``, ``cache_hits``/``cache_misses`` (ready / not yet
        requested when asked for), ``disk_cache_hits``/``misses``,
        ``skipped_episodes``. Every worker's, summed, with rates:
        :meth:`lerobot_stream_loader.StreamingDataLoader.stats`."""
        return {**clock().snapshot(), **self._io_stats(), "skipped_episodes": len(self._skipped_now())}

    def float_frame_keys(self) -> set[str]:
        """RGB video keys (as items name them) whose float32 frames a batch's collate may convert
        from uint8 instead of the worker (none with ``return_uint8`` or ``image_transforms``)."""
        raise NotImplementedError

    def defer_float_frames(self, keys: Iterable[str]) -> None:
        """From now on, leave the frames of ``keys`` (of :meth:`float_frame_keys`) uint8 in this
        process's items: the batch's collate converts them (:class:`~.batch.collate.StreamingCollate`
        calls this in each DataLoader worker)."""
        raise NotImplementedError

    # -- shared --------------------------------------------------------------------------------------
    @property
    def collate_fn(self) -> StreamingCollate:
        """``default_collate``'s batches with fewer copies (see :mod:`~lerobot_stream_loader.batch.collate`):
        ``DataLoader(dataset, batch_size=..., collate_fn=dataset.collate_fn)``."""
        return StreamingCollate(self.float_frame_keys())

    def set_epoch(self, epoch: int) -> None:
        """Use the plan of ``epoch`` for the next pass (also in persistent workers).

        Without it, each new pass reads the next epoch: the first pass is epoch 0 (or the one a loaded
        state holds), and every later pass begun in the process that owns the dataset advances the
        epoch by one: a pass over the dataset itself, over a
        :class:`~lerobot_stream_loader.StreamingDataLoader` (any worker count), or over a plain
        ``DataLoader`` with ``num_workers=0``. A plain ``DataLoader`` with worker processes cannot tell
        the dataset that a pass began: call ``set_epoch`` before each pass there. Calling it before
        every pass pins the epochs.
        """
        self._epoch.value = int(epoch)
        self._epoch_set.value = 1

    def begin_pass(self) -> None:
        """A new pass begins (called by the owner of the iteration: ``__iter__`` in the main process,
        :class:`~lerobot_stream_loader.StreamingDataLoader` when it runs workers): the epoch advances by
        one unless it was set for this pass, or this is the first pass."""
        if self._epoch_set.value:
            self._epoch_set.value = 0
        elif self._passes:
            self._epoch.value += 1
        self._passes += 1

    def _rank_world(self) -> tuple[int, int]:
        return resolve_rank(self._rank, self._world_size)

    def __len__(self) -> int:
        """Samples this rank yields per epoch, all DataLoader workers together: the same on every rank,
        in every epoch, for any worker count."""
        _, world = self._rank_world()
        return self._samples_per_rank(world)

    def state_dict(self) -> dict[str, Any]:
        """Where this reader is in its plan: a few integers (for StatefulDataLoader)."""
        rank, world = self._rank_world()
        worker, workers = resolve_worker()
        return PlanState(epoch=self.epoch, consumed=self._consumed, rank=rank, world_size=world,
                         worker_id=worker, num_workers=workers, fingerprint=self._fingerprint(world, workers),
                         skipped=tuple(self._skipped_now()), stats=self.stats()).to_dict()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Resume from :meth:`state_dict`: the next iteration skips the samples already consumed.

        A reader's state saved with another world size or worker count raises ``ValueError`` when
        iterating; to resume on another world size or worker count load
        :func:`~lerobot_stream_loader.plan.elastic.elastic_state` of one rank's ``StatefulDataLoader`` state
        instead (before the DataLoader starts its workers), or resume through
        :class:`~lerobot_stream_loader.StreamingDataLoader`: the rest of the interrupted epoch is then
        spread over the new readers (see :mod:`lerobot_stream_loader.plan.elastic` for the bound).
        """
        loaded = ElasticState.from_dict(state) if isinstance(state.get("consumed"), list | tuple) \
            else PlanState.from_dict(dict(state))
        self._loaded = loaded
        self._epoch.value = loaded.epoch
        if get_worker_info() is None:  # in a worker, the pass that loads it has begun already
            self._epoch_set.value = 1

    def _reader_plan(self) -> tuple[PlanT, ReaderPlace]:
        """This reader's plan for the current epoch, the samples a loaded state consumed skipped, and
        its place (rank, world_size, worker_id, num_workers)."""
        if get_worker_info() is None:
            self.begin_pass()
        clock().start()
        rank, world = self._rank_world()
        worker, workers = resolve_worker()
        place: ReaderPlace = dict(rank=rank, world_size=world, worker_id=worker, num_workers=workers)
        loaded, self._loaded = self._loaded, None
        skip = 0
        self._resumed_skipped = []
        if isinstance(loaded, ElasticState) and loaded.epoch == self.epoch:  # later epochs: the new plan
            if loaded.fingerprint != self._fingerprint(loaded.world_size, loaded.num_workers):
                raise ValueError(f"the elastic state was saved for a different {self._plan_name}")
            plan = self._elastic_plan(loaded, **place)
        else:
            plan = self._fresh_plan(epoch=self.epoch, **place)
        if isinstance(loaded, PlanState):
            loaded.check(rank=rank, worker_id=worker, world_size=world, num_workers=workers,
                         fingerprint=self._fingerprint(world, workers))
            skip = loaded.consumed
            self._resumed_skipped = [dict(x) for x in loaded.skipped]
        self._consumed = skip
        return plan.skip(skip), place

    def _counted(self, stream: Iterable[Any], close: Callable[[], None],
                 finish: Callable[[Any], dict[str, Any]]) -> Iterator[dict[str, Any]]:
        """Yield ``finish(x)`` for each ``x`` of ``stream``, counting what was yielded for
        :meth:`state_dict`; ``close()`` when the iteration ends or is abandoned."""
        try:
            stages = clock()
            for value in stream:
                self._consumed += 1
                stages.add("samples")
                yield finish(value)
        finally:
            close()
