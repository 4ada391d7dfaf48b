"""ACME resources as frozen dataclasses, parsed defensively from the CA's JSON.

A CA that sends something malformed gets a :class:`TransportError` naming the
resource and the field, never a ``KeyError`` from deep inside the client.
Only ``newNonce``, ``newAccount`` and ``newOrder`` are required in a
directory (RFC 8555 section 7.1.1); everything else is used only when offered.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from lib.acme.errors import ProblemError, Subproblem, TransportError

REQUIRED_RESOURCES = ("newNonce", "newAccount", "newOrder")


def _text(data: Mapping[str, Any], key: str, what: str, required: bool = True) -> str | None:
    value = data.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or (required and not value):
        raise TransportError(f"the CA sent a malformed {what}: {key!r} is missing or not text")
    return value


def _object(data: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(data, Mapping):
        raise TransportError(f"the CA sent a malformed {what}: not a JSON object")
    return data


def problem_from_json(data: Any, *, status: int = 0, retry_after: float | None = None,
                      url: str = "") -> ProblemError:
    """A :class:`ProblemError` from a problem document (tolerating sloppy ones)."""
    doc = data if isinstance(data, Mapping) else {}
    type_ = doc.get("type") if isinstance(doc.get("type"), str) else "about:blank"
    detail = doc.get("detail") if isinstance(doc.get("detail"), str) else ""
    subs = []
    for sub in doc.get("subproblems") or ():
        if isinstance(sub, Mapping):
            ident = sub.get("identifier")
            value = ident.get("value") if isinstance(ident, Mapping) else None
            subs.append(Subproblem(str(sub.get("type", "")), str(sub.get("detail", "")),
                                   value if isinstance(value, str) else None))
    return ProblemError(str(type_), str(detail), status=status, subproblems=subs,
                        retry_after=retry_after, url=url)


@dataclass(frozen=True)
class Directory:
    """The CA's directory: resource URLs and ``meta``."""

    url: str
    new_nonce: str
    new_account: str
    new_order: str
    revoke_cert: str | None = None
    key_change: str | None = None
    renewal_info: str | None = None
    terms_of_service: str | None = None
    website: str | None = None
    external_account_required: bool = False
    profiles: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_json(cls, url: str, data: Any) -> Directory:
        doc = _object(data, "directory")
        missing = [r for r in REQUIRED_RESOURCES if not isinstance(doc.get(r), str)]
        if missing:
            raise TransportError(f"{url} is not an ACME directory: it lacks {', '.join(missing)}")
        meta = doc.get("meta") if isinstance(doc.get("meta"), Mapping) else {}
        assert isinstance(meta, Mapping)
        raw_profiles = meta.get("profiles")
        profiles = ({str(k): str(v) for k, v in raw_profiles.items()}
                    if isinstance(raw_profiles, Mapping) else {})

        def optional(key: str) -> str | None:
            value = doc.get(key)
            return value if isinstance(value, str) and value else None

        terms = meta.get("termsOfService")
        website = meta.get("website")
        return cls(
            url=url,
            new_nonce=doc["newNonce"],
            new_account=doc["newAccount"],
            new_order=doc["newOrder"],
            revoke_cert=optional("revokeCert"),
            key_change=optional("keyChange"),
            renewal_info=optional("renewalInfo"),
            terms_of_service=terms if isinstance(terms, str) else None,
            website=website if isinstance(website, str) else None,
            external_account_required=meta.get("externalAccountRequired") is True,
            profiles=profiles,
        )

    def offered(self) -> list[str]:
        """The optional resources this CA offers, by their directory names."""
        values = {"revokeCert": self.revoke_cert, "keyChange": self.key_change,
                  "renewalInfo": self.renewal_info}
        return [name for name, value in values.items() if value]


@dataclass(frozen=True)
class Account:
    url: str
    status: str
    contact: tuple[str, ...] = ()
    orders: str | None = None

    @classmethod
    def from_json(cls, url: str, data: Any) -> Account:
        doc = _object(data, "account")
        contact = doc.get("contact") or []
        return cls(url=url, status=_text(doc, "status", "account") or "",
                   contact=tuple(str(c) for c in contact if isinstance(c, str)),
                   orders=_text(doc, "orders", "account", required=False))


@dataclass(frozen=True)
class Challenge:
    url: str
    type: str
    status: str
    token: str | None = None
    error: ProblemError | None = None

    @classmethod
    def from_json(cls, data: Any) -> Challenge:
        doc = _object(data, "challenge")
        error = doc.get("error")
        return cls(url=_text(doc, "url", "challenge") or "",
                   type=_text(doc, "type", "challenge") or "",
                   status=_text(doc, "status", "challenge") or "",
                   token=_text(doc, "token", "challenge", required=False),
                   error=problem_from_json(error) if error else None)


@dataclass(frozen=True)
class Authorization:
    url: str
    status: str
    identifier: str
    wildcard: bool
    challenges: tuple[Challenge, ...]
    # The Retry-After of the answer that carried this (a hint for polling).
    retry_after: float | None = None

    @classmethod
    def from_json(cls, url: str, data: Any, retry_after: float | None = None) -> Authorization:
        doc = _object(data, "authorization")
        ident = _object(doc.get("identifier"), "authorization identifier")
        if ident.get("type") != "dns":
            raise TransportError(f"authorization {url} is for a {ident.get('type')!r} "
                                 "identifier; only dns is supported")
        return cls(url=url, status=_text(doc, "status", "authorization") or "",
                   identifier=_text(ident, "value", "authorization identifier") or "",
                   wildcard=doc.get("wildcard") is True,
                   challenges=tuple(Challenge.from_json(c) for c in doc.get("challenges") or ()),
                   retry_after=retry_after)

    @property
    def name(self) -> str:
        """The name as ordered: ``*.example.com`` for a wildcard authorization."""
        return f"*.{self.identifier}" if self.wildcard else self.identifier

    def challenge(self, type_: str) -> Challenge | None:
        return next((c for c in self.challenges if c.type == type_), None)

    def problems(self) -> list[str]:
        return [str(c.error) for c in self.challenges if c.error is not None]

    def problem_codes(self) -> list[str]:
        """The ACME error names of the challenges' problems (``unauthorized``, ``dns``)."""
        return [c.error.code for c in self.challenges if c.error is not None]


@dataclass(frozen=True)
class Order:
    url: str
    status: str
    identifiers: tuple[str, ...]
    authorizations: tuple[str, ...]
    finalize: str
    certificate: str | None = None
    error: ProblemError | None = None
    profile: str | None = None
    replaces: str | None = None
    retry_after: float | None = None

    @classmethod
    def from_json(cls, url: str, data: Any, retry_after: float | None = None) -> Order:
        doc = _object(data, "order")
        idents = [_object(i, "order identifier") for i in doc.get("identifiers") or ()]
        authzs = doc.get("authorizations") or []
        if not isinstance(authzs, list) or not all(isinstance(a, str) for a in authzs):
            raise TransportError("the CA sent a malformed order: bad 'authorizations'")
        error = doc.get("error")
        return cls(url=url, status=_text(doc, "status", "order") or "",
                   identifiers=tuple(str(i.get("value")) for i in idents),
                   authorizations=tuple(authzs),
                   finalize=_text(doc, "finalize", "order") or "",
                   certificate=_text(doc, "certificate", "order", required=False),
                   error=problem_from_json(error) if error else None,
                   profile=_text(doc, "profile", "order", required=False),
                   replaces=_text(doc, "replaces", "order", required=False),
                   retry_after=retry_after)


@dataclass(frozen=True)
class RenewalInfo:
    """ARI (RFC 9773): when the CA suggests renewing, and when to ask again."""

    start: str
    end: str
    explanation_url: str | None = None
    retry_after: float | None = None

    @classmethod
    def from_json(cls, data: Any, retry_after: float | None) -> RenewalInfo:
        doc = _object(data, "renewal info")
        window = _object(doc.get("suggestedWindow"), "renewal info window")
        return cls(start=_text(window, "start", "renewal info") or "",
                   end=_text(window, "end", "renewal info") or "",
                   explanation_url=_text(doc, "explanationURL", "renewal info", required=False),
                   retry_after=retry_after)
