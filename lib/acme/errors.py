"""The errors of the ACME client: one root, :class:`AcmeError`, and a subclass per cause.

Every message is one line a user can act on. A CA's ``problem+json`` answer
becomes a :class:`ProblemError` that shows the problem type and detail (and its
subproblems); nothing here ever carries a secret (account keys, EAB MAC keys
and gateway passwords stay out of every message).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

ERROR_PREFIX = "urn:ietf:params:acme:error:"


class AcmeError(Exception):
    """Something the ACME client could not do."""


class UsageError(AcmeError):
    """The request cannot be carried out as given: fix the command line or settings."""

    def __init__(self, message: str, *, usage: str | None = None) -> None:
        super().__init__(message)
        # The usage line of the (sub)command that was misused, when argparse found it.
        self.usage = usage


class TransportError(AcmeError):
    """The CA could not be reached, or answered something that is not ACME."""


class NoAnswer(TransportError):
    """The CA accepted the connection (or not even that) but sent no answer in time."""


class Unreachable(TransportError):
    """The CA could not be reached at all: a refused or dropped connection, no TLS."""


class NotOffered(AcmeError):
    """The CA's directory does not offer the resource a step needs (keyChange, ...)."""


@dataclass(frozen=True)
class Subproblem:
    """One identifier's part of a compound problem (RFC 8555 section 6.7.1)."""

    type: str
    detail: str
    identifier: str | None = None

    def __str__(self) -> str:
        where = f"{self.identifier}: " if self.identifier else ""
        return f"{where}{short_type(self.type)}: {self.detail}"


class ProblemError(AcmeError):
    """The CA answered with a ``problem+json`` document."""

    def __init__(self, type_: str, detail: str, *, status: int = 0,
                 subproblems: Sequence[Subproblem] = (), retry_after: float | None = None,
                 url: str = "") -> None:
        self.type = type_
        self.detail = detail
        self.status = status
        self.subproblems = tuple(subproblems)
        self.retry_after = retry_after
        self.url = url
        text = f"{type_}: {detail}" if detail else type_
        if self.subproblems:
            text += " [" + "; ".join(str(s) for s in self.subproblems) + "]"
        super().__init__(text)

    @property
    def code(self) -> str:
        """The ACME error name without its URN prefix (``badNonce``), or the whole type."""
        return short_type(self.type)


class ChallengeFailed(AcmeError):
    """The CA could not validate a challenge, or an authorization became invalid."""

    def __init__(self, message: str, codes: Sequence[str] = ()) -> None:
        super().__init__(message)
        # The ACME error names (``unauthorized``, ``dns``, ...) of the CA's problems.
        self.codes = tuple(codes)


class OrderFailed(AcmeError):
    """An order became invalid, or ended in a status the client cannot continue from."""


class PollTimeout(AcmeError):
    """An ACME object did not reach a final status before its deadline."""


class OrderPending(AcmeError):
    """The order is still being processed at its deadline; the next run resumes it."""


class SolverError(AcmeError):
    """A dns-01 TXT record could not be published, confirmed or withdrawn."""


class StateError(AcmeError):
    """The state directory cannot be read or written."""


class LockBusy(StateError):
    """Another run holds the state directory's lock."""


class HookFailed(AcmeError):
    """The deploy hook failed or ran too long."""


def short_type(type_: str) -> str:
    return type_[len(ERROR_PREFIX):] if type_.startswith(ERROR_PREFIX) else type_
