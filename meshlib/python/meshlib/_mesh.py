"""Mesh and Client: calling services in the mesh from Python."""
from __future__ import annotations

import asyncio
import ctypes
import itertools
import json
import os
import signal
import threading
import weakref
from ctypes import byref, c_size_t, c_void_p
from typing import Any, Dict, Mapping, Optional, Union

from . import _capi
from ._capi import lib
from ._errors import Error, check, from_c

Config = Union[Mapping[str, Any], str, bytes, "os.PathLike[str]"]
Metadata = Mapping[str, str]

# How long a blocking call waits in C before Python gets a chance to see a
# pending signal (Ctrl-C): the call itself is not limited by it.
_WAIT_SLICE_MS = 100
# Completions taken from a queue per poll.
_BATCH = 256


def _payload(reply: int) -> bytes:
    """The reply's payload; frees the reply."""
    try:
        n = c_size_t()
        p = lib.meshlib_reply_payload(reply, byref(n))
        return ctypes.string_at(p, n.value) if p else b""
    finally:
        lib.meshlib_reply_free(reply)


class _Queue:
    """A meshlib_queue_t, freed with this object."""

    def __init__(self) -> None:
        h = c_void_p()
        check(lib.meshlib_queue_new(byref(h)))
        self.handle = h.value
        self.fd = lib.meshlib_queue_fd(self.handle)
        self.tags = itertools.count(1)

    def __del__(self) -> None:
        if getattr(self, "handle", None):
            lib.meshlib_queue_free(self.handle)
            self.handle = None


# Blocking calls complete into their thread's own queue.
_thread_state = threading.local()


def _thread_queue() -> _Queue:
    q = getattr(_thread_state, "queue", None)
    if q is None:
        q = _thread_state.queue = _Queue()
        _thread_state.completion = _capi.Completion()
    return q


class _LoopQueue:
    """The queue asynchronous calls of one asyncio loop complete into: the
    loop watches its descriptor, so completions are taken, and futures
    resolved, on the loop's own thread."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        # No reference to the loop: the loop owns this object (through its
        # reader), and both go when the loop is dropped.
        self.queue = _Queue()
        self.pending: Dict[int, tuple] = {}  # tag -> (future, call handle)
        self.batch = (_capi.Completion * _BATCH)()
        loop.add_reader(self.queue.fd, self._drain)

    def _drain(self) -> None:
        while True:
            n = lib.meshlib_queue_poll(self.queue.handle, self.batch, _BATCH, 0)
            for i in range(n):
                c = self.batch[i]
                entry = self.pending.pop(c.tag, None)
                if c.reply:
                    outcome: Any = _payload(c.reply)
                else:
                    outcome = from_c(c.error)
                if entry is None:
                    continue
                future, call = entry
                lib.meshlib_call_free(call)
                if future.done():  # cancelled by its awaiter
                    continue
                if isinstance(outcome, Error):
                    future.set_exception(outcome)
                else:
                    future.set_result(outcome)
            if n < _BATCH:
                return



_loop_queues: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopQueue]" = (
    weakref.WeakKeyDictionary())


def _loop_queue(loop: asyncio.AbstractEventLoop) -> _LoopQueue:
    lq = _loop_queues.get(loop)
    if lq is None:
        lq = _loop_queues[loop] = _LoopQueue(loop)
    return lq


_MAIN_THREAD = threading.main_thread().ident
_get_ident = threading.get_ident
_set_wakeup_fd = signal.set_wakeup_fd
_call = lib.meshlib_client_call
_reply_payload = lib.meshlib_reply_payload
_reply_free = lib.meshlib_reply_free
_string_at = ctypes.string_at
# Methods called so far, encoded.
_METHODS: Dict[str, bytes] = {}


def _method_bytes(method: str) -> bytes:
    m = method.encode()
    if len(_METHODS) < 10000:
        _METHODS[method] = m
    return m
_wakeup_read_fd: Optional[int] = None


def _interrupt_fd() -> int:
    """A descriptor that becomes readable when a signal with a Python
    handler arrives (main thread only): the read end of a pipe installed as
    Python's wake-up descriptor (signal.set_wakeup_fd) at the first call,
    if nobody had installed one; else -1."""
    global _wakeup_read_fd
    if _wakeup_read_fd is None:
        r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        previous = signal.set_wakeup_fd(w, warn_on_full_buffer=False)
        if previous != -1:
            # Someone's (an event loop's): theirs stays, and blocking calls
            # on the main thread wait for their outcome or deadline.
            signal.set_wakeup_fd(previous)
            os.close(r)
            os.close(w)
            _wakeup_read_fd = -1
        else:
            _wakeup_read_fd = r
    return _wakeup_read_fd


def _options(timeout: Optional[float], idempotent: bool, metadata: Optional[Metadata],
             hash_key: Optional[int]):
    """The C options for a call, or None when every one is the default."""
    if timeout is None and not idempotent and not metadata and hash_key is None:
        return None
    return byref(_options_struct(timeout, idempotent, metadata, hash_key))


def _options_struct(timeout: Optional[float], idempotent: bool, metadata: Optional[Metadata],
                    hash_key: Optional[int]) -> _capi.CallOptions:
    o = _capi.CallOptions()
    o.struct_size = ctypes.sizeof(o)
    if timeout is not None:
        if timeout <= 0:
            raise Error("INVALID_ARGUMENT", f"timeout: must be > 0 seconds (got {timeout})")
        o.timeout_ns = int(timeout * 1e9)
    o.idempotent = 1 if idempotent else 0
    if hash_key is not None:
        o.has_hash_key = 1
        o.hash_key = hash_key & 0xFFFFFFFFFFFFFFFF
    if metadata:
        entries = (_capi.MetadataEntry * len(metadata))()
        for i, (k, v) in enumerate(metadata.items()):
            entries[i].key = str(k).encode()
            entries[i].value = str(v).encode()
        o.metadata = entries
        o.metadata_count = len(metadata)
        o._keep = entries  # alive as long as the options
    return o


def _bytes(request: Union[bytes, bytearray, memoryview, str]) -> bytes:
    if isinstance(request, bytes):
        return request
    if isinstance(request, str):
        return request.encode()
    return bytes(request)


class Client:
    """Calls one service of a mesh: made by ``Mesh.client(service)``.

    Every call goes through the service's stack (balancing, retries,
    hedging, breakers) as configured. Thread-safe; usable from any thread
    and from any asyncio loop.
    """

    def __init__(self, mesh: "Mesh", service: str, handle: int) -> None:
        self._mesh = mesh  # the mesh outlives its clients' handles
        self.service = service
        self._handle: Optional[int] = handle

    def _h(self) -> int:
        if not self._handle:
            raise Error("FAILED_PRECONDITION", f"client of {self.service} is closed")
        return self._handle

    def call(self, method: str, request: Union[bytes, bytearray, memoryview, str] = b"", *,
             timeout: Optional[float] = None, idempotent: bool = False,
             metadata: Optional[Metadata] = None, hash_key: Optional[int] = None) -> bytes:
        """Calls ``method`` ("Service/Method") and returns the reply's bytes.

        Waits with the GIL released. On the main thread, Ctrl-C (or any
        signal with a Python handler) interrupts the wait: the call is
        cancelled and the handler's exception (KeyboardInterrupt) raised.
        ``timeout`` is in seconds (default: the service's ``timeout``);
        ``idempotent`` lets the stack retry and hedge it; ``hash_key`` is
        the key for hash-based balancing. Raises Error.
        """
        h = self._handle
        if not h:
            raise Error("FAILED_PRECONDITION", f"client of {self.service} is closed")
        data = request if type(request) is bytes else _bytes(request)
        m = _METHODS.get(method)
        if m is None:
            m = _method_bytes(method)
        reply = c_void_p()
        fd = -1
        if _get_ident() == _MAIN_THREAD:
            # Signals run their Python handlers on the main thread only.
            fd = _wakeup_read_fd if _wakeup_read_fd is not None else _interrupt_fd()
        if fd >= 0:
            o = _options_struct(timeout, idempotent, metadata, hash_key)
            o.has_interrupt_fd = 1
            o.interrupt_fd = fd
            # A signal's C handler writes to Python's wake-up descriptor at
            # once; the call watches it, ends CANCELLED, and the handler's
            # exception (KeyboardInterrupt) follows when Python runs again.
            err = _call(h, m, data, len(data), byref(o), byref(reply))
        elif timeout is None and not idempotent and not metadata and hash_key is None:
            err = _call(h, m, data, len(data), None, byref(reply))
        else:
            o = _options_struct(timeout, idempotent, metadata, hash_key)
            err = _call(h, m, data, len(data), byref(o), byref(reply))
        if err:
            raise from_c(err)
        n = c_size_t()
        p = _reply_payload(reply, byref(n))
        out = _string_at(p, n.value) if p else b""
        _reply_free(reply)
        return out

    async def call_async(self, method: str,
                         request: Union[bytes, bytearray, memoryview, str] = b"", *,
                         timeout: Optional[float] = None, idempotent: bool = False,
                         metadata: Optional[Metadata] = None,
                         hash_key: Optional[int] = None) -> bytes:
        """As ``call``, on the running asyncio loop: no thread is blocked,
        and no Python code runs on meshlib's threads. Cancelling the
        awaiting task cancels the call."""
        loop = asyncio.get_running_loop()
        lq = _loop_queue(loop)
        data = _bytes(request)
        opts = _options(timeout, idempotent, metadata, hash_key)
        tag = next(lq.queue.tags)
        call = c_void_p()
        check(lib.meshlib_client_call_queued(self._h(), method.encode(), data, len(data), opts,
                                             lq.queue.handle, tag, byref(call)))
        future = loop.create_future()
        lq.pending[tag] = (future, call.value)
        try:
            return await future
        except asyncio.CancelledError:
            if tag in lq.pending:
                lib.meshlib_call_cancel(call.value)  # completes CANCELLED: freed in _drain
            raise

    def describe(self) -> str:
        """The service's stack, layer by layer, as text."""
        out = c_void_p()
        check(lib.meshlib_client_describe(self._h(), byref(out)))
        return _capi.take_string(out.value)

    def stats(self) -> Dict[str, Any]:
        """Counters (calls, retries, hedges, ejections, ...) and endpoints."""
        out = c_void_p()
        check(lib.meshlib_client_stats_json(self._h(), byref(out)))
        return json.loads(_capi.take_string(out.value))

    def close(self) -> None:
        """Frees the client; its calls in flight still finish. Idempotent."""
        h, self._handle = self._handle, None
        if h:
            lib.meshlib_client_free(h)

    def __del__(self) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<meshlib.Client {self.service}>"


class Mesh:
    """A mesh: services, their discovery and their policies.

    ``config`` is a dict, JSON text, or the path of a mesh.json (watched:
    changes apply while it runs). An invalid configuration raises Error
    INVALID_ARGUMENT naming the field. Close it (or use ``with``) to end
    its calls in flight (CANCELLED) and free its connections.
    """

    def __init__(self, config: Config) -> None:
        h = c_void_p()
        if isinstance(config, Mapping):
            text = json.dumps(config).encode()
            check(lib.meshlib_mesh_new_json(text, len(text), byref(h)))
        elif isinstance(config, bytes) or (isinstance(config, str)
                                           and config.lstrip().startswith("{")):
            text = config if isinstance(config, bytes) else config.encode()
            check(lib.meshlib_mesh_new_json(text, len(text), byref(h)))
        elif isinstance(config, (str, os.PathLike)):
            check(lib.meshlib_mesh_new_file(os.fsencode(config), byref(h)))
        else:
            raise TypeError(f"meshlib.Mesh: config must be a dict, JSON text or a path, "
                            f"not {type(config).__name__}")
        self._handle: Optional[int] = h.value
        self._lock = threading.Lock()

    def client(self, service: str) -> Client:
        """A client of ``service``; NOT_FOUND if the configuration has none."""
        with self._lock:
            if not self._handle:
                raise Error("FAILED_PRECONDITION", f"mesh closed: no client for {service}")
            h = c_void_p()
            check(lib.meshlib_mesh_client(self._handle, service.encode(), byref(h)))
        return Client(self, service, h.value)

    def close(self) -> None:
        """Ends every call in flight (CANCELLED) and closes the mesh's
        connections. Idempotent; clients made from it fail from then on."""
        with self._lock:
            h, self._handle = self._handle, None
        if h:
            lib.meshlib_mesh_free(h)

    @property
    def closed(self) -> bool:
        return not self._handle

    def __enter__(self) -> "Mesh":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        if getattr(self, "_lock", None) is not None:
            self.close()
