"""meshlib.Error: every failure the package reports."""
from __future__ import annotations

from typing import Optional

from ._capi import lib

# Canonical status codes by number (as absl::StatusCode and gRPC).
CODES = ("OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
         "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
         "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS",
         "UNAUTHENTICATED")
_NUMBERS = {name: i for i, name in enumerate(CODES)}


class Error(Exception):
    """A failed call or operation.

    ``code`` is the canonical status name (``"UNAVAILABLE"``,
    ``"DEADLINE_EXCEEDED"``, ...), ``message`` says what was wrong. A
    server handler may raise one to answer its caller with that code.
    """

    def __init__(self, code: str, message: str = "") -> None:
        if code not in _NUMBERS or code == "OK":
            raise ValueError(f"meshlib.Error: {code!r} is not an error code; one of "
                             f"{', '.join(CODES[1:])}")
        super().__init__(f"{code}: {message}" if message else code)
        self.code = code
        self.message = message

    @property
    def code_number(self) -> int:
        """The code's number (14 for UNAVAILABLE)."""
        return _NUMBERS[self.code]

    def __reduce__(self):  # picklable, for multiprocessing
        return (Error, (self.code, self.message))


def from_c(err: Optional[int]) -> Error:
    """The Error for a meshlib_error_t*, which it frees."""
    try:
        number = lib.meshlib_error_code(err)
        message = lib.meshlib_error_message(err).decode("utf-8", "replace")
    finally:
        lib.meshlib_error_free(err)
    code = CODES[number] if 0 < number < len(CODES) else "UNKNOWN"
    return Error(code, message)


def check(err: Optional[int]) -> None:
    """Raises the Error a C function returned, if any."""
    if err:
        raise from_c(err)
