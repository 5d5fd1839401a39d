"""The streaming benchmark's report as a user opens it, drawn from made-up rows (no benchmark is run)."""

from __future__ import annotations

import argparse
import json

from benchmarks.report import RESULTS
from benchmarks.stream_bench import parse
from benchmarks.stream_report import main, write_report

RATES = {"limit": (200.0, 200.0), "ours-http": (130.0, 165.0), "ours-local": (126.0, 170.0),
         "ours-local-f32": (90.0, 120.0), "lerobot": (30.0, 35.0)}


def _row(track: str, workers: int) -> dict:
    rate = RATES[track][workers // 2]
    return {"track": track, "workers": workers, "variant": "av1", "rate": rate, "rates": [rate], "ttfb": 1.5,
            "wire_bytes": 0 if track == "ours-local" else 50_000_000, "needed_bytes": 49_900_000,
            "reader_bytes": 49_900_000, "fetched_bytes": 49_900_000, "http_requests": 56, "fetches": 41,
            "samples": 1024, "retries": 0, "has_reader": track.startswith("ours"), "peak_rss": 900 << 20,
            "peak_uss": 300 << 20, "cpu": 0.9, "server_cpu": 0.02, "wait_s": 0.5, "build_s": 5.0,
            "collate_s": 1.5, "distinct": 20.0, "uniform": 24.7}


def _context(small: bool) -> dict:
    args = argparse.Namespace(small=small, workers=[0, 2], rtt_ms=25.0, mbit=400.0, batch_size=32, samples=1024,
                              repeats=2, pool_size=None, seed=0)
    return {"args": args, "argv": ["--small"] if small else [], "elapsed": 60.0, "no_sidecar": {2: 1.8},
            "calibration": {"rtt_ms": 30.0, "mbit": 350.0}, "load": ((1.0, 1.0, 1.0), (1.0, 1.0, 1.0)),
            "datasets": {"full-av1": {"video_files": 12, "video_bytes": 265_000_000, "data_files": 4,
                                      "data_bytes": 1_000_000}}}


def test_smoke_runs_write_elsewhere_than_the_committed_results():
    from benchmarks.storage_bench import parse as parse_storage

    assert parse([]).output == parse_storage([]).output == RESULTS
    assert parse(["--small"]).output == parse_storage(["--small"]).output == RESULTS / "small"


def test_report_leads_with_the_ratios_a_user_compares(tmp_path):
    rows = [_row(t, w) for w in (0, 2) for t in RATES]
    md, png = write_report(rows, _context(small=False), tmp_path)
    text = md.read_text()
    sections = [line for line in text.splitlines() if line.startswith("## ")]
    assert sections[:3] == ["## Summary", "## Targets", "## Details"]
    summary = text.split("## Summary")[1].split("## Targets")[0]
    assert "| ours, HTTP, uint8 | 130 | 0.65 x | 20.0 (0.81 x) | 165 | 0.82 x | 20.0 (0.81 x) |" in summary
    assert "| uniform random sampler, expected |" in summary
    assert "full-av1: 60 episodes, 2 cameras 640x480 AV1" in text.splitlines()[2]
    assert "- [x] met: ours, HTTP, uint8 >= 0.75 x the limit: 0.82 x" in text
    assert "- [ ] MISSED: ours, local disk, float32 >= 0.50 x the limit" not in text
    assert "- [x] met: float32 from local disk >= 3 x LeRobot's LeRobotDataset (same workers): 3.4 x" in text
    assert png.stat().st_size > 10_000
    assert json.loads((tmp_path / "stream.json").read_text())["rows"][0]["track"] == "limit"
    md.unlink()
    assert main([str(tmp_path)]) == 0, "redrawn from stream.json alone"
    assert md.read_text() == text


def test_smoke_run_report_does_not_judge_targets(tmp_path):
    rows = [_row(t, w) for w in (0, 2) for t in RATES]
    rows[len(RATES)]["rate"] = 1000.0  # the 2-worker limit far above ours: a target miss on a full run
    text = write_report(rows, _context(small=True), tmp_path)[0].read_text()
    assert "targets are not judged" in text and "MISSED" not in text and "met:" not in text
