"""The dataset ``lerobot-stream train`` trains on, built from lerobot-train's dataset settings.

:class:`DatasetRequest` holds those settings as plain values (no LeRobot types), so that how they map
to :class:`~lerobot_stream_loader.StreamingLeRobot` and :class:`TrainingMixture` is the same with or
without LeRobot installed.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..dataset import StreamingLeRobot
from ..meta.lerobot_view import LeRobotMeta
from ..storage.paths import is_bare_repo_id
from .mixture import TrainingMixture
from .options import LoaderOptions, keyword_split, mixture_keywords, source_list

log = logging.getLogger(__name__)

DeltaTimestamps = Callable[[LeRobotMeta], "dict[str, list[float]] | None"]


@dataclass
class DatasetRequest:
    """What lerobot-train's arguments ask of the dataset (``--dataset.*``, ``--tolerance_s``, ``--seed``,
    ``--num_workers``), as plain values."""

    repo_id: str
    root: str | None = None
    repo_type: str = "dataset"
    episodes: Sequence[int] | None = None
    revision: str | None = None
    image_transforms: Callable[[torch.Tensor], torch.Tensor] | None = None
    depth_output_unit: str = "mm"
    tolerance_s: float = 1e-4
    seed: int | None = None
    num_workers: int | None = None

    def sources(self) -> list[str] | None:
        """The datasets of a mixture (``--dataset.repo_id='[a,b]'``), None for one dataset."""
        return source_list(self.repo_id)

    def source(self) -> str:
        """Where the one dataset is: ``--dataset.root`` when that folder holds a dataset (as LeRobot
        reads it), else ``--dataset.repo_id`` (a Hub id, a URL or a local path)."""
        if self.root is not None:
            root = os.fspath(self.root)
            if "://" in root or os.path.isfile(os.path.join(root, "meta", "info.json")):
                return root
            log.info("--dataset.root=%s holds no dataset; streaming %s", root, self.repo_id)
        return self.located(self.repo_id)

    def located(self, source: str) -> str:
        """``source`` with ``--dataset.repo_type`` applied: a bare id of a bucket is ``hf://buckets/<id>``."""
        if self.repo_type not in ("dataset", "bucket"):
            raise ValueError(f"--dataset.repo_type={self.repo_type!r}: expected 'dataset' or 'bucket'")
        return f"hf://buckets/{source}" if self.repo_type == "bucket" and is_bare_repo_id(source) else source


def build_dataset(request: DatasetRequest, options: LoaderOptions, *,
                  delta_timestamps: DeltaTimestamps | None = None, rank: int | None = None,
                  world_size: int | None = None, check_only: bool = False) -> StreamingLeRobot | TrainingMixture:
    """The dataset of ``request`` with ``options`` (``--stream.*``, ``--mix.*``).

    ``delta_timestamps(meta)`` gives each dataset's windows from its own metadata (its fps), as
    LeRobot's ``resolve_delta_timestamps``. ``check_only`` builds the datasets without shuffling or
    windows: it checks every source, option and mixture rule while reading only metadata.
    """
    sources = request.sources()
    stream = options.stream_values()
    mix = options.mix_values(None if sources is None else len(sources))
    seed = 0 if request.seed is None else int(request.seed)
    if sources is None:
        if "rename" in stream:
            raise ValueError("--stream.rename would rename items but not dataset.meta, which the policy is made "
                             "from; use lerobot-train's --rename_map")
        kwargs: dict[str, Any] = {"shuffle": True, **stream, "episodes": request.episodes, "seed": seed,
                                  "num_workers": request.num_workers, "rank": rank, "world_size": world_size}
        return _source(request.source(), request, kwargs, delta_timestamps, check_only)
    if request.root is not None:
        raise ValueError("--dataset.root names one dataset; with a list in --dataset.repo_id give each "
                         "dataset's path or URL in the list")
    if request.episodes is not None:
        raise ValueError("--dataset.episodes selects episodes of one dataset; it cannot be used with a list "
                         "of datasets in --dataset.repo_id")
    mixture_kw, source_kw = keyword_split(stream, lambda name: name in mixture_keywords())
    built = [_source(request.located(s), request, dict(source_kw), delta_timestamps, check_only) for s in sources]
    mixture_kw = {"shuffle": True, **mixture_kw, **mix, "seed": seed, "rank": rank, "world_size": world_size}
    if check_only:
        mixture_kw["shuffle"] = False
    return TrainingMixture(built, **mixture_kw)


def _source(source: str, request: DatasetRequest, kwargs: dict[str, Any], delta_timestamps: DeltaTimestamps | None,
            check_only: bool) -> StreamingLeRobot:
    """One dataset with lerobot-train's item settings (uint8 frames, as its trainer reads them)."""
    kwargs.update(revision=request.revision, return_uint8=True, depth_output_unit=request.depth_output_unit,
                  tolerance_s=request.tolerance_s)
    if check_only or delta_timestamps is None:
        if check_only:
            kwargs["shuffle"] = False
        return StreamingLeRobot(source, image_transforms=request.image_transforms, **kwargs)
    probe = StreamingLeRobot(source, **{**kwargs, "shuffle": False})  # metadata for the windows
    return StreamingLeRobot(source, image_transforms=request.image_transforms,
                            delta_timestamps=delta_timestamps(probe.meta), **kwargs)


def describe(dataset: StreamingLeRobot | TrainingMixture) -> str:
    """One line naming what a run trains on."""
    if isinstance(dataset, TrainingMixture):
        return "mixture of " + ", ".join(f"{s.meta.root} (weight {float(w):.3g})"
                                         for s, w in zip(dataset.sources, dataset.weights, strict=True))
    return f"{dataset.meta.root} ({dataset.num_episodes} episodes, {dataset.num_frames} frames)"
