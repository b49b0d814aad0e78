"""The two ways a plugin call ends without its result: a handler's `Rejected` (an outcome, shown
to whoever sent the command) and a `Failure` (the plugin could not do its job; the host reports
it, retries or pauses), and how a failure is described in the host's log.
"""

from __future__ import annotations

import traceback
from typing import NoReturn


class Rejected(Exception):
    """A handler's refusal of a command: the reason is shown to the caller (HTTP 422) and
    nothing is appended. Raise it from a decider, or call `reject`::

        if state.borrower is not None:
            raise Rejected(f"the book is lent to {state.borrower}")
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = str(reason)

    def __str__(self) -> str:
        return self.reason


def reject(reason: str) -> NoReturn:
    """Rejects the command with `reason`: raises `Rejected`."""
    raise Rejected(reason)


class Failure(Exception):
    """A plugin's failure to handle an event, a timer or a rejection, or to answer a query.

    Raise it (or any exception) from a projection or a policy: the host retries, then pauses the
    projection at the event (or parks the policy's event) with the message shown to operators.
    From a query, its message is the answer of a 400. The `evhost.testing` functions raise it
    with exactly the message the host would get, chained to the exception that caused it.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = str(message)

    def __str__(self) -> str:
        return self.message


def summary(error: BaseException) -> str:
    """`<Type>: <message>`, the way a failure is reported to the host."""
    message = str(error)
    return f"{type(error).__name__}: {message}" if message else type(error).__name__


def describe(error: BaseException) -> str:
    """The exception with its traceback, for the host's log.

    Frames are listed without their source lines: in a component there are no source files to
    read them from (reading one would trap), so the file, line and function name must do.
    """
    lines = ["Traceback (most recent call last):"]
    for frame, line_number in traceback.walk_tb(error.__traceback__):
        code = frame.f_code
        lines.append(f'  File "{code.co_filename}", line {line_number}, in {code.co_name}')
    lines.append(summary(error))
    cause = error.__cause__ or (None if error.__suppress_context__ else error.__context__)
    if cause is not None:
        return describe(cause) + "\n\nwhich led to:\n\n" + "\n".join(lines)
    return "\n".join(lines)
