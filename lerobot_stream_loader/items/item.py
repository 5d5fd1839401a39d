"""The type of the items a streaming dataset yields: a plain ``dict`` of LeRobot's keys and values.

:class:`Item` adds nothing to ``dict`` (keys, values, equality and pickling are a dict's); its type
lets ``torch.utils.data.default_collate`` -- what a plain ``DataLoader`` collates with -- hand a
batch of items to this library's collate (:mod:`lerobot_stream_loader.batch.collate` registers it),
which returns the same batch with fewer copies.
"""

from __future__ import annotations

from typing import Any


class Item(dict[str, Any]):
    """One sample: what ``LeRobotDataset[i]`` returns, as a ``dict`` subclass."""

    __slots__ = ()
