"""Session fixture ``make_sample(**options) -> Path``: sample datasets written once per option set."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from lerobot_stream_loader.synthetic import write_sample_dataset


def _freeze(value: object) -> object:
    return tuple(value) if isinstance(value, list | tuple) else value


@pytest.fixture(scope="session")
def make_sample(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """Return ``make(**options)``: the path of a dataset written by ``write_sample_dataset(**options)``.

    Datasets are cached for the whole session: equal options give the same (read-only) folder.
    """
    cache: dict[tuple, Path] = {}
    lock = threading.Lock()

    def make(**options: object) -> Path:
        key = tuple(sorted((name, _freeze(value)) for name, value in options.items()))
        with lock:
            if key not in cache:
                out = tmp_path_factory.mktemp("sample") / "dataset"
                cache[key] = write_sample_dataset(out, **options)
            return cache[key]

    return make
