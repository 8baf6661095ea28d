"""The export bundle: whole or absent, never overwriting, every part listed with size and SHA-256."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from tenantry.core.errors import StorageError, UsageError
from tenantry.core.settings import load_settings
from tenantry.lifecycle.bundle import Bundle
from tenantry.lifecycle.export import export_tenant
from tenantry.lifecycle.files import LocalFilesData
from tenantry.runtime import Runtime


def test_parts_are_listed_with_their_size_and_digest(tmp_path: Path) -> None:
    bundle = Bundle(tmp_path / "out")
    assert bundle.write_jsonl("sql/t.jsonl", "sql:test", [{"a": 1}, {"b": b"\x00\x01"}]) == 2
    with bundle.part("files/x.bin", "files:test") as out:
        out.write(b"abc")
    digest = bundle.finish({"tenant_id": "acme"})
    manifest_bytes = (tmp_path / "out" / "manifest.json").read_bytes()
    assert digest == "sha256:" + hashlib.sha256(manifest_bytes).hexdigest()
    parts = {p["path"]: p for p in json.loads(manifest_bytes)["parts"]}
    data = (tmp_path / "out" / "sql" / "t.jsonl").read_bytes()
    assert parts["sql/t.jsonl"]["sha256"] == "sha256:" + hashlib.sha256(data).hexdigest()
    assert parts["files/x.bin"] == {"path": "files/x.bin", "store": "files:test", "bytes": 3,
                                    "sha256": "sha256:" + hashlib.sha256(b"abc").hexdigest()}  # fmt: skip
    assert b'"base64": "AAE="' in data
    assert not (tmp_path / "out.partial").exists()


@pytest.mark.parametrize("existing", ["dir", "file", "symlink"])
def test_an_existing_path_is_never_overwritten(tmp_path: Path, existing: str) -> None:
    target = tmp_path / "out"
    if existing == "dir":
        target.mkdir()
    elif existing == "file":
        target.write_text("keep me")
    else:
        target.symlink_to(tmp_path / "elsewhere")
    with pytest.raises(UsageError, match="already exists; refusing to overwrite"):
        Bundle(target)
    assert not (tmp_path / "elsewhere").exists()
    assert existing != "file" or target.read_text() == "keep me"


@pytest.mark.parametrize("bad", ["../escape", "/abs", "a//b", "a/./b", ""])
def test_a_part_path_cannot_leave_the_bundle(tmp_path: Path, bad: str) -> None:
    bundle = Bundle(tmp_path / "out")
    with pytest.raises(UsageError, match="invalid bundle path"):
        bundle.path_of(bad)
    assert bundle.path_of("ok/part.json").is_relative_to(bundle.root)  # positive control


def test_a_failed_export_leaves_no_bundle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runtime = Runtime(load_settings(data_dir=tmp_path / "data"), create=True)
    try:
        runtime.store.create_tenant("acme")

        def broken(self: LocalFilesData, tenant_id: str, bundle: Bundle, advance: object) -> None:
            raise StorageError("the disk went away")

        with monkeypatch.context() as patched:
            patched.setattr(LocalFilesData, "export", broken)
            with pytest.raises(StorageError):
                export_tenant(runtime, "acme", tmp_path / "out", actor="test")
        assert not (tmp_path / "out").exists() and not (tmp_path / "out.partial").exists()
        outcome = export_tenant(runtime, "acme", tmp_path / "out", actor="test")  # positive control
        assert (tmp_path / "out" / "audit" / "stream.jsonl").exists() and outcome.parts > 0
    finally:
        runtime.close()
