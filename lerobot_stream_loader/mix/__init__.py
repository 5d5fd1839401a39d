"""Weighted mixtures of LeRobot datasets: :class:`MixedStreamingLeRobot` and the plan behind it."""

from __future__ import annotations

from .dataset import MixedStreamingLeRobot, MixtureMeta

__all__ = ["MixedStreamingLeRobot", "MixtureMeta"]
