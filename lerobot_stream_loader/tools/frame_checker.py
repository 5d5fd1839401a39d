"""One episode checked frame by frame, as streaming reads it: fetched by the loader's assembler, every
row matched to its frame, every frame of every camera decoded through the loader's cameras (whose
decoders check each frame's time); optionally each frame's drawn index against its row."""

from __future__ import annotations

import numpy as np
import torch

from ..errors import PROGRAMMING_ERRORS, DatasetFormatError, StreamLoaderError
from ..fetch.assembly import EpisodeAssembler
from ..items.cameras import Camera, camera_features
from ..items.decode import DecoderLRU
from ..items.episode import EpisodeItems
from ..items.video import DepthVideoCamera, VideoCamera
from ..meta.dataset_meta import DatasetMeta
from ..meta.depth import DEFAULT_DEPTH_UNIT

FRAMES_PER_CHUNK = 32  # rows decoded at once per camera: bounds a worker's decoded frames


class EpisodeChecker:
    """Fetches one episode as the loader does and decodes every row's frame of every camera."""

    def __init__(self, meta: DatasetMeta, assembler: EpisodeAssembler, *, tolerance_s: float,
                 check_pattern: bool = False) -> None:
        self.meta = meta
        self.assembler = assembler
        self.tolerance_s = tolerance_s
        self.check_pattern = check_pattern
        self.decoders = DecoderLRU(1)  # one camera's decoder at a time
        self.cameras: dict[str, Camera] = camera_features(
            meta, tolerance_s=tolerance_s, return_uint8=True, decoders=self.decoders,
            depth_output_unit=DEFAULT_DEPTH_UNIT)

    def check(self, episode_index: int) -> int:
        """Frames decoded (every camera); raises what streaming the episode would raise."""
        data = self.assembler(episode_index)
        items = EpisodeItems(data, self.meta)
        length = data.episode.length
        decoded = 0
        for key, camera in self.cameras.items():
            video = data.videos.get(key)
            what = f"episode {episode_index}, camera {key}" + (f" ({video.path})" if video is not None else "")
            if video is not None and video.row_frames is not None:  # every row first: no decoding for nothing
                video.row_frames.positions_of(None, self.tolerance_s, what)
            for lo in range(0, length, FRAMES_PER_CHUNK):
                rows = np.arange(lo, min(length, lo + FRAMES_PER_CHUNK))
                try:
                    pixels = camera.frames(items, rows)
                except (StreamLoaderError, *PROGRAMMING_ERRORS):
                    raise
                except Exception as exc:  # the decoder's own errors: name the camera, file and rows
                    raise DatasetFormatError(f"{what}, rows {lo}..{rows[-1]}: the decoder failed: "
                                             f"{type(exc).__name__}: {exc}") from exc
                if self.check_pattern:
                    self._check_drawn_index(items, camera, pixels[0], lo, what)
                decoded += len(rows)
            self.decoders.clear()
        return decoded

    def _check_drawn_index(self, items: EpisodeItems, camera: Camera, frame: torch.Tensor, row: int,
                           what: str) -> None:
        """A sample-writer dataset's frame shows the index its row's ``observation.state`` encodes (read
        from a strip of a few rows across the index bands, which fill the frame's top half)."""
        from ..synthetic.checks import expected_state, read_depth_index, read_frame_index

        state = items.columns.get("observation.state")
        if not isinstance(state, torch.Tensor):
            return
        top = frame.shape[-2] // 4
        strip = frame[..., top:top + max(1, min(8, top)), :]
        if isinstance(camera, DepthVideoCamera):
            shown = read_depth_index(strip, camera.unit)
        elif isinstance(camera, VideoCamera):
            shown = read_frame_index(strip)
        else:
            return
        values = state[row].numpy()
        if not np.allclose(expected_state(shown, len(values)), values, atol=1e-6):
            raise DatasetFormatError(f"{what}, row {row}: the frame shows pattern index {shown}, which does not "
                                     "match the row's observation.state")
