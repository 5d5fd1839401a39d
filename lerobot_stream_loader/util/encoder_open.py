"""Open a video encoder without changing how this process's threads are scheduled.

SVT-AV1 (libsvtav1), when the process runs as root (as in most containers), switches the thread
that opens an encoder, and every thread the encoder starts, to real-time ``SCHED_FIFO`` priority
99. Whatever that thread starts later inherits it: DataLoader workers, a tool's process pool, any
busy loop then runs ahead of everything else on its core and, at equal real-time priority, never
yields to the others, so a process can stall behind its own helpers. :func:`open_encoder` opens a
stream's codec and puts the calling thread, and the threads the encoder started, back on the
calling thread's previous policy (the encoder's output does not depend on it).
"""

from __future__ import annotations

import os

import av


def open_encoder(stream: av.VideoStream) -> None:
    """Open ``stream``'s encoder (its options, size and pixel format set) with scheduling kept."""
    if not hasattr(os, "sched_getscheduler"):  # not Linux: nothing to keep
        stream.codec_context.open()
        return
    policy, param = os.sched_getscheduler(0), os.sched_getparam(0)
    before = _thread_ids()
    try:
        stream.codec_context.open()
    finally:
        os.sched_setscheduler(0, policy, param)
        for tid in _thread_ids() - before:
            try:
                if os.sched_getscheduler(tid) != policy:
                    os.sched_setscheduler(tid, policy, param)
            except OSError:  # a thread that has already ended
                pass


def _thread_ids() -> set[int]:
    try:
        return {int(name) for name in os.listdir("/proc/self/task")}
    except OSError:
        return set()
