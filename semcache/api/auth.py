"""API keys: which tenant (and tier) a request belongs to."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

import xxhash

from ..errors import AuthenticationError, ConfigError

__all__ = ["OPEN_TENANT", "KeyRing", "Principal", "is_loopback"]

OPEN_TENANT = "default"


@dataclass(frozen=True)
class Principal:
    """The caller: a tenant and its tier."""

    tenant: str
    tier: str = "default"
    # A stable, non-secret name for the key, for per-key rate limits.
    key_id: str = ""
    # An admin key (``key=tenant:tier:admin``) sees every tenant on the dashboard; for
    # everything else it is a key of its own tenant.
    admin: bool = False


class KeyRing:
    """Maps API keys to principals. Empty means one open tenant (loopback only)."""

    def __init__(self, keys: dict[str, Principal]) -> None:
        self._keys = dict(keys)

    @property
    def open(self) -> bool:
        return not self._keys

    @classmethod
    def from_settings(cls, api_keys: str, api_keys_file: str = "") -> KeyRing:
        """Parse ``key=tenant[:tier[:admin]]`` pairs from a comma-separated string and a file.

        An empty tier is ``default`` (``key=ops::admin``)."""
        keys: dict[str, Principal] = {}
        entries = [("api_keys", item) for item in api_keys.split(",") if item.strip()]
        if api_keys_file:
            try:
                text = Path(api_keys_file).read_text(encoding="utf-8")
            except OSError as exc:
                raise ConfigError(
                    f"cannot read api_keys_file {api_keys_file}: {exc.strerror}"
                ) from exc
            entries += [
                (f"{api_keys_file}:{n}", line)
                for n, line in enumerate(text.splitlines(), 1)
                if line.strip() and not line.lstrip().startswith("#")
            ]
        for source, item in entries:
            key, sep, who = item.strip().partition("=")
            tenant, _, rest = who.strip().partition(":")
            tier, _, role = rest.partition(":")
            if not sep or not key.strip() or not tenant.strip():
                # The key itself is never echoed: a typo must not put a secret in a log.
                raise ConfigError(f"{source}: expected key=tenant[:tier[:admin]]")
            if role.strip() not in ("", "admin"):
                raise ConfigError(
                    f"{source}: unknown key attribute {role.strip()!r}; the only one is admin"
                )
            key_id = xxhash.xxh3_64_hexdigest(key.strip().encode())
            keys[key.strip()] = Principal(
                tenant.strip(), tier.strip() or "default", key_id, admin=role.strip() == "admin"
            )
        return cls(keys)

    @property
    def admins(self) -> int:
        """How many of the keys are admin keys."""
        return sum(p.admin for p in self._keys.values())

    def __len__(self) -> int:
        return len(self._keys)

    def authenticate(self, authorization: str | None, x_api_key: str | None) -> Principal:
        """The principal for a request's ``Authorization: Bearer`` or ``x-api-key`` header."""
        if self.open:
            # One open tenant on loopback: whoever can reach it runs it.
            return Principal(OPEN_TENANT, key_id=OPEN_TENANT, admin=True)
        key = None
        if authorization:
            scheme, _, value = authorization.partition(" ")
            if scheme.lower() == "bearer" and value.strip():
                key = value.strip()
        if key is None and x_api_key:
            key = x_api_key.strip()
        if not key:
            raise AuthenticationError(
                "missing API key: send 'Authorization: Bearer <key>' or 'x-api-key: <key>'",
                code="missing_api_key",
            )
        principal = self._keys.get(key)
        if principal is None:
            raise AuthenticationError("unknown API key", code="invalid_api_key")
        return principal


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
