"""One entry point for every benchmark: ``python -m benchmarks {stream,storage,mp4,tools,mix,scale,validate,all} [--small] ...``.

Arguments after the subcommand go to that benchmark (``all`` passes ``--small`` on to each). Every
benchmark writes into ``benchmarks/results/``.
"""

from __future__ import annotations

import importlib
import sys

BENCHMARKS = {
    "stream": "benchmarks.stream_bench",
    "mp4": "benchmarks.mp4_bench",
    "tools": "benchmarks.tools_bench",
    "storage": "benchmarks.storage_bench",
    "mix": "benchmarks.mix_bench",
    "scale": "benchmarks.scale_bench",
    "validate": "benchmarks.validate_bench",
}
TAKES_SMALL = {"stream", "storage", "mix", "scale", "validate"}
USAGE = ("usage: python -m benchmarks {stream,storage,mp4,tools,mix,scale,validate,all} [--small] "
         "[options of that benchmark]")


def run(name: str, argv: list[str]) -> int:
    """Run one benchmark's ``main(argv)``; a benchmark whose module is absent is skipped (0)."""
    try:
        module = importlib.import_module(BENCHMARKS[name])
    except ModuleNotFoundError as exc:
        if exc.name != BENCHMARKS[name]:
            raise
        print(f"[benchmarks] {name}: {BENCHMARKS[name]} is not available, skipped", flush=True)
        return 0
    if name not in TAKES_SMALL:  # these are small already and have no --small switch
        argv = [a for a in argv if a != "--small"]
    return int(module.main(argv) or 0)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in (*BENCHMARKS, "all"):
        print(USAGE + "\n\n" + (__doc__ or ""))
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    name, rest = argv[0], argv[1:]
    if name != "all":
        return run(name, rest)
    small = ["--small"] if "--small" in rest else []
    return max(run(each, small) for each in BENCHMARKS)


if __name__ == "__main__":
    sys.exit(main())
