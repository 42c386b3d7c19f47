"""did:key identities for Ed25519 keys, and signing/verification with PyNaCl.

did:key per the W3C CCG method: ``did:key:`` + multibase base58btc (``z``) of the
multicodec varint for ed25519-pub (0xed 0x01) followed by the 32-byte public key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import base58
from nacl.exceptions import BadSignatureError, CryptoError
from nacl.signing import SigningKey, VerifyKey

from broker.errors import IdentityError

DID_KEY_PREFIX = "did:key:z"
ED25519_MULTICODEC = b"\xed\x01"
PUBLIC_KEY_BYTES = 32
SIGNATURE_BYTES = 64
# "did:key:z" + base58 of 34 bytes is 46-48 characters; anything longer is not ours.
_MAX_DID_LENGTH = 64


def did_from_public_key(raw32: bytes) -> str:
    """Return the did:key identifier of a raw 32-byte Ed25519 public key."""
    if not isinstance(raw32, bytes) or len(raw32) != PUBLIC_KEY_BYTES:
        raise IdentityError("an Ed25519 public key is exactly 32 bytes")
    return DID_KEY_PREFIX + base58.b58encode(ED25519_MULTICODEC + raw32).decode("ascii")


def public_key_from_did(did: str) -> bytes:
    """Return the raw 32-byte Ed25519 public key named by a did:key identifier."""
    if not isinstance(did, str) or len(did) > _MAX_DID_LENGTH:
        raise IdentityError("not a did:key identifier (at most 64 characters)")
    if not did.startswith(DID_KEY_PREFIX):
        raise _bad(did, "must start with 'did:key:z' (multibase base58btc)")
    try:
        decoded = base58.b58decode(did[len(DID_KEY_PREFIX) :])
    except ValueError:
        raise _bad(did, "method-specific id is not valid base58btc") from None
    if decoded[:2] != ED25519_MULTICODEC:
        raise _bad(did, "key is not ed25519-pub (multicodec 0xed01)")
    if len(decoded) != 2 + PUBLIC_KEY_BYTES:
        raise _bad(did, "key is not 32 bytes long")
    key = decoded[2:]
    # Re-encoding catches non-canonical spellings (e.g. leading '1's) of the same key, so
    # one key has exactly one DID and state cannot be split across aliases.
    if did_from_public_key(key) != did:
        raise _bad(did, "not in canonical base58btc form")
    return key


def _bad(did: str, why: str) -> IdentityError:
    return IdentityError(f"invalid did:key {did!r}: {why}")


@lru_cache(maxsize=65536)
def cached_public_key(did: str) -> bytes:
    """public_key_from_did, memoised: the hot path decodes the same few DIDs over and over."""
    return public_key_from_did(did)


def verify_signature(public_key: bytes, message: bytes, signature: bytes) -> bool:
    """Return True only for a valid Ed25519 signature (RFC 8032, strict libsodium checks)."""
    if len(public_key) != PUBLIC_KEY_BYTES or len(signature) != SIGNATURE_BYTES:
        return False
    try:
        VerifyKey(public_key).verify(message, signature)
    except (BadSignatureError, CryptoError, ValueError, TypeError):
        return False
    return True


@dataclass(frozen=True)
class AgentKey:
    """An Ed25519 signing key with its did:key; the seed never appears in repr."""

    seed: bytes = field(repr=False)
    did: str = field(init=False)
    public_key: bytes = field(init=False, repr=False)
    _signer: SigningKey = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.seed) != 32:
            raise IdentityError("an Ed25519 seed is exactly 32 bytes")
        signer = SigningKey(self.seed)
        public = bytes(signer.verify_key)
        object.__setattr__(self, "_signer", signer)
        object.__setattr__(self, "public_key", public)
        object.__setattr__(self, "did", did_from_public_key(public))

    @classmethod
    def generate(cls) -> AgentKey:
        """Return a fresh random key."""
        return cls(bytes(SigningKey.generate()))

    def sign(self, message: bytes) -> bytes:
        """Return the 64-byte Ed25519 signature of `message`."""
        return self._signer.sign(message).signature
