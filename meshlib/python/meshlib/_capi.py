"""The C ABI of libmeshlib.so (meshlib/capi/meshlib.h), declared for ctypes.

Private: the rest of the package calls these. Every foreign call releases
the GIL while it runs (ctypes.CDLL does), so a blocking call or a stop
lets other Python threads go on.
"""
from __future__ import annotations

import ctypes
import os
from ctypes import (CFUNCTYPE, POINTER, Structure, c_char_p, c_int, c_int32, c_int64,
                    c_size_t, c_uint32, c_uint64, c_void_p)
from pathlib import Path
from typing import Optional

# The C ABI's major version this package speaks (MESHLIB_VERSION_MAJOR).
ABI_MAJOR = 0


class MetadataEntry(Structure):
    _fields_ = [("key", c_char_p), ("value", c_char_p)]


class CallOptions(Structure):
    _fields_ = [
        ("struct_size", c_uint32),
        ("timeout_ns", c_int64),
        ("idempotent", c_int32),
        ("has_hash_key", c_int32),
        ("hash_key", c_uint64),
        ("metadata", POINTER(MetadataEntry)),
        ("metadata_count", c_size_t),
        ("has_interrupt_fd", c_int32),
        ("interrupt_fd", c_int32),
    ]


class Completion(Structure):
    _fields_ = [("tag", c_uint64), ("reply", c_void_p), ("error", c_void_p)]


class ServerOptions(Structure):
    _fields_ = [
        ("struct_size", c_uint32),
        ("handler_threads", c_int32),
        ("io_threads", c_int32),
        ("etcd_endpoints", c_char_p),
        ("etcd_prefix", c_char_p),
        ("etcd_ttl_ns", c_int64),
        ("zone", c_char_p),
        ("weight", c_uint32),
        ("name", c_char_p),
    ]


HANDLER = CFUNCTYPE(None, c_void_p, c_void_p)

# name: (restype, argtypes)
_FUNCTIONS = {
    "meshlib_version": (c_uint32, []),
    "meshlib_version_string": (c_char_p, []),
    "meshlib_code_name": (c_char_p, [c_int32]),
    "meshlib_error_code": (c_int32, [c_void_p]),
    "meshlib_error_message": (c_char_p, [c_void_p]),
    "meshlib_error_free": (None, [c_void_p]),
    "meshlib_free": (None, [c_void_p]),
    "meshlib_mesh_new_json": (c_void_p, [c_char_p, c_size_t, POINTER(c_void_p)]),
    "meshlib_mesh_new_file": (c_void_p, [c_char_p, POINTER(c_void_p)]),
    "meshlib_mesh_close": (None, [c_void_p]),
    "meshlib_mesh_free": (None, [c_void_p]),
    "meshlib_mesh_client": (c_void_p, [c_void_p, c_char_p, POINTER(c_void_p)]),
    "meshlib_client_free": (None, [c_void_p]),
    "meshlib_client_describe": (c_void_p, [c_void_p, POINTER(c_void_p)]),
    "meshlib_client_stats_json": (c_void_p, [c_void_p, POINTER(c_void_p)]),
    "meshlib_reply_payload": (c_void_p, [c_void_p, POINTER(c_size_t)]),
    "meshlib_reply_endpoint": (c_char_p, [c_void_p]),
    "meshlib_reply_metadata_count": (c_size_t, [c_void_p]),
    "meshlib_reply_metadata": (MetadataEntry, [c_void_p, c_size_t]),
    "meshlib_reply_free": (None, [c_void_p]),
    "meshlib_queue_new": (c_void_p, [POINTER(c_void_p)]),
    "meshlib_queue_fd": (c_int, [c_void_p]),
    "meshlib_queue_poll": (c_size_t, [c_void_p, POINTER(Completion), c_size_t, c_int32]),
    "meshlib_queue_free": (None, [c_void_p]),
    "meshlib_client_call": (c_void_p, [c_void_p, c_char_p, c_char_p, c_size_t,
                                       POINTER(CallOptions), POINTER(c_void_p)]),
    "meshlib_client_call_queued": (c_void_p, [c_void_p, c_char_p, c_char_p, c_size_t,
                                              POINTER(CallOptions), c_void_p, c_uint64,
                                              POINTER(c_void_p)]),
    "meshlib_call_cancel": (None, [c_void_p]),
    "meshlib_call_free": (None, [c_void_p]),
    "meshlib_server_new": (c_void_p, [POINTER(ServerOptions), POINTER(c_void_p)]),
    "meshlib_server_handle": (c_void_p, [c_void_p, c_char_p, HANDLER, c_void_p]),
    "meshlib_server_start": (c_void_p, [c_void_p, c_char_p, POINTER(c_void_p)]),
    "meshlib_server_stop": (c_void_p, [c_void_p, c_int64]),
    "meshlib_server_free": (None, [c_void_p]),
    "meshlib_server_stats_json": (c_void_p, [c_void_p, POINTER(c_void_p)]),
    "meshlib_server_call_method": (c_char_p, [c_void_p]),
    "meshlib_server_call_request": (c_void_p, [c_void_p, POINTER(c_size_t)]),
    "meshlib_server_call_metadata_count": (c_size_t, [c_void_p]),
    "meshlib_server_call_metadata": (MetadataEntry, [c_void_p, c_size_t]),
    "meshlib_server_call_remaining_ns": (c_int64, [c_void_p]),
    "meshlib_server_call_cancelled": (c_int32, [c_void_p]),
    "meshlib_server_call_add_metadata": (c_void_p, [c_void_p, c_char_p, c_char_p]),
    "meshlib_server_call_finish": (c_void_p, [c_void_p, c_int32, c_char_p, c_char_p, c_size_t]),
}


def _candidates() -> list[Path]:
    """Where libmeshlib.so may be: $MESHLIB_LIBRARY, else the checkout's
    bazel-bin (this file is <checkout>/meshlib/python/meshlib/_capi.py)."""
    env = os.environ.get("MESHLIB_LIBRARY")
    if env:
        return [Path(env)]
    checkout = Path(__file__).resolve().parents[3]
    return [checkout / "bazel-bin" / "meshlib" / "capi" / "libmeshlib.so"]


def _load() -> ctypes.CDLL:
    tried = []
    for path in _candidates():
        if not path.exists():
            tried.append(f"{path} (missing)")
            continue
        try:
            lib = ctypes.CDLL(str(path))
        except OSError as e:
            tried.append(f"{path} ({e})")
            continue
        for name, (restype, argtypes) in _FUNCTIONS.items():
            fn = getattr(lib, name)
            fn.restype = restype
            fn.argtypes = argtypes
        major = lib.meshlib_version() >> 16
        if major != ABI_MAJOR:
            raise ImportError(f"meshlib: {path} speaks C ABI {major}.x, "
                              f"this package {ABI_MAJOR}.x")
        return lib
    raise ImportError("meshlib: libmeshlib.so not found; build it with "
                      "`bazel build //meshlib/capi:libmeshlib.so` or set MESHLIB_LIBRARY. "
                      "Tried: " + "; ".join(tried))


lib = _load()


def take_string(p: Optional[int]) -> str:
    """A char* the library handed out, as str; frees it."""
    if not p:
        return ""
    try:
        return ctypes.string_at(p).decode("utf-8", "replace")
    finally:
        lib.meshlib_free(p)
