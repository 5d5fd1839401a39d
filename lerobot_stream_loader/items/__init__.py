"""Stage 4, items: an episode's rows and decoded frames become LeRobot-shaped items.

- :mod:`.builder`: :class:`~.builder.ItemBuilder`, one item from rows, frames, windows and task text;
- :mod:`.episode`: :class:`~.episode.EpisodeItems`, one fetched episode's rows as tensors;
- :mod:`.cameras`: the camera interface and one camera object per feature kind:
  :mod:`.video` (RGB video, torchcodec; depth video through :mod:`.depth_video`, 12-bit codes via PyAV)
  and :mod:`.image` (images stored in the data parquet);
- :mod:`.decode` (decoders and their LRU), :mod:`.windows` (``delta_timestamps``),
  :mod:`.rename` (key renaming), :mod:`.planar` (interleaved RGB to planar frames).
"""
