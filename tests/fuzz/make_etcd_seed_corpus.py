#!/usr/bin/env python3
"""Writes the seed corpora for the etcd-facing fuzzers:

  tests/fuzz/corpus/http_response_parser/  (http_response_parser_fuzzer.cc)
  tests/fuzz/corpus/etcd_watch_stream/     (etcd_watch_stream_fuzzer.cc)

Each file is one mode byte (bit 0: small limits; higher bits: how the input
is cut into reads) followed by bytes as etcd 3.4's JSON gateway sends them:
responses with Content-Length, chunked streams with trailers, watch
messages, error bodies, and broken variants that stop the parsers at their
checks. Written by hand from captured gateway output, not by the C++ code.

Usage (from the repository root; the output is committed):
  python3 tests/fuzz/make_etcd_seed_corpus.py [corpus_dir]
"""

import os
import sys


def chunk(data):
    return b"%x\r\n%s\r\n" % (len(data), data)


HEADER = (b'{"header":{"cluster_id":"15118495548433857066","member_id":'
          b'"13668033151171901709","revision":"2","raft_term":"2"}')
RANGE = HEADER + (b',"kvs":[{"key":"Zm9v","create_revision":"2","mod_revision":"2",'
                  b'"version":"1","value":"YmFy","lease":"7587862072907767821"}],"count":"1"}')
CREATED = b'{"result":' + HEADER + b',"created":true}}\n'
PUT_EVENT = (b'{"result":{"header":{"revision":"3"},"events":[{"kv":{"key":"Zm9v",'
             b'"create_revision":"2","mod_revision":"3","version":"2","value":"YmF6"}}]}}\n')
DELETE_EVENT = (b'{"result":{"header":{"revision":"4"},"events":[{"type":"DELETE",'
                b'"kv":{"key":"Zm9v","mod_revision":"4"}}]}}\n')
COMPACTED = b'{"result":{"header":{"raft_term":"2"},"canceled":true,"compact_revision":"4"}}\n'
STREAM_ERROR = (b'{"error":{"grpc_code":14,"http_code":503,"message":"etcdserver: no leader",'
                b'"http_status":"Service Unavailable"}}\n')
UNARY_ERROR = (b'{"error":"etcdserver: requested lease not found","message":'
               b'"etcdserver: requested lease not found","code":5}')


def response(status, headers, body):
    head = b"HTTP/1.1 " + status + b"\r\n" + b"".join(h + b"\r\n" for h in headers) + b"\r\n"
    return head + body


HTTP = {
    "range_ok": response(b"200 OK", [b"Content-Type: application/json",
                                     b"Content-Length: %d" % len(RANGE)], RANGE),
    "watch_stream": response(b"200 OK", [b"Content-Type: application/json",
                                         b"Transfer-Encoding: chunked"],
                             chunk(CREATED) + chunk(PUT_EVENT) + chunk(DELETE_EVENT)
                             + b"0\r\n\r\n"),
    "revoke_404_trailer": response(b"404 Not Found", [b"Content-Type: application/json",
                                                      b"Trailer: Grpc-Trailer-Content-Type",
                                                      b"Transfer-Encoding: chunked"],
                                   chunk(UNARY_ERROR)
                                   + b"0\r\nGrpc-Trailer-Content-Type: application/grpc\r\n\r\n"),
    "continue_then_ok": b"HTTP/1.1 100 Continue\r\n\r\n"
                        + response(b"200 OK", [b"Content-Length: 2"], b"{}"),
    "http10_until_close": b"HTTP/1.0 200 OK\r\n\r\n" + RANGE,
    "no_content": response(b"204 No Content", [b"Content-Length: 7"], b""),
    "chunk_extensions": response(b"200 OK", [b"Transfer-Encoding: chunked"],
                                 b"3;a=b;c\r\nabc\r\n00000\r\n\r\n"),
    "conflicting_lengths": response(b"200 OK", [b"Content-Length: 3", b"Content-Length: 4"],
                                    b"abcd"),
    "length_and_chunked": response(b"200 OK", [b"Content-Length: 3",
                                               b"Transfer-Encoding: chunked"], b"3\r\nabc\r\n"),
    "bad_chunk_size": response(b"200 OK", [b"Transfer-Encoding: chunked"], b"zz\r\nabc\r\n"),
    "huge_chunk": response(b"200 OK", [b"Transfer-Encoding: chunked"], b"fffffffffffffff\r\n"),
    "bare_lf": b"HTTP/1.1 200 OK\nContent-Length: 0\n\n",
    "folded_header": b"HTTP/1.1 200 OK\r\nX: a\r\n b\r\nContent-Length: 0\r\n\r\n",
    "truncated_body": response(b"200 OK", [b"Content-Length: 100"], RANGE[:40]),
    "garbage": b"\x16\x03\x01\x02\x00 not http at all",
    "bad_status": b"HTTP/1.1 2x0 OK\r\n\r\n",
    "data_after_end": response(b"200 OK", [b"Content-Length: 2"], b"{}extra"),
}

WATCH = {
    "created_events": CREATED + PUT_EVENT + DELETE_EVENT,
    "compacted": CREATED + COMPACTED,
    "stream_error": CREATED + STREAM_ERROR,
    "range_body": RANGE,
    "unary_error": UNARY_ERROR,
    "escapes": b'{"result":{"cancel_reason":"a \\"}{\\" b","canceled":true}}{"x":[{}]}',
    "truncated": CREATED + PUT_EVENT[:50],
    "garbage_between": CREATED + b"]" + PUT_EVENT,
    "bad_types": (b'{"result":{"events":[{"type":"EXPLODE","kv":{"key":"!!"}}],'
                  b'"created":"yes","compact_revision":"1e9"}}'),
    "deep": b"{" + b"[" * 70 + b"]" * 70 + b"}",
}


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "corpus")
    for name, cases in (("http_response_parser", HTTP), ("etcd_watch_stream", WATCH)):
        out = os.path.join(root, name)
        os.makedirs(out, exist_ok=True)
        for case, data in cases.items():
            # Mode 0: default limits, one read, then cut in pieces; mode 5:
            # small limits and another cut.
            for mode in (0, 5):
                with open(os.path.join(out, "%s_m%d" % (case, mode)), "wb") as f:
                    f.write(bytes([mode]) + data)


if __name__ == "__main__":
    main()
