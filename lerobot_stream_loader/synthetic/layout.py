"""Options of the sample writer and the plan they imply: episode lengths, tasks, file assignment."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .images import IMAGE_KINDS
from .pattern import MAX_INDEX, MIN_HEIGHT, MIN_WIDTH
from .video import ENCODERS

CHUNKS_SIZE = 1000
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
EPISODES_PATH = "meta/episodes/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
DEPTH_CAMERA_KEY = "observation.images.depth"

_TASK_TEMPLATES = (
    "Pick up the red cube and place it in the bin",
    "Push the blue block to the left edge",
    "Open the drawer and take out the sponge",
    "Stack the green cup on the yellow cup",
    "Wipe the table with the cloth",
)


def camera_key(camera: int) -> str:
    """Feature key of camera ``camera``."""
    return f"observation.images.cam{camera}"


def video_cameras(options: SampleOptions) -> int:
    """Cameras stored as video: the RGB ones, then the depth camera if there is one."""
    return options.cameras + (1 if options.depth_camera else 0)


def video_key(options: SampleOptions, camera: int) -> str:
    """Feature key of video camera ``camera`` (``options.cameras`` is the depth camera)."""
    return DEPTH_CAMERA_KEY if options.depth_camera and camera == options.cameras else camera_key(camera)


def task_text(task: int) -> str:
    """The natural-language string of task ``task``."""
    base = _TASK_TEMPLATES[task % len(_TASK_TEMPLATES)]
    return base if task < len(_TASK_TEMPLATES) else f"{base} (variant {task // len(_TASK_TEMPLATES)})"


def file_location(file_number: int) -> tuple[int, int]:
    """(chunk_index, file_index) of the ``file_number``-th file of a series."""
    return divmod(file_number, CHUNKS_SIZE)


@dataclass(frozen=True)
class SampleOptions:
    """Every knob of the sample dataset (see ``write_sample_dataset``)."""

    episodes: int = 6
    cameras: int = 2
    fps: int = 30
    size: tuple[int, int] = (96, 72)
    frames_per_episode: tuple[int, int] = (20, 40)
    codec: str = "av1"
    gop: int = 2
    bframes: bool = False
    episodes_per_video_file: int = 3
    stagger_cameras: bool = False
    episodes_per_data_file: int = 4
    faststart: bool = True
    tasks: int = 2
    seed: int = 0
    state_dim: int = 6
    action_dim: int = 6
    depth_camera: bool = False
    image_features: tuple[str, ...] = ()
    single_row_group: bool = False
    to_timestamp_short: bool = False
    extra_columns: bool = False

    def validate(self) -> None:
        """Raise ValueError naming the first option that is out of range."""
        width, height = self.size
        low, high = self.frames_per_episode
        checks = [
            (self.episodes >= 1, f"episodes must be >= 1, got {self.episodes}"),
            (self.cameras >= 0, f"cameras must be >= 0, got {self.cameras}"),
            (self.fps >= 1, f"fps must be >= 1, got {self.fps}"),
            (width >= MIN_WIDTH and height >= MIN_HEIGHT,
             f"size must be at least {MIN_WIDTH}x{MIN_HEIGHT}, got {width}x{height}"),
            (width % 2 == 0 and height % 2 == 0, f"size must be even for yuv420p, got {width}x{height}"),
            (1 <= low <= high, f"frames_per_episode must be 1 <= MIN <= MAX, got {low}:{high}"),
            (self.codec in ENCODERS, f"codec must be one of {sorted(ENCODERS)}, got {self.codec!r}"),
            (self.gop >= 1, f"gop must be >= 1, got {self.gop}"),
            (not (self.bframes and self.codec in ("av1", "vp9")), "bframes applies to h264, hevc and mpeg4 only"),
            (not (self.to_timestamp_short and low < 2), "to_timestamp_short needs episodes of 2 frames or more"),
            (self.episodes_per_video_file >= 1,
             f"episodes_per_video_file must be >= 1, got {self.episodes_per_video_file}"),
            (self.episodes_per_data_file >= 1,
             f"episodes_per_data_file must be >= 1, got {self.episodes_per_data_file}"),
            (self.tasks >= 1, f"tasks must be >= 1, got {self.tasks}"),
            (self.state_dim >= 1 and self.action_dim >= 1, "state_dim and action_dim must be >= 1"),
            (set(self.image_features) <= set(IMAGE_KINDS) and len(set(self.image_features)) == len(self.image_features),
             f"image_features must be distinct kinds among {IMAGE_KINDS}, got {self.image_features}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)


@dataclass(frozen=True)
class EpisodePlan:
    """Where one episode's rows and frames go."""

    index: int
    length: int
    from_index: int
    task_index: int
    data_file: int
    video_files: dict[int, int] = field(default_factory=dict)

    @property
    def to_index(self) -> int:
        """Global index one past the episode's last frame."""
        return self.from_index + self.length


def first_file_episodes(options: SampleOptions, camera: int) -> int:
    """How many episodes the first video file of ``camera`` holds (staggered cameras differ)."""
    per_file = options.episodes_per_video_file
    return per_file - camera % per_file if options.stagger_cameras else per_file


def video_file_number(options: SampleOptions, camera: int, episode: int) -> int:
    """Number (0, 1, ...) of the video file of ``camera`` that holds ``episode``."""
    first = first_file_episodes(options, camera)
    return 0 if episode < first else 1 + (episode - first) // options.episodes_per_video_file


def plan_episodes(options: SampleOptions) -> list[EpisodePlan]:
    """Lengths (seeded), global ranges, tasks and file numbers of every episode."""
    low, high = options.frames_per_episode
    lengths = np.random.default_rng(options.seed).integers(low, high + 1, size=options.episodes)
    if int(lengths.sum()) > MAX_INDEX + 1:
        total = int(lengths.sum())
        raise ValueError(f"{total} frames do not fit the 16-bit frame index (max {MAX_INDEX + 1})")
    plans, start = [], 0
    for episode, length in enumerate(lengths.tolist()):
        videos = {cam: video_file_number(options, cam, episode) for cam in range(video_cameras(options))}
        plans.append(
            EpisodePlan(
                index=episode,
                length=length,
                from_index=start,
                task_index=episode % options.tasks,
                data_file=episode // options.episodes_per_data_file,
                video_files=videos,
            )
        )
        start += length
    return plans
