"""Python through meshlib against Python's grpcio, side by side in one run.

The same 64-byte echo, called from Python:
  meshlib: meshlib.Client.call / call_async -> C++ echo_server
  grpcio:  grpc unary_unary (generic, bytes in and out) -> C++ grpc_echo_server
in two shapes: one thread making blocking calls one after another, and
asyncio with `--inflight` calls in flight (grpc.aio for grpcio). Each
(stack, shape) runs `--runs` times, interleaved, for `--duration` seconds;
the table gives the median calls per second and meshlib's ratio.

Run through benchmarks/run_python.sh, which builds and starts the servers.
"""
from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time

import grpc
import meshlib

PAYLOAD = b"x" * 64
METHOD = "Echo/Say"


def bench_meshlib_blocking(client: meshlib.Client, duration: float) -> float:
    n = 0
    end = time.perf_counter() + duration
    start = time.perf_counter()
    while True:
        for _ in range(100):
            client.call(METHOD, PAYLOAD)
        n += 100
        now = time.perf_counter()
        if now >= end:
            return n / (now - start)


def bench_grpc_blocking(stub, duration: float) -> float:
    n = 0
    end = time.perf_counter() + duration
    start = time.perf_counter()
    while True:
        for _ in range(100):
            stub(PAYLOAD)
        n += 100
        now = time.perf_counter()
        if now >= end:
            return n / (now - start)


async def _closed_loop(call, inflight: int, duration: float) -> float:
    end = time.perf_counter() + duration
    count = [0]

    async def worker() -> None:
        while time.perf_counter() < end:
            await call()
            count[0] += 1

    start = time.perf_counter()
    await asyncio.gather(*[worker() for _ in range(inflight)])
    return count[0] / (time.perf_counter() - start)


def bench_meshlib_asyncio(client: meshlib.Client, inflight: int, duration: float) -> float:
    return asyncio.run(_closed_loop(lambda: client.call_async(METHOD, PAYLOAD), inflight,
                                    duration))


def bench_grpc_asyncio(address: str, inflight: int, duration: float) -> float:
    async def run() -> float:
        async with grpc.aio.insecure_channel(address) as channel:
            stub = channel.unary_unary("/" + METHOD)
            await stub(PAYLOAD)  # connected
            return await _closed_loop(lambda: stub(PAYLOAD), inflight, duration)

    return asyncio.run(run())


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--meshlib", required=True, help="echo_server address")
    p.add_argument("--grpc", required=True, help="grpc_echo_server address")
    p.add_argument("--duration", type=float, default=3.0)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--inflight", type=int, default=64)
    args = p.parse_args()

    mesh = meshlib.Mesh({"services": {"echo": {
        "discovery": {"static": {"endpoints": [args.meshlib]}}, "timeout": "5s"}}})
    client = mesh.client("echo")
    client.call(METHOD, PAYLOAD)  # connected
    channel = grpc.insecure_channel(args.grpc)
    stub = channel.unary_unary("/" + METHOD)
    stub(PAYLOAD)

    results = {k: [] for k in ("meshlib blocking", "grpcio blocking", "meshlib asyncio",
                               "grpcio asyncio")}
    for run in range(args.runs):
        results["meshlib blocking"].append(bench_meshlib_blocking(client, args.duration))
        results["grpcio blocking"].append(bench_grpc_blocking(stub, args.duration))
        results["meshlib asyncio"].append(
            bench_meshlib_asyncio(client, args.inflight, args.duration))
        results["grpcio asyncio"].append(bench_grpc_asyncio(args.grpc, args.inflight,
                                                            args.duration))
        print(f"run {run + 1}/{args.runs}: " + ", ".join(
            f"{k} {v[-1]:,.0f}/s" for k, v in results.items()), file=sys.stderr)

    med = {k: statistics.median(v) for k, v in results.items()}
    print(f"| shape | meshlib calls/s | grpcio calls/s | meshlib / grpcio |")
    print(f"|---|---:|---:|---:|")
    for shape, label in (("blocking", "one thread, blocking"),
                         ("asyncio", f"asyncio, {args.inflight} in flight")):
        m, g = med[f"meshlib {shape}"], med[f"grpcio {shape}"]
        print(f"| {label} | {m:,.0f} | {g:,.0f} | {m / g:.2f}x |")
    print(f"(medians of {args.runs} runs of {args.duration:g} s, 64-byte echo, "
          f"Python {sys.version.split()[0]}, grpcio {grpc.__version__})")
    client.close()
    mesh.close()
    channel.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
