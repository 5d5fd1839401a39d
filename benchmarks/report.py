"""The "Machine and versions" section every results file ends with."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path

import psutil


def versions() -> list[str]:
    """Python, the libraries that matter for speed, nginx and FFmpeg."""
    import importlib.metadata as md

    out = [f"python {platform.python_version()}"]
    for name in ("torch", "torchcodec", "av", "numpy", "pyarrow", "fsspec", "aiohttp", "httpx"):
        try:
            out.append(f"{name} {md.version(name)}")
        except md.PackageNotFoundError:
            pass
    from lerobot_stream_loader.items.planar import fast_deinterleave

    if fast_deinterleave():
        import cv2

        out.append(f"OpenCV {cv2.__version__} (deinterleaves frames into batches: the fast extra)")
    else:
        out.append("no OpenCV: frames deinterleaved by torch's copy (pip install lerobot-stream-loader[fast])")
    for cmd in (["/usr/sbin/nginx", "-v"], ["ffmpeg", "-version"]):
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
            out.append((done.stdout or done.stderr).splitlines()[0].replace("nginx version: ", ""))
        except (OSError, IndexError, subprocess.SubprocessError):
            pass
    return out


RESULTS = Path(__file__).parent / "results"


def results_folder(small: bool) -> Path:
    """Where a benchmark writes by default: ``results/``, or ``results/small/`` (not committed) for a smoke run."""
    return RESULTS / "small" if small else RESULTS


def _cpu() -> str:
    return next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                 if line.startswith("model name")), platform.processor())


def machine_title(load: tuple) -> str:
    """The machine in a few words, for a plot title: cores, CPU, memory, load average at the start."""
    return (f"{os.cpu_count() or 1} cores {_cpu()}, {psutil.virtual_memory().total / 2**30:.0f} GiB RAM, "
            f"load average {load[0][0]:.1f}")


def machine(load: tuple) -> list[str]:
    """Platform, CPU, cores, memory, load average at start and end, and a noise warning when due."""
    cpu = _cpu()
    cores = os.cpu_count() or 1
    lines = [f"{platform.platform()}; {cpu}; {cores} cores; {psutil.virtual_memory().total / 2**30:.0f} GiB RAM",
             f"load average at start {load[0][0]:.2f}, at end {load[1][0]:.2f}"]
    if cores <= 4 or max(load[0][0], load[1][0]) > 0.5 * cores:
        lines.append(f"**Noisy numbers**: {cores} cores shared with other processes (load above) and, where a "
                     "benchmark runs servers (nginx, the shaping proxy), with those too.")
    return lines



def publish(path: Path, text: str) -> None:
    """Print a results file's text and write it to ``path``."""
    print(text)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def machine_section(load: tuple) -> list[str]:
    """Markdown lines: machine, load average at start and end (``(os.getloadavg(), os.getloadavg())``),
    library and tool versions."""
    return ["", "## Machine and versions", ""] + [f"- {line}" for line in machine(load) + versions()]
