"""scale.md and scale.png: the scale benchmark's numbers, the targets first."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .report import machine, machine_title, versions


def _judge(rows: list[dict], big: int, targets: dict[str, float], small: bool) -> list[str]:
    if small:
        return ["Smoke run (`--small`): sizes below the targets' 100k episodes, no target is judged."]
    at = [r for r in rows if r["episodes"] == big]
    nginx = [r for r in at if r["where"] == "nginx"]
    equal = [r for r in rows if r.get("pool")]  # the same open pool at every size
    largest = max(r["episodes"] for r in equal)
    worst = {k: max(r[k] for r in at) for k in ("constructor_s", "constructor_mb", "first_batch_s")}
    other = max(r["other_requests_per_worker"] for r in nginx)
    small_rows = [r for r in equal if r["episodes"] == min(r["episodes"] for r in equal)]
    growth = max(r["worker_uss_mb"] for r in equal if r["episodes"] == largest) - \
        max(r["worker_uss_mb"] for r in small_rows)
    lines = []
    for ok, text in [
        (worst["constructor_s"] <= targets["constructor_s"], f"constructor <= 3 s: worst {worst['constructor_s']:.2f} s"),
        (worst["constructor_mb"] <= targets["constructor_mb"],
         f"constructor growth <= 200 MB: worst {worst['constructor_mb']:.0f} MB"),
        (worst["first_batch_s"] <= targets["first_batch_s"], f"first batch <= 5 s: worst {worst['first_batch_s']:.2f} s"),
        (other <= targets["other_requests_per_worker"],
         f"<= 20 requests per worker before the first batch beyond the files it reads: worst {other:.1f}"),
        (growth <= 50, f"per-worker memory independent of dataset size: with the same open pool "
                       f"({small_rows[0]['pool']} episodes) USS changes {growth:+.0f} MB from "
                       f"{min(r['episodes'] for r in small_rows)} to {largest} episodes"),
    ]:
        lines.append(f"- {'met' if ok else 'MISSED'}: {text}")
    return lines


def write_report(folder: Path, rows: list[dict[str, Any]], padding: dict[str, float], meta_rows: list[dict],
                 *, small: bool, targets: dict[str, float], import_s: float | None = None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    load_start = (os.getloadavg(),)
    big = max(r["episodes"] for r in rows if not r.get("pool"))  # the largest size with every row
    lines = [f"# Scale benchmark: rank 311 of 512, {2} DataLoader workers, DROID-like synthetic data", "",
             "Synthetic dataset: episodes of 50..150 frames (mean 100), 3 cameras, 100 episodes per data file and "
             "per MP4 (1,000 files per camera at 100k episodes), per-episode stats for every feature; MP4s are hard "
             "links of one 64x48 H.264 template. Served from local disk and by nginx on 127.0.0.1 (no latency "
             "shaping). Each row is a fresh process; `cache` is the metadata cache (nginx only) at construction.",
             "", "## Targets (100k episodes)", "", *_judge(rows, big, targets, small), "",
             f"Padding or dropping per epoch at 512 x 8 readers ({big} episodes): padded "
             f"{padding['padded']:.2e} of the epoch, dropped {padding['dropped']:.2e} (drop_last); "
             f"{int(padding['split_episodes'])} episodes split at a reader boundary.", "",
             *([f"A spawned worker starts a fresh interpreter: `import torch, lerobot_stream_loader.dataset` took "
                f"{import_s:.1f} s on this machine during the run, part of every spawn row's first batch.", ""]
               if import_s is not None else []),
             "A worker's memory follows the episodes it keeps open (its pool, `cache_bytes` bounds it), not the "
             "dataset's size: at rank 311 of 512 with 2 workers a worker's shard holds about 10 episodes at 10k and "
             "98 at 100k, so the default pool (64) fills only at 100k. The rows with `pool` set open the same "
             "number of episodes at every size; the memory target is judged on them.", "",
             "## Every run", "",
             "| episodes | sidecar | where | start | cache | pool | open episodes | constructor s | constructor MB | "
             "pickled KB | worker RSS MB | worker USS MB | first batch s | requests | file reads | other / worker |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        req = (f"{r['requests']} | {r['file_reads']} | {r['other_requests_per_worker']:.1f}" if "requests" in r
               else "- | - | -")
        lines.append(f"| {r['episodes']} | {'yes' if r['sidecar'] else 'no'} | {r['where']} | {r['context']} | "
                     f"{r['cache'] if r['where'] == 'nginx' else '-'} | {r.get('pool') or 'default'} | "
                     f"{r.get('open_episodes', '-')} | {r['constructor_s']:.2f} | "
                     f"{r['constructor_mb']:.0f} | {r['pickled_kb']:.0f} | {r['worker_rss_mb']:.0f} | "
                     f"{r['worker_uss_mb']:.0f} | {r['first_batch_s']:.2f} | {req} |")
    lines += ["", "## Metadata only", "", "| episodes | constructor cold s | cold MB | warm s | warm MB | "
              "one reader's plan at 512x8 s | len() | pickled KB |", "|---|---|---|---|---|---|---|---|"]
    for m in meta_rows:
        lines.append(f"| {m['episodes']} | {m['cold_s']:.2f} | {m['cold_mb']:.0f} | {m['warm_s']:.2f} | "
                     f"{m['warm_mb']:.0f} | {m['plan_s']:.2f} | {m['len']} | {m['pickled_kb']:.0f} |")
    load = (load_start[0], os.getloadavg())
    lines += ["", "## Machine and versions", "", *(f"- {x}" for x in machine(load)), f"- {', '.join(versions())}", ""]
    (folder / "scale.md").write_text("\n".join(lines))
    _plot(folder / "scale.png", rows, load)


def _plot(path: Path, rows: list[dict], load: tuple) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = sorted({r["episodes"] for r in rows if not r.get("pool")})
    fig, axes = plt.subplots(1, 3, figsize=(16, 5))
    for ax, key, label in [(axes[0], "constructor_s", "constructor (s)"),
                           (axes[1], "worker_uss_mb", "per-worker memory, USS (MB)"),
                           (axes[2], "first_batch_s", "time to first batch (s)")]:
        for where in ("local", "nginx"):
            for context in ("fork", "spawn"):
                for sidecar in (True, False):
                    values = [next(r[key] for r in rows if r["episodes"] == n and r["where"] == where
                                   and r["sidecar"] == sidecar and r["context"] == context and not r.get("pool"))
                              for n in sizes]
                    ax.plot(sizes, values, marker="o" if sidecar else "x", linestyle="-" if sidecar else "--",
                            label=f"{where}, {context}, {'with' if sidecar else 'no'} sidecar")
        for sidecar in (True, False):
            equal = [r for r in rows if r.get("pool") and r["sidecar"] == sidecar]
            if equal:
                ax.plot([r["episodes"] for r in equal], [r[key] for r in equal], marker="s", linestyle=":",
                        color="black", alpha=0.7 if sidecar else 0.4,
                        label=f"local, fork, pool_size={equal[0]['pool']}, {'with' if sidecar else 'no'} sidecar")
        ax.set_xlabel("episodes in the dataset")
        ax.set_ylabel(label)
        ax.set_xscale("log")
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"Scale benchmark: DROID-like synthetic data, rank 311 of 512, 2 DataLoader workers\n"
                 f"{machine_title(load)}",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


_MODE_TEXT = {"process": '`resolve="process"` (each process, in memory: before the machine cache)',
              "machine": '`resolve="machine"` (default: the machine\'s `cache_dir`)',
              "job": '`resolve="job"` (one process for the job)'}


def write_resolve_report(folder: Path, saved: dict[str, Any]) -> None:
    """hub_budget.md: resolves per file on the stand-in, and per machine and job at DROID size."""
    free, d = saved["free_tier"], saved["droid_setting"]
    droid = {r["mode"]: r for r in saved["droid"]}
    job = droid["job"]
    measured = {m["mode"]: m for m in saved["measured"]}
    within = job["job_first_epoch"] <= free
    lines = ["# Requests to the Hub: resolves per machine and per job", "",
             "The Hub counts every request to its resolve endpoint against a per-token budget (free tier: "
             f"{free:,} per 5 minutes; every rank of a job shares the token); the range reads that follow go "
             "to the signed URL it answered and do not count. `python -m benchmarks scale --resolves-only` "
             "writes this file.", "",
             "## Target", "",
             f"- {'met' if within else 'MISSED'}: a DROID-sized job with `resolve=\"job\"` stays within the free "
             f"tier: {job['job_first_epoch']:,.0f} resolves in its first epoch (start-up included) against "
             f"{free:,} per 5 minutes, then {job['job_later_epoch']:,.0f} per epoch and {job['files']:,} per URL "
             "lifetime (rank 0 renews each URL once, before it expires).",
             f"- {'met' if measured['machine']['per_file'] <= 1.25 else 'MISSED'}: on the stand-in, one epoch of "
             "2 ranks x 2 workers with a shared `cache_dir` makes at most 1.25 resolves per data or video file "
             f"read: {measured['machine']['per_file']:.2f} (each process on its own, as before: "
             f"{measured['process']['per_file']:.2f}).", "",
             "## Measured: one epoch of 2 ranks x 2 workers on one machine (Hub stand-in)", "",
             "8 episodes, 2 cameras, 2 episodes per file: 4 data files and 8 MP4s, read by 2 ranks (DataLoader "
             "with 2 forked workers each, read together), shuffled, `hf://datasets/bench/sample` without a "
             "revision (so each rank also asks for LeRobot's `v3.0` tag), with an index sidecar. Every request to "
             "the stand-in's `/resolve/` counted (404s included).", "",
             "| mode | resolves per data or video file read | data/video resolves | all resolves | rank 0 start-up "
             "(metadata + files) | rank 1 start-up | workers: other files |", "|---|---|---|---|---|---|---|"]
    for m in saved["measured"]:
        lines.append(f"| {_MODE_TEXT[m['mode']]} | **{m['per_file']:.2f}** | {m['file_resolves']} for {m['files']} "
                     f"files | {m['all_resolves']} | {m['rank0_meta']} + {m['rank0_files']} | "
                     f"{m['rank1_meta']} + {m['rank1_files']} | {m['workers_meta']} |")
    lines += ["", f"## Computed: one epoch at DROID size ({d['episodes']:,} episodes, {job['files']:,} files, "
              f"{d['ranks']} ranks x {d['workers']} workers, {d['ranks_per_machine'] * d['workers']} readers per "
              "machine)", "",
              f"Which files each of the {job['readers']:,} readers opens comes from the plan itself (shuffled, "
              "epoch 0; the synthetic layout of `benchmarks/scale_data.py`: 100 episodes per data file and per "
              f"MP4, 3 cameras); a reader opens {job['files_per_reader']:.1f} files on average, the 64 readers of a "
              f"machine {job['files_per_machine']:.1f} distinct ones (the plan keeps a file's episodes together). "
              "Start-up (metadata, LeRobot's tag, the MP4 sizes that size the pool) and the workers' other reads "
              "(the index sidecar) are as measured above per rank and per worker. Each reader's share of an epoch "
              "(about 24 episodes) fits in its open pool (64 episodes), so it opens nearly all its files in the "
              "epoch's first minutes: an epoch's count is about what a 5-minute window sees. (A reader drawing "
              "its episodes from all over the dataset would open many more files; the plan's file-grouped order "
              "is why each process on its own costs tens of thousands of resolves here, not hundreds of "
              "thousands.)", "",
              "| mode | per machine, first epoch (mean / max) | per job, first epoch | per job, each later epoch | "
              f"within {free:,} / 5 min |", "|---|---|---|---|---|"]
    for mode in ("process", "machine", "job"):
        r = droid[mode]
        ok = "yes" if r["job_first_epoch"] <= free and r["job_later_epoch"] <= free else "no"
        lines.append(f"| {_MODE_TEXT[mode]} | {r['machine_mean']:,.0f} / {r['machine_max']:,.0f} | "
                     f"{r['job_first_epoch']:,.0f} | {r['job_later_epoch']:,.0f} | {ok} |")
    lines += ["", "Later epochs: a reader (or machine) opens other files in each epoch's order, so its count "
              "repeats until the URLs it holds cover every file; with `resolve=\"job\"` the job's only resolves "
              f"after start-up are rank 0's renewals, {job['files']:,} per URL lifetime (a URL lasting at least "
              "5 minutes gives at most that many in any window).", "",
              "## Machine and versions", "", *(f"- {x}" for x in machine((os.getloadavg(), os.getloadavg()))),
              f"- {', '.join(versions())}", ""]
    (folder / "hub_budget.md").write_text("\n".join(lines))
