"""Identity assertions are single-use until they expire; a full guard refuses instead of forgetting."""

from __future__ import annotations

from tenantry.auth.replay import SeenAssertions


def test_an_assertion_is_accepted_once() -> None:
    seen = SeenAssertions()
    assert seen.first_use_at("https://idp", "j1", 200, now=100) is True
    assert seen.first_use_at("https://idp", "j1", 200, now=150) is False
    assert seen.first_use_at("https://other-idp", "j1", 200, now=150) is True  # jti is per issuer
    assert seen.first_use_at("https://idp", "j2", 200, now=150) is True


def test_an_entry_is_forgotten_only_after_its_expiry_and_the_leeway() -> None:
    seen = SeenAssertions(leeway=30)
    assert seen.first_use_at("https://idp", "j1", 200, now=100)
    assert seen.first_use_at("https://idp", "j1", 200, now=229) is False  # still within the leeway
    assert seen.first_use_at("https://idp", "j1", 300, now=231) is True  # expired: it could not verify anyway


def test_a_full_guard_refuses_new_assertions_rather_than_forget_live_ones() -> None:
    seen = SeenAssertions(max_entries=2)
    assert seen.first_use_at("i", "a", 500, now=100)
    assert seen.first_use_at("i", "b", 500, now=100)
    assert seen.first_use_at("i", "c", 500, now=100) is None
    assert seen.first_use_at("i", "a", 500, now=100) is False  # still remembered
    assert seen.first_use_at("i", "c", 700, now=600) is True  # room again once the others expired
