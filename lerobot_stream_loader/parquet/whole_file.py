"""Read a whole parquet file held in memory, safely.

The bytes go through Arrow's own buffer reader and the plain file reader: no Python file object
and no dataset scanner. pyarrow's scanner over a Python file object (``read_table(io.BytesIO(...))``)
runs reads on its thread pool that call back into Python for the GIL, and can leave such work behind
after it returns; the plain reader over an Arrow buffer never calls back into Python.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq

from .footer_check import check_parquet_bytes


def read_parquet_bytes(data: bytes, columns: list[str] | None = None) -> pa.Table:
    """The table in ``data`` (a whole parquet file): every column, or those of ``columns`` it has.

    The footer is checked first (:func:`check_parquet_bytes`); damage raises ValueError or an Arrow
    error, which the caller reports with the file's name.
    """
    check_parquet_bytes(data)
    file = pq.ParquetFile(pa.BufferReader(data))
    if columns is not None:
        present = set(file.schema_arrow.names)
        columns = [c for c in columns if c in present]
    return file.read(columns=columns)
