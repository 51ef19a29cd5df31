#!/usr/bin/env python3
"""Writes the seed corpus for tests/fuzz/grpc_server_session_fuzzer.cc.

Each file is what a gRPC client sends after the HTTP/2 connection preface
(the fuzzer puts the preface in front): a SETTINGS frame, then request
streams. Frames are laid out by hand (RFC 9113 section 4.1), header blocks
use HPACK literals without indexing and without Huffman coding (RFC 7541
section 6.2.2), and bodies use gRPC's length-prefixed messages:

  frame:   length u24 | type u8 | flags u8 | stream id u32 (big-endian)
  literal: 0x00 | len(name) | name | len(value) | value  (lengths < 127)
  message: compressed u8 | length u32 | bytes

Usage (from the repository root; the output is committed):
  python3 tests/fuzz/make_grpc_seed_corpus.py [out_dir]
"""
import os
import struct
import sys

DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY, WINDOW_UPDATE = 0, 1, 3, 4, 6, 7, 8
END_STREAM, END_HEADERS = 0x1, 0x4


def frame(ftype, flags, stream, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + \
        struct.pack(">I", stream) + payload


def literal(name, value):
    name, value = name.encode(), value.encode() if isinstance(value, str) else value
    return b"\x00" + bytes([len(name)]) + name + bytes([len(value)]) + value


def request_headers(path, extra=(), content_type="application/grpc", method="POST"):
    block = literal(":method", method) + literal(":scheme", "http") + \
        literal(":path", path) + literal(":authority", "fuzz") + \
        literal("content-type", content_type) + literal("te", "trailers")
    for k, v in extra:
        block += literal(k, v)
    return block


def message(payload, compressed=0):
    return bytes([compressed]) + struct.pack(">I", len(payload)) + payload


def unary(stream, path, payload, extra=(), **kw):
    return frame(HEADERS, END_HEADERS, stream, request_headers(path, extra, **kw)) + \
        frame(DATA, END_STREAM, stream, message(payload))


SEEDS = {
    "echo": frame(SETTINGS, 0, 0) + unary(1, "/Echo/Say", b"hello"),
    "two_streams": frame(SETTINGS, 0, 0) + unary(1, "/Echo/Say", b"a") +
                   unary(3, "/Echo/Fail", b"b"),
    "metadata": frame(SETTINGS, 0, 0) +
                unary(1, "/Echo/Say", b"md", [("x-user", "alice"), ("blob-bin", "AAH/"),
                                              ("grpc-timeout", "250m")]),
    "bad_timeout": frame(SETTINGS, 0, 0) +
                   unary(1, "/Echo/Say", b"t", [("grpc-timeout", "99999999999S")]),
    "not_grpc": frame(SETTINGS, 0, 0) +
                unary(1, "/Echo/Say", b"x", content_type="text/plain"),
    "get": frame(SETTINGS, 0, 0) + unary(1, "/Echo/Say", b"x", method="GET"),
    "compressed": frame(SETTINGS, 0, 0) +
                  unary(1, "/Echo/Say", b"zz", [("grpc-encoding", "gzip")]) +
                  frame(DATA, END_STREAM, 3, message(b"zz", compressed=1)),
    "split_body": frame(SETTINGS, 0, 0) +
                  frame(HEADERS, END_HEADERS, 1, request_headers("/Echo/Say")) +
                  frame(DATA, 0, 1, message(b"0123456789")[:7]) +
                  frame(DATA, END_STREAM, 1, message(b"0123456789")[7:]),
    "reset": frame(SETTINGS, 0, 0) +
             frame(HEADERS, END_HEADERS, 1, request_headers("/Echo/Say")) +
             frame(RST_STREAM, 0, 1, struct.pack(">I", 8)),
    "ping_goaway": frame(SETTINGS, 0, 0) + frame(PING, 0, 0, b"12345678") +
                   frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", 1 << 20)) +
                   unary(1, "/Echo/Say", b"p") +
                   frame(GOAWAY, 0, 0, struct.pack(">II", 1, 0)),
}


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "tests/fuzz/corpus/grpc_server_session"
    os.makedirs(out, exist_ok=True)
    for name, data in SEEDS.items():
        with open(os.path.join(out, name), "wb") as f:
            f.write(data)


if __name__ == "__main__":
    main()
