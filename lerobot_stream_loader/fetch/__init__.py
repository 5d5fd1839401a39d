"""Stage 3, fetching: each worker's planned episodes as bytes, ahead of use, under a byte budget.

:mod:`.assembly` reads one episode (its parquet rows and each camera's MP4 span) and matches its rows
to video frames (:mod:`.frame_match`); :mod:`.episode_cache` keeps episodes fetched ahead;
:mod:`.disk_cache` is the machine's disk tier; :mod:`.file_indexes` and :mod:`.sidecar` hold the
MP4 indexes and parquet footers a worker needs.
"""
