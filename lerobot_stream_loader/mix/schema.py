"""The keys, shapes and dtypes of a mixture's items, worked out from the sources' metadata.

Each source's item layout follows from its features (renamed), its ``delta_timestamps`` windows,
``return_uint8``, a decode-time ``image_size`` and its ``image_transforms`` (probed once on a blank
frame). ``features="intersection"`` keeps the keys every source has; ``"union"`` keeps all, and a
source without a key gets zeros (an empty string for text, all-true for a padding mask) plus
``<key>_is_missing``. A key whose shape or dtype differs between sources is refused at
construction; at run time an item that does not match its layout raises instead of being collated.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..items.item import Item
from ..items.windows import pad_key
from ..meta.depth import is_depth_feature

MODES = ("intersection", "union")
INDEX_KEY = "dataset_index"
_ROW_DTYPES = {"float": torch.float32, "int": torch.int64, "uint": torch.int64, "bool": torch.bool}
_CAMERA_DTYPES = ("video", "image")
_ABSENT = object()


def missing_key(key: str) -> str:
    """Name of the flag that says a union mixture filled ``key`` in."""
    return f"{key}_is_missing"


@dataclass(frozen=True)
class KeySpec:
    """One key of an item: a tensor of ``shape``/``dtype``, or text (a string, or a list of ``shape[0]``)."""

    shape: tuple[int, ...]
    dtype: torch.dtype | None  # None: text
    pad_of: str | None = None  # the windowed key this padding mask belongs to

    def describe(self) -> str:
        kind = "text" if self.dtype is None else str(self.dtype).replace("torch.", "")
        return f"{list(self.shape)} {kind}"

    def blank(self) -> Any:
        """What a source without this key gets in a union mixture."""
        if self.dtype is None:
            return [""] * self.shape[0] if self.shape else ""
        if self.pad_of is not None:
            return torch.ones(self.shape, dtype=torch.bool)
        return torch.zeros(self.shape, dtype=self.dtype)

    def matches(self, value: Any, *, uint8_frames: bool = False) -> bool:
        """Whether ``value`` has this layout (``uint8_frames``: float32 frames may still be uint8,
        left for the batch's collate to convert)."""
        if self.dtype is None:
            return isinstance(value, str) if not self.shape else isinstance(value, list) and len(value) == self.shape[0]
        dtypes = (self.dtype, torch.uint8) if uint8_frames else (self.dtype,)
        return isinstance(value, torch.Tensor) and tuple(value.shape) == self.shape and value.dtype in dtypes


def _camera_shape(feature: dict[str, Any], image_size: Sequence[int] | None) -> tuple[int, int, int]:
    shape = [int(x) for x in feature.get("shape", ())]
    names = list(feature.get("names") or [])
    if len(shape) != 3:
        raise ValueError(f"a camera feature has shape {shape}; expected 3 dimensions")
    if "channels" in names:
        dims = dict(zip(names, shape, strict=True))
        c, h, w = dims["channels"], dims.get("height", shape[0]), dims.get("width", shape[1])
    elif shape[-1] in (1, 3, 4):
        h, w, c = shape
    else:
        c, h, w = shape
    if image_size is not None:
        h, w = (int(x) for x in image_size)
    return c, h, w


def _row_spec(feature: dict[str, Any]) -> KeySpec:
    shape = tuple(int(x) for x in feature.get("shape", ()))
    shape = () if shape == (1,) else shape  # LeRobot keeps shape-[1] features as scalars
    name = str(feature.get("dtype", ""))
    if name in ("string", "str", "large_string"):
        return KeySpec((), None)
    kind = next((torch_dtype for prefix, torch_dtype in _ROW_DTYPES.items() if name.startswith(prefix)), None)
    if kind is None:
        raise ValueError(f"features of dtype {name!r} cannot be mixed")
    return KeySpec(shape, kind)


def source_spec(source: Any) -> dict[str, KeySpec]:
    """Keys of the items ``source`` (a StreamingLeRobot) yields, under their new names."""
    meta, renamer = source.meta, source.rename
    offsets = source.windows.offsets if source.windows is not None else {}
    cameras = source._builder().cameras
    spec: dict[str, KeySpec] = {}
    for stored, feature in meta.features.items():
        name = renamer.name(stored)
        window = len(offsets[stored]) if stored in offsets else None
        camera = cameras.get(stored)
        if camera is not None:
            spec[name] = _camera_spec(source, camera, feature, window)
        elif feature.get("dtype") not in _CAMERA_DTYPES:
            row = _row_spec(feature)
            spec[name] = row if window is None else KeySpec((window, *row.shape), row.dtype)
        else:
            continue
        if window is not None:
            spec[pad_key(name)] = KeySpec((window,), torch.bool, pad_of=name)
    spec["task"] = KeySpec((), None)
    return spec


def _camera_spec(source: Any, camera: Any, feature: dict[str, Any], window: int | None) -> KeySpec:
    depth = is_depth_feature(feature)
    c, h, w = _camera_shape(feature, getattr(source, "image_size", None))
    if depth:
        c, dtype = 1, torch.float32
    elif feature.get("dtype") == "video" and source.return_uint8:
        dtype = torch.uint8
    else:
        dtype = torch.float32
    if window is None or (window == 1 and camera.squeeze_single):  # a single frame
        spec = KeySpec((c, h, w), dtype)
    else:
        spec = KeySpec((window, c, h, w), dtype)
    transform = source.image_transforms
    if transform is None or not camera.transformable:
        return spec
    try:  # run once on a blank frame: the shape a resizing transform gives
        out = transform(torch.zeros(spec.shape, dtype=spec.dtype))
    except Exception:  # a transform that needs real pixels: the run-time check still guards
        return spec
    return KeySpec(tuple(out.shape), out.dtype) if isinstance(out, torch.Tensor) else spec


class Schema:
    """The mixture's item layout; :meth:`adapt` turns a source's item into it."""

    def __init__(self, specs: Sequence[dict[str, KeySpec]], names: Sequence[str], mode: str) -> None:
        if mode not in MODES:
            raise ValueError(f"features must be one of {MODES}, got {mode!r}")
        every = set.intersection(*(set(s) for s in specs))
        ordered = list(dict.fromkeys(key for s in specs for key in s))
        kept = [key for key in ordered if key in every] if mode == "intersection" else ordered
        conflicts = []
        self.keys: dict[str, KeySpec] = {}
        for key in kept:
            having = [(i, s[key]) for i, s in enumerate(specs) if key in s]
            layouts = {(spec.shape, spec.dtype) for _, spec in having}
            if len(layouts) > 1:
                shown = ", ".join(f"source {i} ({names[i]}): {spec.describe()}" for i, spec in having)
                conflicts.append(f"{key!r}: {shown}")
            self.keys[key] = having[0][1]
        if conflicts:
            raise ValueError("sources disagree on the shape or dtype of " + "; ".join(conflicts)
                             + " (give the sources the same delta_timestamps lengths, image size or dtype, "
                               "or rename/drop the key)")
        self.flags = [key for key in kept if key not in every
                      and not (self.keys[key].pad_of is not None and self.keys[key].pad_of not in every)]
        self.has = [frozenset(s) for s in specs]
        self.names = list(names)
        self.dropped = sorted(set(ordered) - set(kept))
        self.collate_converts: set[str] = set()  # float32 frame keys a worker's collate converts from uint8

    def adapt(self, item: dict[str, Any], number: int) -> dict[str, Any]:
        """Source ``number``'s (renamed) item with the mixture's keys, checked, plus ``dataset_index``."""
        has = self.has[number]
        out: dict[str, Any] = Item()
        for key, spec in self.keys.items():
            if key in has:
                value = item.get(key, _ABSENT)
                if value is _ABSENT:
                    raise ValueError(f"source {number} ({self.names[number]}): its items lack {key!r}, a feature "
                                     "of its metadata (a column missing from its data files?)")
                if not spec.matches(value, uint8_frames=key in self.collate_converts):
                    got = f"{list(value.shape)} {str(value.dtype).replace('torch.', '')}" \
                        if isinstance(value, torch.Tensor) else type(value).__name__
                    raise ValueError(f"source {number} ({self.names[number]}): item key {key!r} is {got}, the "
                                     f"mixture expects {spec.describe()} (from the metadata and options)")
                out[key] = value
            else:
                out[key] = spec.blank()
        for key in self.flags:
            out[missing_key(key)] = torch.tensor(key not in has)
        out[INDEX_KEY] = torch.tensor(number, dtype=torch.int64)
        return out
