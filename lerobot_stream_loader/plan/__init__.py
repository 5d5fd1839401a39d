"""Stage 2, the plan: who reads which samples in which order, from the metadata alone.

:mod:`.shard` cuts an epoch's episode sequence into (rank, worker) runs, :mod:`.decode_order` orders
a worker's decoding, :mod:`.state` and :mod:`.elastic` resume a plan (also on another reader count),
:mod:`.ranks` finds this process's rank and worker, :mod:`.sizing` picks defaults from the metadata.
Pure functions of (seed, epoch, rank, world size, worker, workers) and the metadata.
"""
