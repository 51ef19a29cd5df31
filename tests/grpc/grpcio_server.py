#!/usr/bin/python3
"""A real gRPC server (Debian's python3-grpcio, generic handlers, no protoc)
for meshlib's gRPC interop tests. Payloads are raw bytes.

Methods:
  /Echo/Say       returns the request; with --delay_ms it answers late and
                  with --fail_rate it fails that share of calls UNAVAILABLE.
  /Echo/Meta      returns b"" and echoes every request metadata entry back,
                  half as initial metadata (key "echo-<key>") and half as
                  trailing metadata, and the seconds left of the deadline
                  as trailing "deadline-left".
  /Echo/Fail      fails with the code and message in its request,
                  "<code> <message>" (e.g. b"5 no such thing").
  /Echo/Sleep     sleeps the number of milliseconds in its request, then
                  echoes it; records whether it saw cancellation.
  /Echo/Cancelled returns how many Sleep calls saw their RPC cancelled.

Prints "listening on PORT" once serving. Exits on SIGTERM.
"""

import argparse
import random
import signal
import sys
import threading
import time
from concurrent import futures

import grpc

_cancelled = 0
_lock = threading.Lock()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--delay_ms", type=int, default=0)
    p.add_argument("--fail_rate", type=float, default=0.0)
    p.add_argument("--workers", type=int, default=64)
    p.add_argument("--name", default="")
    p.add_argument("--max_message", type=int, default=8 << 20)
    args = p.parse_args()
    rng = random.Random()

    def say(request, context):
        if args.fail_rate > 0 and rng.random() < args.fail_rate:
            context.abort(grpc.StatusCode.UNAVAILABLE, "injected failure from " + args.name)
        if args.delay_ms:
            time.sleep(args.delay_ms / 1000.0)
        return request

    def meta(request, context):
        md = list(context.invocation_metadata())
        mine = [(k, v) for k, v in md if not k.startswith(":") and k not in (
            "user-agent", "te", "content-type", "grpc-accept-encoding", "grpc-timeout")]
        half = len(mine) // 2
        context.send_initial_metadata([("echo-" + k, v) for k, v in mine[:half]])
        left = context.time_remaining()
        trailing = [("echo-" + k, v) for k, v in mine[half:]]
        trailing.append(("deadline-left", "%.3f" % (left if left is not None else -1)))
        context.set_trailing_metadata(trailing)
        return b""

    def fail(request, context):
        code_s, _, message = request.decode("utf-8").partition(" ")
        code = next(c for c in grpc.StatusCode if c.value[0] == int(code_s))
        context.abort(code, message)

    def sleep(request, context):
        global _cancelled
        ms = int(request.decode() or "0")
        end = time.monotonic() + ms / 1000.0
        while time.monotonic() < end:
            if not context.is_active():
                with _lock:
                    _cancelled += 1
                return b""
            time.sleep(0.005)
        return request

    def cancelled(request, context):
        with _lock:
            return str(_cancelled).encode()

    def unary(fn):
        return grpc.unary_unary_rpc_method_handler(fn)

    handler = grpc.method_handlers_generic_handler("Echo", {
        "Say": unary(say),
        "Meta": unary(meta),
        "Fail": unary(fail),
        "Sleep": unary(sleep),
        "Cancelled": unary(cancelled),
    })
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=args.workers),
        options=[("grpc.max_receive_message_length", args.max_message),
                 ("grpc.max_send_message_length", args.max_message),
                 ("grpc.so_reuseport", 0)])
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:%d" % args.port)
    if port == 0:
        print("cannot bind port %d" % args.port, file=sys.stderr, flush=True)
        sys.exit(1)
    server.start()
    print("listening on %d" % port, flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    server.stop(0.5).wait()


if __name__ == "__main__":
    main()
