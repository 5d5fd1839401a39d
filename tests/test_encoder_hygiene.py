"""Encoders leave no trace: thread scheduling as it was (SVT-AV1 run as root makes its caller
real-time), no error printed when an aborted encoder is torn down."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import numpy as np
import pytest

from lerobot_stream_loader.tools import CodecSettings
from lerobot_stream_loader.tools.encoder import FileEncoder

ABORT = """
import numpy as np, sys
from lerobot_stream_loader.tools import CodecSettings
from lerobot_stream_loader.tools.encoder import FileEncoder
encoder = FileEncoder(sys.argv[1], 64, 48, 30, CodecSettings(vcodec="libsvtav1"))
for k in range(3):
    encoder.add(np.full((48, 64, 3), 60 * k, np.uint8))
encoder.abort()
del encoder
"""


def test_an_aborted_svt_av1_encoder_prints_no_error(tmp_path):
    done = subprocess.run([sys.executable, "-c", ABORT, str(tmp_path / "x.mp4")], capture_output=True,
                          text=True, timeout=120, env={**os.environ, "SVT_LOG": "1"})
    assert done.returncode == 0, done.stderr
    assert "error" not in done.stderr.lower(), done.stderr


def _policies_of_every_thread() -> set[int]:
    found = set()
    for name in os.listdir("/proc/self/task"):
        try:
            found.add(os.sched_getscheduler(int(name)))
        except OSError:  # ended meanwhile
            pass
    return found


@pytest.mark.skipif(not hasattr(os, "sched_getscheduler"), reason="thread scheduling policies are Linux's")
@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() != 0,
                    reason="SVT-AV1 changes scheduling only in a process run as root")
def test_svt_av1_encoding_runs_no_thread_in_real_time_and_leaves_none_behind(tmp_path):
    seen: dict[str, object] = {}

    def encode() -> None:
        encoder = FileEncoder(str(tmp_path / "out.mp4"), 64, 48, 30, CodecSettings(vcodec="libsvtav1"))
        for k in range(4):
            encoder.add(np.full((48, 64, 3), 40 * k, np.uint8))
        seen["while encoding"] = _policies_of_every_thread()  # the encoder's own threads are alive
        encoder.end_episode()
        encoder.close()
        seen["caller"] = os.sched_getscheduler(0)
        child = threading.Thread(target=lambda: seen.setdefault("new thread", os.sched_getscheduler(0)))
        child.start()
        child.join()
        out = subprocess.run([sys.executable, "-c", "import os; print(os.sched_getscheduler(0))"],
                             capture_output=True, text=True, check=True, timeout=60)
        seen["new process"] = int(out.stdout)

    assert os.sched_getscheduler(0) == os.SCHED_OTHER
    thread = threading.Thread(target=encode)
    thread.start()
    thread.join(120)
    assert seen == {"while encoding": {os.SCHED_OTHER}, "caller": os.SCHED_OTHER, "new thread": os.SCHED_OTHER,
                    "new process": os.SCHED_OTHER}
