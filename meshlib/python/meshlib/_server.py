"""Server: a Python service in the mesh."""
from __future__ import annotations

import atexit
import ctypes
import threading
import weakref
from ctypes import byref, c_size_t, c_void_p
from typing import Any, Callable, Dict, List, Optional, Union

from . import _capi
from ._capi import lib
from ._errors import Error, check

Reply = Union[bytes, bytearray, memoryview, str, None]
Handler = Callable[[bytes, Dict[str, str]], Reply]

_INTERNAL = 13


class Server:
    """Answers meshlib calls with Python handlers.

    ::

        server = meshlib.Server(port=0)
        server.handle("Echo/Say", lambda request, metadata: request)
        address = server.start()          # "127.0.0.1:PORT"
        ...
        server.stop(drain=1.0)

    A handler gets the request's bytes and its metadata (a dict) and
    returns the reply (bytes, or str sent as UTF-8; None for empty). It
    runs on one of the server's ``threads`` handler threads, holding the
    GIL as Python code does. Raising meshlib.Error answers the caller with
    its code; any other exception answers INTERNAL with the exception's
    text, and the server goes on serving.

    With ``etcd`` ("HOST:PORT[,HOST:PORT...]") and ``etcd_prefix``
    ("/meshlib/services/echo/"), the server registers in etcd as
    echo_server does, so that meshes with etcd discovery find it, and
    leaves before it drains.
    """

    def __init__(self, port: int = 0, host: str = "127.0.0.1", *, threads: int = 4,
                 etcd: Optional[str] = None, etcd_prefix: Optional[str] = None,
                 etcd_ttl: Optional[float] = None, zone: Optional[str] = None,
                 weight: Optional[int] = None, name: Optional[str] = None) -> None:
        o = _capi.ServerOptions()
        o.struct_size = ctypes.sizeof(o)
        o.handler_threads = threads
        o.etcd_endpoints = etcd.encode() if etcd else None
        o.etcd_prefix = etcd_prefix.encode() if etcd_prefix else None
        o.etcd_ttl_ns = int(etcd_ttl * 1e9) if etcd_ttl else 0
        o.zone = zone.encode() if zone else None
        o.weight = weight or 0
        o.name = name.encode() if name else None
        h = c_void_p()
        check(lib.meshlib_server_new(byref(o), byref(h)))
        self._handle: Optional[int] = h.value
        self._bind = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self._handlers: List[Handler] = []
        # One C callback for every method; user_data is the handler's index.
        self._callback = _capi.HANDLER(self._dispatch)
        self.address: Optional[str] = None
        _live_servers.add(self)

    def handle(self, method: str, handler: Handler) -> None:
        """Answers ``method`` ("Service/Method") with ``handler``. Before
        start; ALREADY_EXISTS for a method handled already."""
        if not callable(handler):
            raise TypeError("meshlib.Server.handle: handler must be callable")
        self._handlers.append(handler)
        check(lib.meshlib_server_handle(self._h(), method.encode(), self._callback,
                                        len(self._handlers) - 1))

    def start(self) -> str:
        """Listens and serves; returns the address bound ("127.0.0.1:PORT")."""
        out = c_void_p()
        check(lib.meshlib_server_start(self._h(), self._bind.encode(), byref(out)))
        self.address = _capi.take_string(out.value)
        return self.address

    def stop(self, drain: float = 0.0) -> None:
        """Leaves etcd, stops accepting, waits up to ``drain`` seconds for
        calls in flight, then closes. Idempotent. Not from a handler."""
        if self._handle:
            check(lib.meshlib_server_stop(self._handle, int(max(drain, 0.0) * 1e9)))

    def stats(self) -> Dict[str, Any]:
        """Counters: calls, active_calls, rejected_expired, shed."""
        import json
        out = c_void_p()
        check(lib.meshlib_server_stats_json(self._h(), byref(out)))
        return json.loads(_capi.take_string(out.value))

    def close(self) -> None:
        """Stops (no drain) and frees the server. Idempotent."""
        h, self._handle = self._handle, None
        if h:
            lib.meshlib_server_free(h)

    def _h(self) -> int:
        if not self._handle:
            raise Error("FAILED_PRECONDITION", "server closed")
        return self._handle

    def _dispatch(self, user_data: Optional[int], call: int) -> None:
        # On a handler thread, holding the GIL (ctypes takes it). Never
        # raises: ctypes would only print the exception.
        try:
            handler = self._handlers[user_data or 0]
            n = c_size_t()
            p = lib.meshlib_server_call_request(call, byref(n))
            request = ctypes.string_at(p, n.value) if p else b""
            metadata = {}
            for i in range(lib.meshlib_server_call_metadata_count(call)):
                e = lib.meshlib_server_call_metadata(call, i)
                metadata[e.key.decode("utf-8", "replace")] = e.value.decode("utf-8", "replace")
            reply = handler(request, metadata)
            if reply is None:
                data = b""
            elif isinstance(reply, bytes):
                data = reply
            elif isinstance(reply, str):
                data = reply.encode()
            elif isinstance(reply, (bytearray, memoryview)):
                data = bytes(reply)
            else:
                raise TypeError(f"handler returned {type(reply).__name__}, not bytes or str")
        except Error as e:
            lib.meshlib_error_free(
                lib.meshlib_server_call_finish(call, e.code_number, e.message.encode(), None, 0))
            return
        except BaseException as e:  # noqa: B902 - the caller must get an answer
            text = f"{type(e).__name__}: {e}".encode("utf-8", "replace")
            lib.meshlib_error_free(lib.meshlib_server_call_finish(call, _INTERNAL, text, None, 0))
            return
        lib.meshlib_error_free(lib.meshlib_server_call_finish(call, 0, None, data, len(data)))

    def __enter__(self) -> "Server":
        if self.address is None:
            self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        if getattr(self, "_handle", None):
            self.close()


# Servers still running when the interpreter exits are stopped first, so
# that no handler thread calls into an interpreter being torn down.
_live_servers: "weakref.WeakSet[Server]" = weakref.WeakSet()


@atexit.register
def _stop_servers() -> None:
    for server in list(_live_servers):
        server.close()
