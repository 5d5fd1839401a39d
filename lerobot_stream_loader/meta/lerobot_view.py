"""``StreamingLeRobot.meta``: the dataset metadata with the surface of LeRobot's ``LeRobotDatasetMetadata``.

It offers what a LeRobot user, LeRobot's training script and its policy factories read
(``features``, ``fps``, ``robot_type``, ``camera_keys``, ``video_keys``, ``image_keys``, ``depth_keys``,
``has_language_columns``, ``repo_id``, ``total_frames``, ``total_episodes``, ``total_tasks``, ``stats``,
``tasks``, ``names``, ``shapes``, ``get_task_index``) and passes every other attribute
through to the :class:`~lerobot_stream_loader.meta.dataset_meta.DatasetMeta` it wraps (``root``, ``episode()``,
``info``, ...). ``stats`` is built on first access: numpy arrays nested as LeRobot's ``load_stats``
returns them. ``tasks`` is a pandas DataFrame indexed by the task string with a ``task_index``
column, as LeRobot's, and needs pandas; ``task_texts`` is the same as a plain dict.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..storage.hf import parse_hf_root
from .dataset_meta import DatasetMeta
from .depth import rescale_depth_stats

LANGUAGE_COLUMNS = ("language_persistent", "language_events")  # LeRobot's language annotation columns


def stats_as_numpy(stats: dict[str, Any]) -> dict[str, Any]:
    """Nested stats with every leaf as ``np.atleast_1d(np.array(value))`` (LeRobot's ``cast_stats_to_numpy``)."""
    return {key: stats_as_numpy(value) if isinstance(value, dict) else np.atleast_1d(np.array(value))
            for key, value in stats.items()}


def _is_depth(feature: dict[str, Any]) -> bool:
    info = feature.get("info") or {}
    video_info = feature.get("video_info") or {}
    return bool(info.get("is_depth_map") or info.get("video.is_depth_map") or video_info.get("video.is_depth_map"))


class LeRobotMeta:
    """LeRobot-shaped metadata of one dataset (see the module docstring)."""

    def __init__(self, source: DatasetMeta) -> None:
        self.source = source
        self._stats: dict[str, Any] | None = None
        self._depth_unit: str | None = None

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name in ("source", "_stats", "_depth_unit"):
            raise AttributeError(name)
        return getattr(self.source, name)

    @property
    def robot_type(self) -> str | None:
        """Robot type recorded in info.json (None when absent)."""
        return self.source.info.get("robot_type")

    @property
    def image_keys(self) -> list[str]:
        """Cameras stored as images in the data parquet files (``dtype: image``)."""
        return [k for k, f in self.source.features.items() if f.get("dtype") == "image"]

    @property
    def camera_keys(self) -> list[str]:
        """Every visual feature, video or image."""
        return [k for k, f in self.source.features.items() if f.get("dtype") in ("video", "image")]

    @property
    def depth_keys(self) -> list[str]:
        """Cameras holding depth maps (``info.is_depth_map``, or the legacy ``video.is_depth_map``)."""
        return [k for k, f in self.source.features.items() if _is_depth(f)]

    @property
    def has_language_columns(self) -> bool:
        """Whether the dataset has LeRobot's language columns (its trainer then collates with its own function)."""
        return any(column in self.source.features for column in LANGUAGE_COLUMNS)

    @property
    def repo_id(self) -> str:
        """The Hub id (``user/name``) of a Hub dataset, else the dataset's root (a URL or local path)."""
        root = self.source.root
        if root.startswith("hf://"):
            try:
                return parse_hf_root(root).repo_id
            except ValueError:
                pass
        return root

    @property
    def total_tasks(self) -> int:
        return int(self.source.info.get("total_tasks", len(self.source.tasks)))

    @property
    def names(self) -> dict[str, Any]:
        return {k: f.get("names") for k, f in self.source.features.items()}

    @property
    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {k: tuple(f["shape"]) for k, f in self.source.features.items()}

    @property
    def stats(self) -> dict[str, Any]:
        """meta/stats.json as nested numpy arrays (built on first access), depth stats in the output unit."""
        if self._stats is None:
            stats = self.source.stats
            if self._depth_unit is not None:
                stats = rescale_depth_stats(stats, self.source.features, self._depth_unit)
            self._stats = stats_as_numpy(stats)
        return self._stats

    @stats.setter
    def stats(self, value: dict[str, Any]) -> None:
        self._stats = stats_as_numpy(value)

    def rescale_depth_stats(self, output_unit: str) -> None:
        """Report depth features' stats in ``output_unit`` (as LeRobot's method of that name; applied lazily)."""
        self._depth_unit = output_unit
        self._stats = None

    @property
    def task_texts(self) -> dict[int, str]:
        """task_index -> task string."""
        return dict(self.source.tasks)

    @property
    def tasks(self) -> Any:
        """A pandas DataFrame indexed by the task string (index name ``task``) with a ``task_index`` column."""
        try:
            import pandas as pd
        except ImportError as exc:
            raise ImportError("meta.tasks is a pandas DataFrame as in LeRobot: install pandas, or use "
                              "meta.task_texts (a dict task_index -> task)") from exc
        order = sorted(self.source.tasks)
        return pd.DataFrame({"task_index": np.asarray(order, dtype=np.int64)},
                            index=pd.Index([self.source.tasks[i] for i in order], name="task"))

    def get_task_index(self, task: str) -> int | None:
        """The task index of a task string, or None when the dataset has no such task."""
        for index, text in self.source.tasks.items():
            if text == task:
                return int(index)
        return None

    def __repr__(self) -> str:
        return repr(self.source).replace("DatasetMeta(", "LeRobotMeta(", 1)
