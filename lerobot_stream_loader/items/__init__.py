"""Feature kinds beside the row columns, each decoded by one small module behind one interface.

- :mod:`.cameras`: the interface (:class:`~.cameras.Camera`) and one camera object per feature;
- :mod:`.video`: RGB video cameras (torchcodec) and depth video cameras (12-bit codes through
  PyAV, :mod:`.depth_video`, dequantized by :mod:`.depth`);
- :mod:`.image`: cameras stored as encoded images in the data parquet (RGB and raw depth).

Submodules are imported on use (the sample writer needs :mod:`.depth` without the decoders).
"""
