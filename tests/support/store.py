"""Making an empty Tenantry store in-process, for tests that drive the CLI before any server ran.

Every command but ``tenantry serve`` refuses a data dir without a store (a mistyped path must
never silently become a new, empty deployment), so such tests create one first, as a server
would at its first start.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from tenantry.core.settings import load_settings
from tenantry.runtime import Runtime


def init_store(data_dir: Path) -> Path:
    Runtime(load_settings(data_dir=data_dir), create=True).close()
    return data_dir


def copy_store(template: Path, data_dir: Path) -> Path:
    """A fresh copy of the store at ``template``, for a test of its own.

    A module builds its starting store once (``init_store``, then the CLI) and each test gets a
    copy: the same files a test would have made for itself, without the CLI runs. No process may
    have ``template`` open (its SQLite files are copied as they are on disk).
    """
    shutil.copytree(template, data_dir)
    return data_dir
