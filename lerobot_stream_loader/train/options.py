"""The arguments ``lerobot-stream train`` adds to ``lerobot-train``'s: ``--stream.<name>`` and ``--mix.<name>``.

``--stream.<name>=VALUE`` is any keyword of :class:`~lerobot_stream_loader.StreamingLeRobot` that
LeRobot has no flag for (``cache_bytes``, ``backend``, ``cache_dir``, ...); ``--mix.<name>=VALUE``
is ``weights``, ``features`` or ``samples_per_epoch`` of
:class:`~lerobot_stream_loader.MixedStreamingLeRobot`. A VALUE is read as JSON when it is JSON
(numbers, ``true``, ``null``, lists, objects), else kept as text. Every name is checked against the
constructors' signatures here, before LeRobot parses its own arguments.
"""

from __future__ import annotations

import ast
import difflib
import inspect
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..dataset import StreamingLeRobot
from ..mix.dataset import MixedStreamingLeRobot

STREAM_PREFIX = "--stream."
MIX_PREFIX = "--mix."

# StreamingLeRobot keywords that lerobot-train's own settings fill in, and the flag that sets each.
SET_BY_LEROBOT = {
    "source": "--dataset.repo_id (or --dataset.root)",
    "episodes": "--dataset.episodes",
    "delta_timestamps": "the policy's delta indices",
    "image_transforms": "--dataset.image_transforms.*",
    "return_uint8": "lerobot-train (frames are always read as uint8, as LeRobot's trainer reads them)",
    "depth_output_unit": "--dataset.depth_output_unit",
    "tolerance_s": "--tolerance_s",
    "seed": "--seed",
    "rank": "accelerate (each process reads its own share)",
    "world_size": "accelerate (each process reads its own share)",
    "revision": "--dataset.revision",
    "num_workers": "--num_workers",
}
FEATURE_MODES = ("intersection", "union")


def _keywords(cls: type) -> list[str]:
    return [name for name, p in inspect.signature(cls).parameters.items()
            if p.kind is inspect.Parameter.KEYWORD_ONLY]


def stream_names() -> list[str]:
    """Names ``--stream.<name>`` accepts: StreamingLeRobot's keywords less those lerobot-train sets."""
    return [name for name in _keywords(StreamingLeRobot) if name not in SET_BY_LEROBOT]


def mixture_names() -> list[str]:
    """Names ``--mix.<name>`` accepts: MixedStreamingLeRobot's keywords a single dataset does not have."""
    single = set(_keywords(StreamingLeRobot))
    return [name for name in _keywords(MixedStreamingLeRobot) if name not in single]


def mixture_keywords() -> set[str]:
    """Every keyword of MixedStreamingLeRobot: in a mixture, these ``--stream.*`` go to the mixture."""
    return set(_keywords(MixedStreamingLeRobot))


@dataclass
class LoaderOptions:
    """``--stream.*`` and ``--mix.*`` as given (text), and their values read."""

    stream: dict[str, str] = field(default_factory=dict)
    mix: dict[str, str] = field(default_factory=dict)

    def merged_over(self, saved: LoaderOptions) -> LoaderOptions:
        """These options over ``saved`` ones (a resumed run: what the command line gives wins)."""
        return LoaderOptions({**saved.stream, **self.stream}, {**saved.mix, **self.mix})

    def stream_values(self) -> dict[str, Any]:
        """``--stream.*`` as keyword arguments, names checked."""
        allowed = stream_names()
        values = {}
        for name, text in self.stream.items():
            if name in SET_BY_LEROBOT:
                raise ValueError(f"--stream.{name}: set by {SET_BY_LEROBOT[name]}, not by --stream.*")
            _check_name("--stream.", name, allowed, "StreamingLeRobot")
            values[name] = read_value(text, _annotation(StreamingLeRobot, name))
        return values

    def mix_values(self, sources: int | None) -> dict[str, Any]:
        """``--mix.*`` as keyword arguments for ``sources`` datasets (None: a single dataset)."""
        if not self.mix:
            return {}
        if sources is None:
            raise ValueError(f"--mix.{next(iter(self.mix))} needs a list of datasets: "
                             "--dataset.repo_id='[first,second]'")
        values: dict[str, Any] = {}
        for name, text in self.mix.items():
            _check_name("--mix.", name, mixture_names(), "MixedStreamingLeRobot")
            values[name] = read_value(text, _annotation(MixedStreamingLeRobot, name))
        if "weights" in values:
            values["weights"] = read_weights(self.mix["weights"], sources)
        if "features" in values and values["features"] not in FEATURE_MODES:
            raise ValueError(f"--mix.features must be {' or '.join(FEATURE_MODES)}, got {self.mix['features']!r}")
        return values


def split_arguments(argv: Sequence[str]) -> tuple[list[str], LoaderOptions]:
    """``argv`` without ``--stream.*`` and ``--mix.*`` (LeRobot's arguments), and those options."""
    rest: list[str] = []
    options = LoaderOptions()
    args = list(argv)
    i = 0
    while i < len(args):
        arg = args[i]
        prefix = STREAM_PREFIX if arg.startswith(STREAM_PREFIX) else MIX_PREFIX if arg.startswith(MIX_PREFIX) else None
        if prefix is None:
            rest.append(arg)
            i += 1
            continue
        name, has_value, value = arg[len(prefix):].partition("=")
        if not has_value:
            if i + 1 >= len(args) or args[i + 1].startswith("--"):
                raise ValueError(f"{prefix}{name} needs a value: {prefix}{name}=VALUE")
            value = args[i + 1]
            i += 1
        if not name.isidentifier():
            raise ValueError(f"{arg!r}: expected {prefix}<name>=VALUE")
        (options.stream if prefix == STREAM_PREFIX else options.mix)[name] = value
        i += 1
    return rest, options


def read_value(text: str, annotation: str = "") -> Any:
    """``text`` as JSON when it is JSON, else as is; a whole float becomes an int for an ``int`` argument."""
    try:
        value = json.loads(text)
    except ValueError:
        return text
    kinds = {part.strip() for part in annotation.split("|")}
    if isinstance(value, float) and value.is_integer() and "int" in kinds and "float" not in kinds:
        return int(value)
    return value


def read_weights(text: str, sources: int) -> list[float]:
    """``--mix.weights``: ``[0.5,0.3,0.2]`` or ``0.5,0.3,0.2``, one number per dataset."""
    items = parse_list(text) if text.strip().startswith("[") else [t for t in text.split(",") if t.strip()]
    try:
        weights = [float(item) for item in items]
    except (TypeError, ValueError):
        raise ValueError(f"--mix.weights must be a list of numbers, got {text!r}") from None
    if len(weights) != sources:
        raise ValueError(f"--mix.weights has {len(weights)} weights for the {sources} datasets of "
                         f"--dataset.repo_id: give one weight per dataset")
    return weights


def parse_list(text: str) -> list[str]:
    """A list written on a command line, in JSON (``["a","b"]``), Python (``['a', 'b']``, what LeRobot's
    parser stores) or bare (``[a,b]``) form: its items as stripped text."""
    inner = text.strip()
    for read in (json.loads, ast.literal_eval):
        try:
            value = read(inner)
        except (ValueError, SyntaxError):
            continue
        if isinstance(value, list):
            return [str(item).strip() for item in value]
    body = inner[1:-1] if inner.startswith("[") and inner.endswith("]") else inner
    return [item.strip().strip("'\"").strip() for item in body.split(",")]


def source_list(repo_id: str) -> list[str] | None:
    """The datasets of ``--dataset.repo_id``: a list for ``[a,b,...]``, None for one dataset."""
    text = repo_id.strip()
    if not (text.startswith("[") and text.endswith("]")):
        return None
    sources = [item for item in parse_list(text) if item]
    if not sources:
        raise ValueError(f"--dataset.repo_id={repo_id!r} lists no dataset")
    return sources


def _check_name(prefix: str, name: str, allowed: Sequence[str], owner: str) -> None:
    if name in allowed:
        return
    close = difflib.get_close_matches(name, allowed, n=1)
    hint = f" (did you mean {prefix}{close[0]}?)" if close else ""
    raise ValueError(f"unknown option {prefix}{name}{hint}; {owner} takes "
                     + ", ".join(f"{prefix}{n}" for n in allowed))


def _annotation(cls: type, name: str) -> str:
    annotation = inspect.signature(cls).parameters[name].annotation
    return annotation if isinstance(annotation, str) else getattr(annotation, "__name__", "")


def keyword_split(values: Mapping[str, Any], keep: Callable[[str], bool]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``values`` cut in two: the names ``keep`` accepts, and the others."""
    kept = {k: v for k, v in values.items() if keep(k)}
    return kept, {k: v for k, v in values.items() if k not in kept}
