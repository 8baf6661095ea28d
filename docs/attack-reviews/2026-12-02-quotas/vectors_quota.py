"""Fill acme's vector store to vector_bytes (2 MiB here) with big documents and new collections;
report the vectors.sqlite3 + -wal sizes and whether the refusal is a clean storage_quota_exceeded."""

from common import Client, du, token

c = Client(token())
for i in range(200):
    ok, res = c.call("vec_upsert", {"prefix": f"d{i}-", "n": 20, "size": 5000, "collection": f"c{i % 7}"})
    if not ok:
        print("refused at batch", i, "->", str(res)[:200])
        break
s = du()
print({k: v for k, v in s.items() if k.startswith("vectors")})
print("after refusal, a small upsert:", c.call("vec_upsert", {"prefix": "small", "n": 1, "size": 1}))
print("globex still writes:", Client(token("globex")).call("vec_upsert", {"prefix": "g", "n": 5, "size": 10}))
for i in range(5):
    print("rewrite", i, c.call("vec_upsert", {"prefix": "d0-", "n": 20, "size": 5000, "collection": "c0"})[0],
          {k: v for k, v in du().items() if k.startswith("vectors")})
