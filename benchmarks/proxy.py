"""A latency and bandwidth shaping TCP proxy on 127.0.0.1 (the kernel here has no netem).

Each direction behaves like one link shared by every connection: bytes are serialised at
``--mbit`` megabits per second and delivered ``--rtt-ms / 2`` milliseconds after they left the
link. Loopback only: it listens on 127.0.0.1 and forwards only to a 127.0.0.1 port. It exits by
itself after ``--lifetime`` seconds.

    python -m benchmarks.proxy --target-port 8080 --rtt-ms 25 --mbit 400 --lifetime 900

prints ``listening <port>`` once ready. :class:`ShapingProxy` runs it as a subprocess.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import subprocess
import sys
import time

HOST = "127.0.0.1"
CHUNK = 64 << 10
QUEUE_CHUNKS = 64  # per direction of a connection: bounds memory, gives back-pressure to the sender


class Link:
    """One direction of the shaped path: a shared serialiser plus a fixed one-way delay."""

    def __init__(self, mbit: float, delay_s: float) -> None:
        self.bytes_per_s = mbit * 1e6 / 8 if mbit > 0 else 0.0
        self.delay_s = delay_s
        self._free_at = 0.0
        self.bytes = 0

    def schedule(self, size: int) -> float:
        """Loop time at which ``size`` bytes sent now arrive at the far end."""
        now = time.monotonic()
        start = max(now, self._free_at)
        done = start + (size / self.bytes_per_s if self.bytes_per_s else 0.0)
        self._free_at = done
        self.bytes += size
        return done + self.delay_s


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, link: Link) -> None:
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue(QUEUE_CHUNKS)

    async def deliver() -> None:
        try:
            while True:
                due, data = await queue.get()
                if not data:
                    break
                wait = due - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                writer.write(data)
                await writer.drain()
            if writer.can_write_eof():
                writer.write_eof()
        except (ConnectionError, OSError):  # the far end went away (a worker was stopped)
            pass

    sender = asyncio.create_task(deliver())
    try:
        while True:
            data = await reader.read(CHUNK)
            await queue.put((link.schedule(len(data)) if data else 0.0, data))
            if not data:
                break
        await sender
    except (ConnectionError, OSError):
        sender.cancel()
    finally:
        if not sender.done():
            sender.cancel()


async def _serve(listen_port: int, target_port: int, rtt_ms: float, mbit: float, lifetime: float) -> None:
    up, down = Link(mbit, rtt_ms / 2000), Link(mbit, rtt_ms / 2000)

    async def handle(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            server_r, server_w = await asyncio.open_connection(HOST, target_port)
        except OSError:
            client_w.close()
            return
        for w in (client_w, server_w):
            sock = w.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            await asyncio.gather(_pump(client_r, server_w, up), _pump(server_r, client_w, down))
        finally:
            for w in (client_w, server_w):
                w.close()

    server = await asyncio.start_server(handle, HOST, listen_port, limit=CHUNK * 4)
    port = server.sockets[0].getsockname()[1]
    print(f"listening {port}", flush=True)
    async with server:
        try:
            await asyncio.wait_for(server.serve_forever(), timeout=lifetime)
        except (asyncio.TimeoutError, asyncio.CancelledError):
            pass
    print(f"bytes up {up.bytes} down {down.bytes}", flush=True)


class ShapingProxy:
    """The proxy in a subprocess (its own interpreter, so it never competes for our GIL)."""

    def __init__(self, target_port: int, *, rtt_ms: float, mbit: float, lifetime: float = 1200.0) -> None:
        self.args = [sys.executable, "-m", "benchmarks.proxy", "--target-port", str(target_port),
                     "--rtt-ms", str(rtt_ms), "--mbit", str(mbit), "--lifetime", str(lifetime)]
        self.port = 0
        self._proc: subprocess.Popen[str] | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self) -> ShapingProxy:
        self._proc = subprocess.Popen(self.args, stdout=subprocess.PIPE, text=True)
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline().strip()
        if not line.startswith("listening "):
            self.stop()
            raise RuntimeError(f"the shaping proxy did not start: {line!r}")
        self.port = int(line.split()[1])
        return self

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)

    def __enter__(self) -> ShapingProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target-port", type=int, required=True, help="port on 127.0.0.1 to forward to")
    parser.add_argument("--listen-port", type=int, default=0, help="port to listen on (0: any free one)")
    parser.add_argument("--rtt-ms", type=float, default=25.0, help="round-trip time added (half per direction)")
    parser.add_argument("--mbit", type=float, default=400.0, help="rate cap per direction (0: none)")
    parser.add_argument("--lifetime", type=float, default=900.0, help="seconds before the proxy exits")
    args = parser.parse_args(argv)
    try:
        asyncio.run(_serve(args.listen_port, args.target_port, args.rtt_ms, args.mbit, args.lifetime))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
