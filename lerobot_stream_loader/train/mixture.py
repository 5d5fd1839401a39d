"""The mixture as LeRobot's trainer reads a dataset: a :class:`MixedStreamingLeRobot` with ``num_frames``
and ``num_episodes`` (what its progress log divides by)."""

from __future__ import annotations

from ..mix.dataset import MixedStreamingLeRobot


class TrainingMixture(MixedStreamingLeRobot):
    """:class:`MixedStreamingLeRobot` with the two counts ``lerobot-train`` logs epochs with."""

    @property
    def num_frames(self) -> int:
        """Samples of one epoch over all ranks (``samples_per_epoch``: the sources' frames by default)."""
        return int(self.samples_per_epoch)

    @property
    def num_episodes(self) -> int:
        """Episodes of every source together."""
        return int(self.meta.total_episodes)
