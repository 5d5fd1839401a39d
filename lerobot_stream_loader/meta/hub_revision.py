"""The Hub revision read when none is given: LeRobot's ``v3.0`` tag when the dataset has one.

LeRobot 0.6.1 reads a Hub dataset at the tag of its codebase version (``v3.0``) unless told another
revision. A dataset pushed by LeRobot carries that tag; its ``main`` branch may have moved on since.
``hf://datasets/<user>/<name>`` without a revision is therefore read at ``@v3.0`` when that tag holds
``meta/info.json``, else at ``main`` (where LeRobot would refuse the dataset for lacking the tag).
Offline (``HF_HUB_OFFLINE=1``) the tag is used when the metadata cache holds a copy read at it.
"""

from __future__ import annotations

import logging
import os

from ..storage.local_cache import dataset_cache_dir, offline
from ..storage.location import Location
from ..storage.paths import normalize_root
from .cache import MetaCache

LEROBOT_REVISION = "v3.0"
_INFO = "meta/info.json"
_log = logging.getLogger(__name__)


def is_unversioned_hub_root(root_url: str) -> bool:
    """Whether ``root_url`` is ``hf://datasets/<user>/<name>[/...]`` with no ``@revision``."""
    if not root_url.startswith("hf://datasets/"):
        return False
    parts = root_url[len("hf://datasets/"):].split("/")
    return len(parts) >= 2 and "@" not in parts[1]


def default_hub_location(location: Location, *, cache_dir: str | os.PathLike[str] | None) -> Location:
    """``location`` at LeRobot's ``v3.0`` tag when it is an unversioned Hub root and the tag exists."""
    root_url = location.root
    if not is_unversioned_hub_root(root_url):
        return location
    tagged = location.at(normalize_root(root_url, LEROBOT_REVISION))
    if offline():
        return tagged if MetaCache(dataset_cache_dir(tagged.root, cache_dir)).latest() else location
    try:
        with tagged.open_reader() as reader:
            reader.size(_INFO)
    except FileNotFoundError:
        _log.info("%s has no %s tag holding %s: reading its main branch", root_url, LEROBOT_REVISION, _INFO)
        return location
    return tagged
