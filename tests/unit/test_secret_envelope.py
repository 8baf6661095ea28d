"""Envelope encryption: a sealed value opens only for its tenant and name, under its data key,
wrapped under the right master key; nothing shows key material or a value."""

from __future__ import annotations

import base64
import os
import stat
import threading
from pathlib import Path

import pytest
from pydantic import SecretStr

from tenantry.core.errors import SecretsUnavailable, StorageError, UsageError
from tenantry.core.secrets import WrappedKey, validate_secret_name, validate_secret_value
from tenantry.core.settings import SecretSettings
from tenantry.scoping.secrets.envelope import DataKey, MasterKey, load_master_key, master_key_path

VALUE = "sk-live-acme-canary-0123456789"


@pytest.fixture
def master() -> MasterKey:
    return MasterKey(os.urandom(32))


def test_a_sealed_value_opens_for_its_tenant_and_name(master: MasterKey) -> None:
    key, wrapped = master.new_data_key("acme", now=1)
    sealed = key.seal("acme", "mail_api_key", VALUE.encode())
    assert VALUE.encode() not in sealed
    assert master.unwrap("acme", wrapped).open("acme", "mail_api_key", sealed) == VALUE.encode()


def test_sealing_twice_gives_different_ciphertexts(master: MasterKey) -> None:
    key, _ = master.new_data_key("acme", now=1)
    assert key.seal("acme", "a_key", b"same value") != key.seal("acme", "a_key", b"same value")


@pytest.mark.parametrize(
    ("tenant", "name"), [("globex", "mail_api_key"), ("acme", "other_key"), ("acme-evil", "mail_api_key")]
)
def test_a_value_moved_to_another_tenant_or_name_does_not_open(master: MasterKey, tenant: str, name: str) -> None:
    key, _ = master.new_data_key("acme", now=1)
    sealed = key.seal("acme", "mail_api_key", VALUE.encode())
    with pytest.raises(SecretsUnavailable):
        key.open(tenant, name, sealed)
    assert key.open("acme", "mail_api_key", sealed) == VALUE.encode()  # positive control


def test_a_data_key_moved_to_another_tenant_does_not_unwrap(master: MasterKey) -> None:
    _, wrapped = master.new_data_key("acme", now=1)
    with pytest.raises(SecretsUnavailable, match="another tenant"):
        master.unwrap("globex", wrapped)
    master.unwrap("acme", wrapped)


def test_a_wrong_master_key_is_named_as_such(master: MasterKey) -> None:
    _, wrapped = master.new_data_key("acme", now=1)
    other = MasterKey(os.urandom(32))
    with pytest.raises(SecretsUnavailable, match="master key does not match"):
        other.unwrap("acme", wrapped)


def test_a_wrapped_key_relabelled_with_the_right_key_id_still_fails(master: MasterKey) -> None:
    other = MasterKey(os.urandom(32))
    _, foreign = other.new_data_key("acme", now=1)
    forged = WrappedKey(key_id=master.key_id, wrapped=foreign.wrapped, created_at=1)
    with pytest.raises(SecretsUnavailable, match="corrupt"):
        master.unwrap("acme", forged)


@pytest.mark.parametrize("position", [0, 11, 12, -1])
def test_a_tampered_value_does_not_open(master: MasterKey, position: int) -> None:
    key, _ = master.new_data_key("acme", now=1)
    sealed = bytearray(key.seal("acme", "mail_api_key", VALUE.encode()))
    sealed[position] ^= 0x01
    with pytest.raises(SecretsUnavailable):
        key.open("acme", "mail_api_key", bytes(sealed))


@pytest.mark.parametrize("sealed", [b"", b"\0" * 27])
def test_a_truncated_value_does_not_open(master: MasterKey, sealed: bytes) -> None:
    key, _ = master.new_data_key("acme", now=1)
    with pytest.raises(SecretsUnavailable, match="corrupt"):
        key.open("acme", "mail_api_key", sealed)


def test_a_tampered_data_key_does_not_unwrap(master: MasterKey) -> None:
    _, wrapped = master.new_data_key("acme", now=1)
    flipped = bytes([wrapped.wrapped[0] ^ 1]) + wrapped.wrapped[1:]
    with pytest.raises(SecretsUnavailable):
        master.unwrap("acme", WrappedKey(wrapped.key_id, flipped, 1))
    with pytest.raises(SecretsUnavailable):
        master.unwrap("acme", WrappedKey(wrapped.key_id, wrapped.wrapped[:20], 1))


def test_no_repr_or_error_shows_key_material_or_the_value() -> None:
    raw = os.urandom(32)
    master = MasterKey(raw)
    data_key, wrapped = master.new_data_key("acme", now=1)
    sealed = data_key.seal("acme", "mail_api_key", VALUE.encode())
    shown = repr(master) + repr(data_key) + repr(wrapped)
    for material in (raw.hex(), base64.b64encode(raw).decode(), wrapped.wrapped.hex()):
        assert material not in shown
    assert master.key_id in repr(master)
    errors: list[str] = []
    for attempt in (
        lambda: data_key.open("globex", "mail_api_key", sealed),
        lambda: MasterKey(os.urandom(32)).unwrap("acme", wrapped),
        lambda: validate_secret_value(VALUE[:3]),
        lambda: validate_secret_value(VALUE * 4000),
    ):
        with pytest.raises((SecretsUnavailable, UsageError)) as caught:
            attempt()
        errors.append(str(caught.value) + repr(caught.value))
    assert all(VALUE[:3] not in e and raw.hex() not in e for e in errors)


def test_the_key_id_is_a_fingerprint_of_the_key() -> None:
    raw = os.urandom(32)
    assert MasterKey(raw).key_id == MasterKey(raw).key_id
    assert len(MasterKey(raw).key_id) == 16 and MasterKey(raw).key_id != MasterKey(os.urandom(32)).key_id


@pytest.mark.parametrize(
    "text",
    ["", "not base64!", base64.b64encode(os.urandom(16)).decode(), "QUJD"],
    ids=["empty", "not-base64", "16-bytes", "3-bytes"],
)
def test_a_malformed_configured_master_key_is_a_usage_error(text: str) -> None:
    with pytest.raises(UsageError, match="base64 of 32") as caught:
        MasterKey.from_base64(text)
    assert text == "" or text not in str(caught.value)


def test_a_configured_master_key_is_used_and_no_file_is_created(tmp_path: Path) -> None:
    raw = os.urandom(32)
    for encoded in (base64.b64encode(raw).decode(), base64.urlsafe_b64encode(raw).decode()):
        settings = SecretSettings(master_key=SecretStr(encoded))
        assert load_master_key(settings, tmp_path).key_id == MasterKey(raw).key_id
    assert not master_key_path(tmp_path).exists()


def test_the_master_key_file_is_created_once_with_mode_0600(tmp_path: Path) -> None:
    first = load_master_key(SecretSettings(), tmp_path)
    path = master_key_path(tmp_path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert len(path.read_bytes()) == 32
    assert load_master_key(SecretSettings(), tmp_path).key_id == first.key_id
    assert [p.name for p in path.parent.iterdir()] == ["master.key"]  # no temporary file left


def test_concurrent_first_loads_agree_on_one_master_key(tmp_path: Path) -> None:
    barrier = threading.Barrier(8)
    ids: list[str] = []

    def load() -> None:
        barrier.wait()
        ids.append(load_master_key(SecretSettings(), tmp_path).key_id)

    threads = [threading.Thread(target=load) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(ids) == 8 and len(set(ids)) == 1


@pytest.mark.parametrize(
    ("mode", "content"), [(0o640, os.urandom(32)), (0o600, b"short")], ids=["group-readable", "too-short"]
)
def test_a_readable_or_corrupt_master_key_file_is_refused(tmp_path: Path, mode: int, content: bytes) -> None:
    path = master_key_path(tmp_path)
    path.parent.mkdir(mode=0o700)
    path.write_bytes(content)
    path.chmod(mode)
    with pytest.raises(StorageError):
        load_master_key(SecretSettings(), tmp_path)


@pytest.mark.parametrize("name", ["mail_api_key", "A", "stripe.live-key_2", "x" * 64])
def test_valid_secret_names(name: str) -> None:
    assert validate_secret_name(name) == name


@pytest.mark.parametrize("name", ["", "1key", "_key", "has space", "x" * 65, "a/b", "a\0b", "ключ"])
def test_invalid_secret_names_are_refused(name: str) -> None:
    with pytest.raises(UsageError, match="secret name"):
        validate_secret_name(name)


@pytest.mark.parametrize(
    ("value", "reason"),
    [("", "empty"), ("abc", "at least 4"), ("x" * (64 * 1024 + 1), "64 KiB"), ("ab\udc80c", "UTF-8")],
)
def test_unusable_secret_values_are_refused(value: str, reason: str) -> None:
    with pytest.raises(UsageError, match=reason):
        validate_secret_value(value)


def test_usable_secret_values() -> None:
    assert validate_secret_value("abcd") == b"abcd"
    assert validate_secret_value("пароль") == "пароль".encode()
    assert len(validate_secret_value("x" * 64 * 1024)) == 64 * 1024


def test_a_data_key_has_32_bytes() -> None:
    with pytest.raises(ValueError):
        DataKey(b"short")
