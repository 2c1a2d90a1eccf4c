"""Request signatures of the marketplace gateways, as CHANNELS.md describes them."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping


def _joined(params: Mapping[str, str]) -> str:
    # Both SDKs leave out the sign itself and parameters without a value.
    return "".join(f"{k}{v}" for k, v in sorted(params.items()) if k != "sign" and v not in (None, ""))


def top_sign(params: Mapping[str, str], secret: str, sign_method: str = "md5") -> str:
    """TOP: upper(hex(MD5(secret + k1v1k2v2... + secret))) for md5; HMAC-MD5 keyed with the secret
    for hmac (hmac-sha256 likewise)."""
    joined = _joined(params)
    if sign_method == "hmac":
        return hmac.new(secret.encode(), joined.encode(), hashlib.md5).hexdigest().upper()
    if sign_method == "hmac-sha256":
        return hmac.new(secret.encode(), joined.encode(), hashlib.sha256).hexdigest().upper()
    return hashlib.md5(f"{secret}{joined}{secret}".encode()).hexdigest().upper()


def jos_sign(params: Mapping[str, str], secret: str) -> str:
    """JOS: upper(MD5(secret + sorted k+v (360buy_param_json included) + secret))."""
    return hashlib.md5(f"{secret}{_joined(params)}{secret}".encode()).hexdigest().upper()
