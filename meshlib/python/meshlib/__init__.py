"""meshlib for Python: call services through meshlib's in-process mesh
(balancing, retries, hedging, breakers, discovery), and serve them.

::

    import meshlib
    with meshlib.Mesh({"services": {"echo": {"discovery": {"static":
            {"endpoints": ["127.0.0.1:7001"]}}}}}) as mesh:
        echo = mesh.client("echo")
        reply = echo.call("Echo/Say", b"hi", timeout=1.0)
        reply = await echo.call_async("Echo/Say", b"hi")   # in a coroutine

Runs on libmeshlib.so (meshlib/capi/meshlib.h), found through the
MESHLIB_LIBRARY environment variable, else in the checkout's bazel-bin.
Every failure raises meshlib.Error with ``code`` and ``message``.
"""
from ._capi import lib as _lib
from ._errors import CODES, Error
from ._mesh import Client, Mesh
from ._server import Server

__all__ = ["Mesh", "Client", "Server", "Error", "CODES", "version", "library_version"]

__version__ = "0.1.0"


def library_version() -> str:
    """The version of the libmeshlib.so loaded ("0.1.0")."""
    return _lib.meshlib_version_string().decode()


def version() -> str:
    """This package's version."""
    return __version__
