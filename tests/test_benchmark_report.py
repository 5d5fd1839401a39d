"""The streaming benchmark's report as a user opens it, drawn from made-up rows (no benchmark is run)."""

from __future__ import annotations

import argparse
import json

from benchmarks.report import RESULTS
from benchmarks.stream_bench import parse
from benchmarks.stream_report import main, write_report

RATES = {"ours-http": (130.0, 165.0), "ours-local": (126.0, 170.0), "decode-only": (127.0, 176.0),
         "naive": (4.6, 6.2)}


def _row(track: str, workers: int) -> dict:
    rate = RATES[track][workers // 2]
    return {"track": track, "workers": workers, "variant": "av1", "rate": rate, "rates": [rate], "ttfb": 1.5,
            "wire_bytes": 0 if track == "ours-local" else 50_000_000, "needed_bytes": 49_900_000,
            "reader_bytes": 49_900_000, "fetched_bytes": 49_900_000, "http_requests": 56, "fetches": 41,
            "samples": 1024, "retries": 0, "has_reader": track.startswith("ours"), "peak_rss": 900 << 20,
            "peak_uss": 300 << 20, "cpu": 0.9, "server_cpu": 0.02, "wait_s": 0.5, "build_s": 5.0,
            "collate_s": 1.5, "distinct": 2.7}


def _context(small: bool) -> dict:
    args = argparse.Namespace(small=small, workers=[0, 2], rtt_ms=25.0, mbit=400.0, batch_size=32, samples=1024,
                              naive_samples=192, repeats=3, pool_size=8, seed=0)
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
    assert "| **ours over HTTP: samples/s** | 130 | 165 |" in summary
    assert "naive remote reading" in summary and f"| {130 / 4.6:.1f} x | {165 / 6.2:.1f} x |" in summary
    assert "full-av1: 60 episodes, 2 cameras 640x480 AV1" in text.splitlines()[2]
    assert "- [x] met: track 1 >= 10 x track 5" in text
    assert png.stat().st_size > 10_000
    assert json.loads((tmp_path / "stream.json").read_text())["rows"][0]["track"] == "ours-http"
    md.unlink()
    assert main([str(tmp_path)]) == 0, "redrawn from stream.json alone"
    assert md.read_text() == text


def test_smoke_run_report_does_not_judge_targets(tmp_path):
    rows = [_row(t, w) for w in (0, 2) for t in RATES]
    rows[3]["rate"] = 100.0  # naive close to ours: a target miss on a full run
    text = write_report(rows, _context(small=True), tmp_path)[0].read_text()
    assert "targets are not judged" in text and "MISSED" not in text and "met:" not in text
