"""The pure parts of the store: the LRU+TTL cache and the Redis hash codec."""

from __future__ import annotations

import orjson
import pytest

from broker.core.state import Bond, Credential, DecayedCount, Manifest, RecipientProfile, Vouch
from broker.store import codec
from broker.store.cache import TTLCache
from broker.store.keys import Keys


def test_cache_entries_expire_after_their_ttl() -> None:
    cache: TTLCache[str, int] = TTLCache(max_size=10, ttl_ms=100)
    cache.put("a", 1, now_ms=1_000)
    assert cache.get("a", 1_099) == 1
    assert cache.get("a", 1_100) is None
    assert (cache.hits, cache.misses) == (1, 1)


def test_cache_evicts_the_least_recently_used_entry() -> None:
    cache: TTLCache[str, int] = TTLCache(max_size=2, ttl_ms=1_000)
    cache.put("a", 1, 0)
    cache.put("b", 2, 0)
    assert cache.get("a", 1) == 1  # a is now most recent
    cache.put("c", 3, 2)
    assert (cache.get("a", 3), cache.get("b", 3), cache.get("c", 3)) == (1, None, 3)
    assert len(cache) == 2


def test_cache_update_changes_a_present_entry_and_keeps_its_expiry() -> None:
    cache: TTLCache[str, int] = TTLCache(max_size=10, ttl_ms=100)
    cache.put("a", 1, now_ms=1_000)
    cache.update("a", lambda v: v + 1)
    cache.update("absent", lambda v: v + 1)
    assert cache.get("a", 1_099) == 2
    assert cache.get("a", 1_100) is None  # still expires when first stored + ttl
    assert cache.get("absent", 1_000) is None  # update never creates an entry


def test_cache_refuses_a_nonsense_size() -> None:
    with pytest.raises(ValueError):
        TTLCache(max_size=0, ttl_ms=1)


def test_peer_state_round_trips_through_hash_fields() -> None:
    cred = Credential("c1", "did:key:issuer", "did:key:peer", "Acme", 1, 2)
    bond = Bond("b1", "did:key:custodian", 500, "USD", 3, 4)
    manifest = Manifest("m1", frozenset({"data", "request"}), 5, 6)
    fields = {
        b"revoked": b"1", b"pos_at": b"10", b"pos_until": b"20",
        b"cred": codec.credential_field(cred), b"succ": b"3.5", b"succ_at": b"100",
        b"clean": b"7", b"anomaly": b"50", b"bond": codec.bond_field(bond), b"bond_cut": b"120",
        b"manifest": codec.manifest_field(manifest),
    }  # fmt: skip
    peer = codec.peer_from_hash("did:key:peer", fields, 9)
    assert peer.revoked and peer.credential == cred
    assert peer.bond == Bond("b1", "did:key:custodian", 500, "USD", 3, 4, slashed_minor=120)
    assert peer.bond.held_minor == 380
    assert (peer.possession_verified_ms, peer.possession_expires_ms) == (10, 20)
    assert peer.successes == DecayedCount(3.5, 100) and peer.failures == DecayedCount()
    assert (peer.clean_streak, peer.last_anomaly_ms) == (7, 50)
    assert peer.manifest == manifest
    assert peer.spent_24h_ref == 9


def test_records_from_before_evidence_kept_its_issuer_count_for_nothing() -> None:
    fields = {
        b"bond": orjson.dumps({"amount_minor": 500, "currency": "USD"}),
        b"manifest": orjson.dumps(["data"]),
    }
    peer = codec.peer_from_hash("did:key:peer", fields)
    assert peer.bond is None and peer.manifest is None


def test_an_empty_hash_is_a_peer_nothing_is_known_about() -> None:
    peer = codec.peer_from_hash("did:key:x", {})
    assert not peer.revoked and peer.credential is None and peer.clean_streak == 0


def test_a_vouch_round_trips_without_its_vouchers_standing() -> None:
    vouch = Vouch("did:key:v", 0.5, 99, DecayedCount(3.0, 1), voucher_revoked=True)
    assert orjson.loads(codec.vouch_field(vouch)) == {
        "voucher": "did:key:v", "share": 0.5, "expires_at_ms": 99,
    }  # fmt: skip
    assert codec.vouch_from(codec.vouch_field(vouch)) == Vouch("did:key:v", 0.5, 99)


def test_recipient_profile_round_trips_and_absence_means_unknown() -> None:
    profile = RecipientProfile(
        "did:key:r", retention="temporary", accepted_kinds=frozenset({"data"}),
        accepted_data_classes=frozenset({"pii"}), requires_pact=True,
    )  # fmt: skip
    stored = {k.encode(): v for k, v in codec.recipient_to_hash(profile).items()}
    assert codec.recipient_from_hash("did:key:r", stored) == profile
    assert codec.recipient_from_hash("did:key:r", {}) is None


def test_an_unknown_retention_is_treated_as_the_least_private() -> None:
    profile = codec.recipient_from_hash("did:key:r", {b"retention": b"forever"})
    assert profile is not None and profile.retention == "permanent"


def test_every_key_lives_under_the_prefix() -> None:
    keys = Keys("p:")
    names = [
        keys.peer("d"), keys.recipient("d"), keys.seen("m"), keys.nonce("d", "n"),
        keys.spend("d"), keys.pact("a", "b"), keys.issuers, keys.revoked_evidence,
        keys.policy, keys.invalidate, keys.report_pairs("d"), keys.report_blame("d"),
        keys.serious_orgs("d"), keys.serious_reports, keys.serious_open,
        keys.serious_by_reporter, keys.serious_by_pair, keys.evidence_ids, keys.presentation("x"),
    ]  # fmt: skip
    assert all(name.startswith("p:") for name in names)
    assert len(set(names)) == len(names)
