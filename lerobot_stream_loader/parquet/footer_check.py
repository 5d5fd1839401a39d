"""A check of parquet footers before pyarrow sees them, for damage that pyarrow cannot report.

Some inconsistencies in a footer make pyarrow's C++ throw where no caller catches it (building a
column chunk's metadata whose level histograms disagree with the schema), which aborts the whole
process. :func:`check_footer` walks the footer's Thrift compact encoding itself (bounded: every
length is checked against the bytes left, nesting is limited) and raises ValueError for those
cases and for any footer it cannot walk; the caller names the file.
"""

from __future__ import annotations

from typing import Any

_MAX_DEPTH = 64


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def byte(self) -> int:
        if self.pos >= len(self.data):
            raise ValueError("footer ends in the middle of a value")
        self.pos += 1
        return self.data[self.pos - 1]

    def varint(self) -> int:
        data, pos = self.data, self.pos
        if pos < len(data) and data[pos] < 0x80:  # most values fit one byte
            self.pos = pos + 1
            return data[pos]
        shift = value = 0
        while True:
            b = self.byte()
            value |= (b & 0x7F) << shift
            if not b & 0x80:
                return value
            shift += 7
            if shift > 70:
                raise ValueError("varint longer than 10 bytes")

    def zigzag(self) -> int:
        v = self.varint()
        return (v >> 1) ^ -(v & 1)

    def take(self, n: int) -> bytes:
        if n < 0 or n > len(self.data) - self.pos:
            raise ValueError(f"a length of {n} bytes runs past the footer")
        self.pos += n
        return self.data[self.pos - n:self.pos]

    def value(self, kind: int, depth: int) -> Any:
        if kind in (5, 6):  # i32, i64: the most common
            return self.zigzag()
        if kind == 8:
            return self.take(self.varint())
        if kind == 12:
            return self.struct(depth + 1)
        if kind in (1, 2):
            return kind == 1
        if kind in (3, 4):
            return self.byte() if kind == 3 else self.zigzag()
        if kind == 7:
            return self.take(8)
        if depth > _MAX_DEPTH:
            raise ValueError("nested too deeply")
        if kind in (9, 10):
            head = self.byte()
            size = head >> 4 if head >> 4 != 15 else self.varint()
            if size > len(self.data) - self.pos:
                raise ValueError(f"a list of {size} elements runs past the footer")
            elem = head & 0x0F
            if elem in (1, 2):
                return [self.byte() == 1 for _ in range(size)]
            if elem in (5, 6):
                return [self.zigzag() for _ in range(size)]
            return [self.value(elem, depth + 1) for _ in range(size)]
        if kind == 11:
            size = self.varint()
            if size > len(self.data) - self.pos:
                raise ValueError(f"a map of {size} entries runs past the footer")
            kinds = self.byte() if size else 0
            return [(self.value(kinds >> 4, depth + 1), self.value(kinds & 0x0F, depth + 1)) for _ in range(size)]
        raise ValueError(f"unknown Thrift type {kind}")

    def struct(self, depth: int = 0) -> dict[int, Any]:
        if depth > _MAX_DEPTH:
            raise ValueError("nested too deeply")
        fields: dict[int, Any] = {}
        last = 0
        data = self.data
        while True:
            if self.pos >= len(data):
                raise ValueError("footer ends in the middle of a value")
            head = data[self.pos]
            self.pos += 1
            if head == 0:
                return fields
            delta, kind = head >> 4, head & 0x0F
            last = last + delta if delta else self.zigzag()
            fields[last] = self.value(kind, depth)


def _leaf_levels(schema: list[dict[int, Any]]) -> list[tuple[int, int]]:
    """(max definition level, max repetition level) of every leaf column, in column order."""
    leaves: list[tuple[int, int]] = []
    position = 1

    def walk(children: int, defs: int, reps: int, depth: int) -> None:
        nonlocal position
        if depth > _MAX_DEPTH:
            raise ValueError("schema nested too deeply")
        for _ in range(children):
            if position >= len(schema):
                raise ValueError("schema has fewer elements than its parents claim")
            element = schema[position]
            position += 1
            repetition = element.get(3, 0)
            if repetition not in (0, 1, 2):
                raise ValueError(f"schema element {position - 1} has the unknown repetition type {repetition}")
            d, r = defs + (repetition != 0), reps + (repetition == 2)
            if element.get(5, 0) > 0:
                walk(element[5], d, r, depth + 1)
            else:
                leaves.append((d, r))

    if not schema:
        raise ValueError("empty schema")
    walk(int(schema[0].get(5, 0)), 0, 0, 0)
    return leaves


def check_footer(footer: bytes) -> None:
    """Raise ValueError when the Thrift FileMetaData ``footer`` cannot be walked, or when a column
    chunk's level histograms or the row groups' column counts disagree with the schema."""
    try:
        _check_structure(_Reader(footer).struct())
    except (TypeError, AttributeError, KeyError) as exc:  # a field of another Thrift type than expected
        raise ValueError(f"malformed footer ({type(exc).__name__}: {exc})") from None


def _check_structure(meta: dict[int, Any]) -> None:
    schema = meta.get(2)
    if not isinstance(schema, list) or not all(isinstance(e, dict) for e in schema):
        raise ValueError("no schema")
    levels = _leaf_levels(schema)
    for rg, group in enumerate(meta.get(4) or []):
        columns = group.get(1) if isinstance(group, dict) else None
        if not isinstance(columns, list) or len(columns) != len(levels):
            raise ValueError(f"row group {rg} has {len(columns or [])} columns, the schema {len(levels)}")
        for c, (chunk, (defs, reps)) in enumerate(zip(columns, levels, strict=True)):
            meta_data = chunk.get(3) if isinstance(chunk, dict) else None
            sizes = meta_data.get(16) if isinstance(meta_data, dict) else None
            if not isinstance(sizes, dict):
                continue
            for field, top, name in ((2, reps, "repetition"), (3, defs, "definition")):
                histogram = sizes.get(field)
                if histogram and len(histogram) != top + 1:
                    raise ValueError(f"row group {rg}, column {c}: {name} level histogram has {len(histogram)} "
                                     f"entries, the schema allows {top + 1}")


def check_parquet_bytes(data: bytes) -> None:
    """:func:`check_footer` on the footer of a whole parquet file held in memory."""
    if len(data) < 12 or data[-4:] != b"PAR1":
        raise ValueError("not a parquet file (no PAR1 magic at the end)")
    length = int.from_bytes(data[-8:-4], "little")
    if length + 12 > len(data):
        raise ValueError(f"footer length {length} exceeds the file size {len(data)}")
    check_footer(data[-8 - length:-8])
