"""Signed JSON documents: Ed25519 over RFC 8785 bytes of the document minus `signature`.

Every signed structure in the broker (evidence, handshake, manifests, pacts, key
rotations) uses these two functions, so all of them cover every field they carry.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from broker.core.canonical import canonical_json
from broker.core.identity import AgentKey, cached_public_key, verify_signature
from broker.errors import IdentityError


def sign_document(key: AgentKey, document: dict[str, Any]) -> dict[str, Any]:
    """`document` plus an Ed25519 signature over its RFC 8785 bytes."""
    signature = base64.urlsafe_b64encode(key.sign(canonical_json(document))).rstrip(b"=")
    return {**document, "signature": signature.decode()}


def signed_by(document: dict[str, Any], signer: str, *, field: str = "signature") -> bool:
    """True when `document[field]` is a valid signature by did:key `signer` over the
    document without its signature fields."""
    unsigned = {k: v for k, v in document.items() if not k.endswith("signature")}
    value = document.get(field)
    if not isinstance(value, str) or len(value) != 86:
        return False
    try:
        key = cached_public_key(signer)
        signature = base64.urlsafe_b64decode(value + "==")
    except (IdentityError, binascii.Error, ValueError):
        return False
    return verify_signature(key, canonical_json(unsigned), signature)


def countersign(key: AgentKey, document: dict[str, Any], field: str) -> dict[str, Any]:
    """Add a second signature (e.g. the other party of a pact) under `field`."""
    unsigned = {k: v for k, v in document.items() if not k.endswith("signature")}
    signature = base64.urlsafe_b64encode(key.sign(canonical_json(unsigned))).rstrip(b"=")
    return {**document, field: signature.decode()}
