"""Stage 1, metadata: ``meta/info.json``, the episodes table (numpy columns), tasks and stats.

Read once per dataset, without listing a directory: :func:`~.dataset_meta.load_meta` returns a
:class:`~.dataset_meta.DatasetMeta`; :mod:`.cache` keeps it on the machine's disk,
:mod:`.lerobot_view` shows it the way LeRobot's ``LeRobotDatasetMetadata`` does, and :mod:`.depth`
holds the facts of depth features (quantization, units).
"""
