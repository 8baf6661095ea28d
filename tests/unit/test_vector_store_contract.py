"""One contract for every vector backend (sqlite-vec, Qdrant local mode), and the canaries
that prove no tenant reaches another's vectors by query, id, collection name or count."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import apsw
import pytest
import sqlite_vec
from qdrant_client import QdrantClient

from tenantry.core.errors import StorageError, UsageError
from tenantry.core.settings import VectorSettings
from tenantry.scoping.vectors.base import Embedder, VectorDocument, VectorScopes
from tenantry.scoping.vectors.embedders import HashingEmbedder
from tenantry.scoping.vectors.factory import open_vector_scopes
from tenantry.scoping.vectors.qdrant import QdrantVectorScopes, point_id
from tenantry.scoping.vectors.sqlite import SqliteVectorScopes, tenant_vectors_path

pytestmark = pytest.mark.anyio

BACKENDS = ["sqlite", "qdrant"]
CANARY_TEXT = "globex-canary: merger with initech closes friday, codename bluebird"
Opener = Callable[..., VectorScopes]


def _open(backend: str, root: Path, embedder: Embedder | None = None) -> VectorScopes:
    embedder = embedder or HashingEmbedder()
    if backend == "sqlite":
        return SqliteVectorScopes(root, embedder)
    return QdrantVectorScopes(embedder, url=None, path=root / "qdrant", collection="tenantry_test")


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def opener(backend: str, tmp_path: Path) -> Iterator[Opener]:
    """Opens the backend under test on ``tmp_path`` (closing whatever was opened at the end)."""
    opened: list[VectorScopes] = []

    def open_(embedder: Embedder | None = None) -> VectorScopes:
        scopes = _open(backend, tmp_path, embedder)
        opened.append(scopes)
        return scopes

    yield open_
    for scopes in opened:
        scopes.close()


@pytest.fixture
def scopes(opener: Opener) -> VectorScopes:
    return opener()


def doc(doc_id: str, text: str, **metadata: Any) -> VectorDocument:
    return VectorDocument(doc_id, text, metadata)


# -- contract -------------------------------------------------------------------------------


async def test_search_returns_the_closest_documents_best_first(scopes: VectorScopes) -> None:
    vectors = scopes.for_tenant("acme")
    written = await vectors.upsert(
        [
            doc("weather", "mountain weather forecast: snow tomorrow"),
            doc("invoice", "invoice 1042 for acme, paid late"),
            doc("invoices", "overdue invoices and late payment reminders"),
            doc("recipe", "a recipe for lemon cake"),
        ]
    )
    assert written == 4
    matches = await vectors.search("late invoice payment", limit=3)
    assert [m.id for m in matches][:2] == ["invoices", "invoice"]
    assert len(matches) == 3
    scores = [m.score for m in matches]
    assert scores == sorted(scores, reverse=True)
    exact = await vectors.search("a recipe for lemon cake", limit=1)
    assert exact[0].id == "recipe"
    assert exact[0].score == pytest.approx(1.0, abs=1e-4)
    assert exact[0].text == "a recipe for lemon cake"


async def test_limit_caps_the_number_of_matches(scopes: VectorScopes) -> None:
    vectors = scopes.for_tenant("acme")
    await vectors.upsert([doc(f"d{i}", f"note number {i} about invoices") for i in range(12)])
    assert len(await vectors.search("invoices", limit=5)) == 5
    assert len(await vectors.search("invoices", limit=100)) == 12


async def test_upsert_replaces_a_document_with_the_same_id(scopes: VectorScopes) -> None:
    vectors = scopes.for_tenant("acme")
    await vectors.upsert([doc("a", "lemon cake recipe", version=1)])
    await vectors.upsert([doc("a", "invoice for office chairs", version=2)])
    assert await vectors.count() == 1
    [match] = await vectors.search("invoice for office chairs", limit=5)
    assert (match.id, match.text, match.metadata) == ("a", "invoice for office chairs", {"version": 2})
    assert match.score == pytest.approx(1.0, abs=1e-4)


async def test_metadata_round_trips_as_json(scopes: VectorScopes) -> None:
    vectors = scopes.for_tenant("acme")
    metadata = {"source": "crm", "tags": ["a", "b"], "nested": {"n": 1.5, "ok": True, "none": None}}
    await vectors.upsert([VectorDocument("a", "customer record", metadata)])
    [match] = await vectors.search("customer record")
    assert match.metadata == metadata


async def test_delete_returns_how_many_existed(scopes: VectorScopes) -> None:
    vectors = scopes.for_tenant("acme")
    await vectors.upsert([doc("a", "alpha invoice"), doc("b", "beta invoice"), doc("c", "gamma invoice")])
    assert await vectors.delete(["a", "missing", "a"]) == 1
    assert await vectors.count() == 2
    assert {m.id for m in await vectors.search("alpha invoice", limit=10)} == {"b", "c"}
    assert await vectors.delete(["a"]) == 0
    assert await vectors.delete([]) == 0


async def test_collections_are_separate(scopes: VectorScopes) -> None:
    vectors = scopes.for_tenant("acme")
    await vectors.upsert([doc("same-id", "contract terms for acme")], collection="contracts")
    await vectors.upsert([doc("same-id", "support ticket about login")], collection="tickets")
    assert await vectors.count(collection="contracts") == 1
    assert await vectors.count(collection="tickets") == 1
    assert await vectors.count() == 0
    assert [m.text for m in await vectors.search("login", collection="contracts")] == ["contract terms for acme"]
    assert await vectors.delete(["same-id"], collection="tickets") == 1
    assert await vectors.count(collection="contracts") == 1


async def test_unknown_collection_is_empty(scopes: VectorScopes) -> None:
    vectors = scopes.for_tenant("acme")
    assert await vectors.search("anything", collection="never_used") == []
    assert await vectors.count(collection="never_used") == 0
    assert await vectors.delete(["x"], collection="never_used") == 0


async def test_empty_batch_writes_nothing(scopes: VectorScopes) -> None:
    assert await scopes.for_tenant("acme").upsert([]) == 0


@pytest.mark.parametrize("collection", ["", "Default", "a-b", "a b", "../globex", "x" * 64, "é", "a\x00"])
async def test_invalid_collection_names_are_refused(scopes: VectorScopes, collection: str) -> None:
    vectors = scopes.for_tenant("acme")
    with pytest.raises(UsageError, match="collection"):
        await vectors.upsert([doc("a", "text")], collection=collection)
    with pytest.raises(UsageError, match="collection"):
        await vectors.search("text", collection=collection)
    with pytest.raises(UsageError, match="collection"):
        await vectors.delete(["a"], collection=collection)
    with pytest.raises(UsageError, match="collection"):
        await vectors.count(collection=collection)


@pytest.mark.parametrize(
    "documents",
    [
        pytest.param([doc("", "text")], id="empty-id"),
        pytest.param([doc("x" * 257, "text")], id="long-id"),
        pytest.param([doc("a\nb", "text")], id="unprintable-id"),
        pytest.param([VectorDocument(42, "text")], id="non-string-id"),  # type: ignore[arg-type]
        pytest.param([doc("a", "")], id="empty-text"),
        pytest.param([doc("a", "   ")], id="blank-text"),
        pytest.param([doc("a", "é" * 50_001)], id="text-over-100kb"),
        pytest.param([doc("a", "!!! ???")], id="text-without-words"),
        pytest.param([doc("a", "bad \ud800 text")], id="text-lone-surrogate"),
        pytest.param([doc("a", "text", note="\udfff")], id="metadata-lone-surrogate"),
        pytest.param([VectorDocument("a", "text", ["not", "a", "dict"])], id="metadata-not-a-dict"),  # type: ignore[arg-type]
        pytest.param([VectorDocument("a", "text", {1: "int key"})], id="metadata-int-key"),  # type: ignore[dict-item]
        pytest.param([doc("a", "text", when=object())], id="metadata-not-json"),
        pytest.param([doc("a", "text", x=float("nan"))], id="metadata-nan"),
        pytest.param([doc("a", "text", blob="x" * 16_400)], id="metadata-over-16kib"),
        pytest.param([doc("a", "one"), doc("a", "two")], id="duplicate-id"),
        pytest.param([doc(f"d{i}", "t") for i in range(1001)], id="batch-over-1000"),
        pytest.param(doc("a", "text"), id="bare-document"),
        pytest.param(["a"], id="not-documents"),
    ],
)
async def test_invalid_documents_are_refused_and_nothing_is_written(scopes: VectorScopes, documents: Any) -> None:
    vectors = scopes.for_tenant("acme")
    await vectors.upsert([doc("keep", "already here")])
    with pytest.raises(UsageError):
        await vectors.upsert(documents)
    assert await vectors.count() == 1


@pytest.mark.parametrize("limit", [0, -1, 101, True, 2.5])
async def test_invalid_limits_are_refused(scopes: VectorScopes, limit: Any) -> None:
    with pytest.raises(UsageError, match="limit"):
        await scopes.for_tenant("acme").search("text", limit=limit)


@pytest.mark.parametrize("query", ["", "  ", "?!", "x" * 100_001, "lone \ud800 surrogate"])
async def test_invalid_queries_are_refused(scopes: VectorScopes, query: str) -> None:
    with pytest.raises(UsageError):
        await scopes.for_tenant("acme").search(query)


@pytest.mark.parametrize("ids", ["a-bare-string", ["x" * 257], [""], [None], ["ok"] * 1001])
async def test_invalid_ids_for_delete_are_refused(scopes: VectorScopes, ids: Any) -> None:
    vectors = scopes.for_tenant("acme")
    await vectors.upsert([doc("a", "alpha")])
    with pytest.raises(UsageError):
        await vectors.delete(ids)
    assert await vectors.count() == 1


@pytest.mark.parametrize("tenant_id", ["", "Globex", "../globex", "globex/..", "acme_evil", "-acme", "a" * 64])
def test_invalid_tenant_ids_get_no_handle(scopes: VectorScopes, tenant_id: str) -> None:
    with pytest.raises(UsageError):
        scopes.for_tenant(tenant_id)


async def test_a_store_refuses_another_embedder(opener: Opener) -> None:
    first = opener(HashingEmbedder(384))
    await first.for_tenant("acme").upsert([doc("a", "alpha")])
    first.close()
    second = opener(HashingEmbedder(64))
    with pytest.raises(StorageError, match="embedder"):
        await second.for_tenant("acme").count()


async def test_documents_survive_reopening(opener: Opener) -> None:
    first = opener()
    await first.for_tenant("acme").upsert([doc("a", "durable invoice note")])
    first.close()
    [match] = await opener().for_tenant("acme").search("invoice")
    assert match.id == "a"


async def test_a_failing_embedder_is_a_storage_error(opener: Opener) -> None:
    class Broken:
        name = "hashing-v1-384"
        dimensions = 384

        def embed(self, texts: Any) -> list[list[float]]:
            raise RuntimeError("model crashed on 'secret text'")

    with pytest.raises(StorageError, match="embedder") as caught:
        await opener(Broken()).for_tenant("acme").upsert([doc("a", "secret text")])
    assert "secret text" not in str(caught.value)


# -- tenant isolation -----------------------------------------------------------------------

ACME_DOCS = [
    doc("a-1", "acme quarterly sales report", owner="acme"),
    doc("a-2", "acme office move to the new building", owner="acme"),
    doc("shared-id", "acme's own document with a common id", owner="acme"),
]
GLOBEX_DOCS = [
    doc("g-1", CANARY_TEXT, owner="globex"),
    doc("shared-id", "globex-canary hidden under a common id", owner="globex"),
    doc("g-only", "globex-canary that only globex has", owner="globex"),
]


@pytest.fixture
async def two_tenants(scopes: VectorScopes) -> VectorScopes:
    await scopes.for_tenant("acme").upsert(ACME_DOCS)
    await scopes.for_tenant("globex").upsert(GLOBEX_DOCS)
    await scopes.for_tenant("globex").upsert([doc("p-1", CANARY_TEXT)], collection="globex_private")
    return scopes


def _leaks(matches: list[Any]) -> list[Any]:
    return [m for m in matches if "globex" in m.text or m.metadata.get("owner") == "globex"]


async def test_positive_control_globex_finds_its_own_canary(two_tenants: VectorScopes) -> None:
    globex = two_tenants.for_tenant("globex")
    matches = await globex.search(CANARY_TEXT, limit=1)
    assert [(m.id, m.text) for m in matches] == [("g-1", CANARY_TEXT)]
    assert [m.id for m in await globex.search(CANARY_TEXT, collection="globex_private")] == ["p-1"]
    assert await globex.count() == 3


@pytest.mark.parametrize("query", [CANARY_TEXT, "globex-canary", "globex", "merger initech bluebird"])
async def test_search_never_returns_another_tenants_documents(two_tenants: VectorScopes, query: str) -> None:
    matches = await two_tenants.for_tenant("acme").search(query, limit=100)
    assert _leaks(matches) == []
    assert {m.id for m in matches} == {"a-1", "a-2", "shared-id"}


async def test_the_tenant_filter_is_applied_inside_the_store(two_tenants: VectorScopes) -> None:
    """With limit=1, a filter applied to results afterwards would leave nothing (globex's doc is
    the global best); a filter inside the store yields acme's own best document instead."""
    [match] = await two_tenants.for_tenant("acme").search(CANARY_TEXT, limit=1)
    assert match.id in {"a-1", "a-2", "shared-id"}
    assert match.score < 0.9


async def test_another_tenants_collection_name_reaches_nothing(two_tenants: VectorScopes) -> None:
    acme = two_tenants.for_tenant("acme")
    assert await acme.search(CANARY_TEXT, collection="globex_private") == []
    assert await acme.count(collection="globex_private") == 0
    assert await acme.delete(["p-1"], collection="globex_private") == 0
    assert await two_tenants.for_tenant("globex").count(collection="globex_private") == 1


async def test_deleting_another_tenants_ids_deletes_nothing(two_tenants: VectorScopes) -> None:
    acme = two_tenants.for_tenant("acme")
    assert await acme.delete(["g-1", "g-only", "p-1"]) == 0
    assert await acme.delete(["shared-id"]) == 1  # acme's own document with that id
    globex = two_tenants.for_tenant("globex")
    assert await globex.count() == 3
    assert {m.id for m in await globex.search("globex-canary", limit=10)} == {"g-1", "shared-id", "g-only"}


async def test_the_same_id_in_two_tenants_never_collides(two_tenants: VectorScopes) -> None:
    await two_tenants.for_tenant("acme").upsert([doc("shared-id", "acme overwrote its own copy")])
    await two_tenants.for_tenant("acme").upsert([doc("g-1", "acme reuses globex's id")])
    globex = two_tenants.for_tenant("globex")
    texts = {m.id: m.text for m in await globex.search("globex-canary", limit=10)}
    assert texts["shared-id"] == "globex-canary hidden under a common id"
    assert texts["g-1"] == CANARY_TEXT
    assert await globex.count() == 3
    assert await two_tenants.for_tenant("acme").count() == 4


async def test_count_sees_only_the_own_tenant(two_tenants: VectorScopes) -> None:
    assert await two_tenants.for_tenant("acme").count() == 3
    assert await two_tenants.for_tenant("initech").count() == 0
    assert await two_tenants.for_tenant("initech").search(CANARY_TEXT) == []


async def test_drop_tenant_removes_only_that_tenant(two_tenants: VectorScopes) -> None:
    two_tenants.drop_tenant("globex")
    globex = two_tenants.for_tenant("globex")
    assert await globex.count() == 0
    assert await globex.count(collection="globex_private") == 0
    assert await globex.search(CANARY_TEXT) == []
    assert await two_tenants.for_tenant("acme").count() == 3


# -- sqlite-vec specifics ---------------------------------------------------------------------


async def test_sqlite_keeps_each_tenant_in_its_own_file(tmp_path: Path) -> None:
    scopes = SqliteVectorScopes(tmp_path, HashingEmbedder())
    await scopes.for_tenant("acme").upsert(ACME_DOCS)
    await scopes.for_tenant("globex").upsert(GLOBEX_DOCS)
    scopes.close()
    acme_dir = tenant_vectors_path(tmp_path, "acme").parent
    acme_bytes = b"".join(p.read_bytes() for p in acme_dir.iterdir() if p.is_file())
    assert b"acme quarterly" in acme_bytes
    assert b"globex-canary" not in acme_bytes
    scopes.drop_tenant("acme")
    assert not tenant_vectors_path(tmp_path, "acme").exists()
    assert tenant_vectors_path(tmp_path, "globex").exists()


async def test_sqlite_filters_by_tenant_even_inside_the_tenants_file(tmp_path: Path) -> None:
    """A row tagged with another tenant (a file copied to the wrong place, a bug) is never returned."""
    scopes = SqliteVectorScopes(tmp_path, HashingEmbedder())
    acme = scopes.for_tenant("acme")
    await acme.upsert(ACME_DOCS)
    scopes.close()

    conn = apsw.Connection(str(tenant_vectors_path(tmp_path, "acme")))
    conn.enable_load_extension(True)
    conn.load_extension(sqlite_vec.loadable_path())
    [(vector,)] = conn.execute("SELECT embedding FROM vec_1 LIMIT 1").fetchall()
    with conn:
        conn.execute("INSERT INTO collections (tenant_id, name) VALUES ('globex', 'default')")
        for collection_id in (1, 2):
            rowid = conn.execute(
                "INSERT INTO documents (tenant_id, collection_id, doc_id, text, metadata)"
                " VALUES ('globex', ?, ?, ?, '{}') RETURNING id",
                (collection_id, f"planted-{collection_id}", CANARY_TEXT),
            ).fetchall()[0][0]
            conn.execute("INSERT INTO vec_1 (rowid, tenant_id, embedding) VALUES (?, 'globex', ?)", (rowid, vector))
    conn.close()

    matches = await acme.search(CANARY_TEXT, limit=100)
    assert _leaks(matches) == []
    assert len(matches) == 3
    assert await acme.count() == 3
    assert await acme.delete(["planted-1", "planted-2"]) == 0
    scopes.close()


# -- Qdrant specifics -----------------------------------------------------------------------


async def test_qdrant_points_carry_the_tenant_and_an_unfiltered_search_would_leak(tmp_path: Path) -> None:
    scopes = QdrantVectorScopes(HashingEmbedder(), url=None, path=tmp_path / "qdrant", collection="shared")
    await scopes.for_tenant("acme").upsert(ACME_DOCS)
    await scopes.for_tenant("globex").upsert(GLOBEX_DOCS)
    [scoped] = await scopes.for_tenant("acme").search(CANARY_TEXT, limit=1)
    scopes.close()

    raw = QdrantClient(path=str(tmp_path / "qdrant"))
    try:
        points, _ = raw.scroll("shared", limit=100, with_payload=True)
        assert len(points) == 6
        for point in points:
            payload = point.payload or {}
            assert payload["tenant_id"] in {"acme", "globex"}
            assert point.id == point_id(payload["tenant_id"], payload["collection"], payload["doc_id"])
        [unscoped] = raw.query_points(
            "shared", query=HashingEmbedder().embed([CANARY_TEXT])[0], limit=1, with_payload=True
        ).points
    finally:
        raw.close()
    # Without the tenant filter the best point is globex's canary; the handle returned acme's own best.
    assert (unscoped.payload or {})["tenant_id"] == "globex"
    assert (unscoped.payload or {})["doc_id"] == "g-1"
    assert scoped.id != "g-1"
    assert scoped.score < unscoped.score


def test_qdrant_point_ids_differ_per_tenant_and_collection() -> None:
    ids = {point_id(t, c, "shared-id") for t in ("acme", "globex") for c in ("default", "other")}
    assert len(ids) == 4
    assert point_id("acme", "a", "b") != point_id("acme", 'a", "b', "")


async def test_qdrant_many_tenants_each_see_only_their_own_document(tmp_path: Path) -> None:
    scopes = QdrantVectorScopes(HashingEmbedder(), url=None, path=tmp_path / "qdrant", collection="shared")
    tenants = [f"tenant-{i:03d}" for i in range(200)]
    try:
        for tenant in tenants:
            await scopes.for_tenant(tenant).upsert([doc("doc", f"{tenant} canary secret for {tenant}")])
        for i, tenant in enumerate(tenants):
            neighbour = tenants[(i + 1) % len(tenants)]
            matches = await scopes.for_tenant(tenant).search(f"{neighbour} canary secret for {neighbour}", limit=100)
            assert [(m.id, m.text) for m in matches] == [("doc", f"{tenant} canary secret for {tenant}")]
        assert await scopes.for_tenant("tenant-007").count() == 1
        scopes.drop_tenant("tenant-007")
        assert await scopes.for_tenant("tenant-007").count() == 0
        assert await scopes.for_tenant("tenant-008").count() == 1
    finally:
        scopes.close()


@pytest.mark.filterwarnings("ignore:unclosed file:ResourceWarning")  # qdrant-client leaves its lock file open
async def test_qdrant_local_path_is_for_one_process_only(tmp_path: Path) -> None:
    first = QdrantVectorScopes(HashingEmbedder(), url=None, path=tmp_path / "qdrant", collection="shared")
    try:
        with pytest.raises(StorageError, match="cannot open"):
            QdrantVectorScopes(HashingEmbedder(), url=None, path=tmp_path / "qdrant", collection="shared")
    finally:
        first.close()


def test_qdrant_needs_exactly_one_of_url_and_path(tmp_path: Path) -> None:
    with pytest.raises(UsageError):
        QdrantVectorScopes(HashingEmbedder(), url=None, path=None)
    with pytest.raises(UsageError):
        QdrantVectorScopes(HashingEmbedder(), url="http://127.0.0.1:6333", path=tmp_path)


# -- factory ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "kind"),
    [
        (VectorSettings(), SqliteVectorScopes),
        (VectorSettings(backend="qdrant"), QdrantVectorScopes),
    ],
)
async def test_factory_opens_the_configured_backend(tmp_path: Path, settings: VectorSettings, kind: type) -> None:
    scopes = open_vector_scopes(settings, tmp_path)
    try:
        assert isinstance(scopes, kind)
        await scopes.for_tenant("acme").upsert([doc("a", "factory made")])
        assert await scopes.for_tenant("acme").count() == 1
    finally:
        scopes.close()
    if kind is QdrantVectorScopes:
        assert (tmp_path / "vectors" / "qdrant").is_dir()


def test_factory_refuses_an_unloadable_embedder(tmp_path: Path) -> None:
    with pytest.raises(UsageError):
        open_vector_scopes(VectorSettings(embedder="no_such_module_xyz:Thing"), tmp_path)


async def test_an_embedded_vector_store_stops_growing_at_its_vector_bytes_and_another_does_not(tmp_path: Path) -> None:
    from dataclasses import replace

    from tenantry.core.errors import StorageQuotaExceeded
    from tenantry.core.limits import TenantLimits
    from tenantry.scoping.threads import ThreadBulkheads

    limits = {"acme": replace(TenantLimits(), vector_bytes=6_000_000), "globex": replace(TenantLimits())}
    scopes = SqliteVectorScopes(
        tmp_path, HashingEmbedder(), bulkheads=ThreadBulkheads(lambda tenant_id: limits[tenant_id])
    )
    acme, globex = scopes.for_tenant("acme"), scopes.for_tenant("globex")
    batch = [doc(f"d{n}", f"document {n} " + "x" * 20_000) for n in range(10)]
    with pytest.raises(StorageQuotaExceeded, match=r"at its 6000000 byte limit \(vector_bytes\)"):
        for round_ in range(100):
            await acme.upsert([doc(f"r{round_}-{d.id}", d.text) for d in batch])
    stored = await acme.count()
    assert 0 < stored < 1000
    assert tenant_vectors_path(tmp_path, "acme").stat().st_size <= 6_000_000
    assert await globex.upsert(batch) == 10  # the control: another tenant's own quota
    assert await acme.delete([f"r0-d{n}" for n in range(10)]) == 10  # deleting makes room again
    assert await acme.upsert(batch[:3]) == 3
    limits["acme"] = replace(limits["acme"], vector_bytes=10**8)  # a raised quota applies at once
    assert await acme.upsert([doc(f"big{n}", "y" * 20_000) for n in range(40)]) == 40
    scopes.close()


async def test_a_vector_chunk_past_vector_bytes_is_a_quota_refusal_not_a_store_failure(tmp_path: Path) -> None:
    from dataclasses import replace

    from tenantry.core.errors import StorageQuotaExceeded
    from tenantry.core.limits import TenantLimits
    from tenantry.scoping.threads import ThreadBulkheads

    limits = {"acme": replace(TenantLimits(), vector_bytes=2_000_000), "globex": replace(TenantLimits())}
    scopes = SqliteVectorScopes(
        tmp_path, HashingEmbedder(), bulkheads=ThreadBulkheads(lambda tenant_id: limits[tenant_id])
    )
    acme, globex = scopes.for_tenant("acme"), scopes.for_tenant("globex")
    # Small documents in new collections: what fails is sqlite-vec allocating a chunk (its SQLError).
    with pytest.raises(StorageQuotaExceeded, match=r"at its 2000000 byte limit \(vector_bytes\)"):
        for n in range(100):
            await acme.upsert([doc("d", "small")], collection=f"c{n}")
    assert tenant_vectors_path(tmp_path, "acme").stat().st_size <= 2_000_000
    for n in range(12):  # the control: another tenant with room allocates the same chunks
        assert await globex.upsert([doc("d", "small")], collection=f"c{n}") == 1
    assert await acme.upsert([doc("d", "rewritten")], collection="c0") == 1  # an existing chunk still takes writes
    scopes.close()
