"""Bearer JWT authentication: who is calling, in which role, with which scopes.

Roles (docs/api-conventions.md): `staff` reads (PII masked unless the token has the `pii:read` scope),
`staff_admin` also merges, unmerges, adjusts and erases, `service` is a sync job, `member` is a customer
in the mini-program or app, whose token subject is their customer id: every query is limited to them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Literal, cast

import jwt

from infra.settings import Settings

Role = Literal["staff", "staff_admin", "service", "member"]
ROLES: tuple[Role, ...] = ("staff", "staff_admin", "service", "member")
PII_READ = "pii:read"
ALGORITHM = "HS256"
DEV_SECRET = "dev-only-change-me-dev-only-change-me"


class AuthError(Exception):
    """The request carries no usable credentials; the message says why (never the token itself)."""


@dataclass(frozen=True)
class Principal:
    """The caller of one request."""

    subject: str
    role: Role
    scopes: frozenset[str] = field(default_factory=frozenset)

    @property
    def is_staff(self) -> bool:
        return self.role in ("staff", "staff_admin")

    @property
    def is_member(self) -> bool:
        return self.role == "member"

    @property
    def member_customer_id(self) -> int | None:
        """The customer a member token is limited to; None for other roles."""
        return int(self.subject) if self.is_member else None

    @property
    def actor(self) -> str:
        """How the audit log names the caller."""
        return f"{self.role}:{self.subject}"


def issue_token(
    settings: Settings,
    subject: str,
    role: Role,
    scopes: list[str] | None = None,
    ttl_seconds: int = 3600,
    now: float | None = None,
) -> str:
    """A signed bearer token (`c360 api token` prints one)."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; expected one of {', '.join(ROLES)}")
    if role == "member" and not subject.isdigit():
        raise ValueError("a member token's subject is the member's customer id (digits)")
    issued = int(now if now is not None else time.time())
    claims = {
        "sub": subject,
        "role": role,
        "scope": " ".join(sorted(set(scopes or []))),
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience,
        "iat": issued,
        "exp": issued + ttl_seconds,
    }
    return jwt.encode(claims, settings.jwt_secret, algorithm=ALGORITHM)


def authenticate(settings: Settings, authorization: str | None) -> Principal:
    """The principal of an `Authorization: Bearer <jwt>` header, or AuthError saying what is wrong."""
    return verify(settings, authorization)[0]


def verify(settings: Settings, authorization: str | None) -> tuple[Principal, float]:
    """authenticate(), with the token's expiry (epoch seconds)."""
    if not authorization:
        raise AuthError("missing bearer token: send 'Authorization: Bearer <token>' (c360 api token)")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthError("the Authorization header must be 'Bearer <token>'")
    try:
        claims: dict[str, Any] = jwt.decode(
            token.strip(),
            settings.jwt_secret,
            algorithms=[ALGORITHM],
            audience=settings.jwt_audience,
            issuer=settings.jwt_issuer,
            options={"require": ["exp", "sub", "iss", "aud"]},
        )
    except jwt.ExpiredSignatureError as exc:
        raise AuthError("the bearer token has expired") from exc
    except jwt.InvalidAudienceError as exc:
        raise AuthError(
            f"the bearer token is not for this API (audience must be {settings.jwt_audience!r})"
        ) from exc
    except jwt.InvalidIssuerError as exc:
        raise AuthError(f"the bearer token has the wrong issuer (must be {settings.jwt_issuer!r})") from exc
    except jwt.PyJWTError as exc:
        raise AuthError(f"invalid bearer token: {exc}") from exc
    role = claims.get("role")
    if role not in ROLES:
        raise AuthError(f"the bearer token's role {role!r} is not one of {', '.join(ROLES)}")
    subject = str(claims["sub"])
    if role == "member" and not subject.isdigit():
        raise AuthError("a member token's subject must be a customer id")
    scopes = frozenset(str(claims.get("scope", "")).split())
    return Principal(subject=subject, role=cast(Role, role), scopes=scopes), float(claims["exp"])


def check_production_secret(settings: Settings) -> None:
    """Refuse to serve production with the development secret: anyone could mint tokens."""
    if settings.env == "production" and (settings.jwt_secret == DEV_SECRET or len(settings.jwt_secret) < 32):
        raise ValueError(
            "C360_JWT_SECRET must be set to a secret of at least 32 characters in production "
            "(the development default lets anyone sign tokens)"
        )
    if settings.env == "production" and settings.erasure_key == Settings.model_fields["erasure_key"].default:
        raise ValueError(
            "C360_ERASURE_KEY must be set in production (with the public default, the suppression list of "
            "erased people's phones and e-mails can be reversed by trying every number)"
        )
