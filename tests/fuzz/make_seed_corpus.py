#!/usr/bin/env python3
"""Writes the seed corpus for tests/fuzz/frame_decoder_fuzzer.cc.

Each file is a byte stream as a peer would send it: valid frames of every type,
a few concatenated, and a few broken ones that stop the decoder at each of its
checks. The bytes are laid out by hand, following meshlib/transport/frame.cc
(not by calling the C++ encoder), so the corpus also cross-checks the encoder's
layout:

  header (12 bytes, big-endian): version u8 | type u8 | flags u16 |
                                 stream_id u32 | body length u32
  REQUEST body:  bytes(method) | varint(timeout_us, 0 = none) | metadata | payload
  RESPONSE body: varint(code) | bytes(message) | metadata | payload
  GOAWAY body:   last_stream_id u32 | varint(code) | bytes(message)
  PING body:     8 opaque bytes; CANCEL: empty
  bytes(s) = varint(len(s)) s;  metadata = varint(n) (bytes(key) bytes(value))*n

Usage (from the repository root; the output is committed):
  python3 tests/fuzz/make_seed_corpus.py [out_dir]
"""

import os
import struct
import sys

VERSION = 1
REQUEST, RESPONSE, CANCEL, PING, GOAWAY = 1, 2, 3, 4, 5
FLAG_PING_ACK = 0x1
FLAG_REFUSED = 0x1


def varint(v):
    out = bytearray()
    while v >= 0x80:
        out.append((v & 0x7F) | 0x80)
        v >>= 7
    out.append(v)
    return bytes(out)


def lp(s):
    """Length-prefixed bytes."""
    if isinstance(s, str):
        s = s.encode()
    return varint(len(s)) + s


def metadata(entries):
    return varint(len(entries)) + b"".join(lp(k) + lp(v) for k, v in entries)


def header(ftype, flags, stream_id, length, version=VERSION):
    return struct.pack(">BBHII", version, ftype, flags, stream_id, length)


def frame(ftype, flags, stream_id, body, version=VERSION):
    return header(ftype, flags, stream_id, len(body), version) + body


def request(stream_id, method, timeout_us, md, payload):
    return frame(REQUEST, 0, stream_id, lp(method) + varint(timeout_us) + metadata(md) + payload)


def response(stream_id, flags, code, message, md, payload):
    return frame(RESPONSE, flags, stream_id, varint(code) + lp(message) + metadata(md) + payload)


def cancel(stream_id):
    return frame(CANCEL, 0, stream_id, b"")


def ping(ack, opaque):
    return frame(PING, FLAG_PING_ACK if ack else 0, 0, struct.pack(">Q", opaque))


def goaway(last_stream_id, code, message):
    return frame(GOAWAY, 0, 0, struct.pack(">I", last_stream_id) + varint(code) + lp(message))


def seeds():
    binary = b"\x00a\x00\xff\x01\x80\x00"
    valid = {
        "request_deadline_metadata_binary": request(
            1, "Echo/Say", 250_000, [("trace-id", "abc"), ("bin", b"\x00\x01")], binary),
        "request_no_deadline_empty": request(3, "Svc/M", 0, [], b""),
        "response_ok": response(1, 0, 0, "", [], b"hello"),
        "response_refused_unavailable": response(
            5, FLAG_REFUSED, 14, "overloaded", [("retry-after", "5")], b""),
        "cancel": cancel(7),
        "ping_and_ack": ping(False, 0x0102030405060708) + ping(True, 0x0102030405060708),
        "goaway": goaway(9, 14, "server is shutting down"),
        "stream_of_every_type": (
            request(1, "A/B", 1, [("k", "v")], b"x") + response(1, 0, 16, "no", [], b"")
            + cancel(3) + ping(False, 1) + goaway(3, 0, "")),
    }
    broken = {
        # Version 2: refused on the first byte.
        "bad_version": frame(REQUEST, 0, 1, b"", version=2),
        # 64 KiB length: over the fuzzer's small limit, under the default.
        "length_over_small_limit": header(PING, 0, 0, 0x10000) + b"\x00" * 16,
        "length_over_default_limit": header(REQUEST, 0, 1, 0xFFFFFFFF),
        "unknown_type": frame(0x7F, 0xABCD, 5, b"skip me"),
        # Body parser errors.
        "request_truncated_varint": frame(REQUEST, 0, 1, b"\x01m\x80"),
        "response_varint_overflow": frame(RESPONSE, 0, 1, b"\x80" * 10 + b"\x01"),
        "response_status_17": frame(RESPONSE, 0, 1, varint(17) + lp("") + metadata([])),
        "request_method_past_end": frame(REQUEST, 0, 1, b"\x05ab"),
        "request_metadata_key_past_end": frame(REQUEST, 0, 1, lp("m") + varint(0) + b"\x01\x09ab"),
        "request_deadline_out_of_range": frame(
            REQUEST, 0, 1, lp("m") + varint((1 << 52) + 1) + metadata([])),
        "goaway_short": frame(GOAWAY, 0, 0, b"\x00\x00\x01"),
        # A valid frame followed by half of another.
        "valid_then_partial": cancel(1) + request(3, "A/B", 0, [], b"payload")[:15],
    }
    return {**valid, **broken}


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    out_dir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, "corpus", "frame_decoder")
    os.makedirs(out_dir, exist_ok=True)
    for name, data in sorted(seeds().items()):
        with open(os.path.join(out_dir, name), "wb") as f:
            f.write(data)
    print(f"wrote {len(seeds())} files to {out_dir}")


if __name__ == "__main__":
    main()
