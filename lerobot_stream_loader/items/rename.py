"""Per-dataset key renaming: ``StreamingLeRobot(..., rename={"old": "new"})``.

Items carry the new names (a windowed key's ``<key>_is_pad`` follows it), and so do the features
and stats a mixture sees. ``delta_timestamps`` may name a key by either name.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .item import Item
from .windows import pad_key

RESERVED_KEYS = ("task", "dataset_index")


class KeyRenamer:
    """A validated ``{stored name: new name}`` mapping of one dataset's features."""

    def __init__(self, rename: Mapping[str, str] | None, features: Mapping[str, Any], *, where: str) -> None:
        mapping = {str(old): str(new) for old, new in (rename or {}).items() if old != new}
        unknown = sorted(set(mapping) - set(features))
        if unknown:
            raise ValueError(f"{where}: rename names keys {unknown} that are not features of this dataset; "
                             f"available keys: {sorted(features)}")
        targets = list(mapping.values())
        kept = set(features) - set(mapping)
        clashes = sorted({t for t in targets if targets.count(t) > 1 or t in kept})
        if clashes:
            raise ValueError(f"{where}: rename gives the names {clashes} to more than one key "
                             f"(renamed or kept): {dict(mapping)}")
        reserved = sorted(t for t in targets if t in RESERVED_KEYS or t.endswith(("_is_pad", "_is_missing")))
        if reserved:
            raise ValueError(f"{where}: rename cannot use the reserved names {reserved}")
        self.mapping = mapping
        self._items = {**mapping, **{pad_key(old): pad_key(new) for old, new in mapping.items()}}
        self._back = {new: old for old, new in mapping.items()}

    def __bool__(self) -> bool:
        return bool(self.mapping)

    def name(self, stored: str) -> str:
        """The new name of a stored key (itself when not renamed)."""
        return self.mapping.get(stored, stored)

    def stored(self, name: str) -> str:
        """The stored name of a key given by either name."""
        return self._back.get(name, name)

    def keys(self, mapping: Mapping[str, Any]) -> dict[str, Any]:
        """``mapping`` (features, stats, delta_timestamps...) with its keys renamed."""
        return {self.name(key): value for key, value in mapping.items()}

    def item(self, item: dict[str, Any]) -> dict[str, Any]:
        """An item with its keys renamed (in place when nothing is renamed)."""
        if not self.mapping:
            return item
        return Item((self._items.get(key, key), value) for key, value in item.items())


def stored_names(renamer: KeyRenamer, delta_timestamps: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """``delta_timestamps`` keyed by stored names; a key given by both of its names is an error."""
    if not delta_timestamps:
        return None
    out: dict[str, Any] = {}
    for key, value in delta_timestamps.items():
        stored = renamer.stored(key)
        if stored in out:
            raise ValueError(f"delta_timestamps names {stored!r} twice (as {stored!r} and {renamer.name(stored)!r})")
        out[stored] = value
    return out
