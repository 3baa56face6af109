"""Shared fixtures: an in-memory store, a one-call ingest, and the shared corpora."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from hopguard.ingest.pipeline import FileResult, ingest_file
from hopguard.store import Store

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"


def _corpus(var: str, default: Path) -> Path:
    return Path(os.environ.get(var, str(default)))


PUBLIC_CORPUS = _corpus("HOPGUARD_CORPUS", ROOT.parent / "shared" / "data" / "public")
ENDPOINT_CORPUS = _corpus("HOPGUARD_ENDPOINT_CORPUS", ROOT.parent / "shared" / "data" / "endpoint")


@pytest.fixture
def store() -> Iterator[Store]:
    s = Store.open(":memory:")
    yield s
    s.close()


@pytest.fixture
def ingest(store: Store):  # type: ignore[no-untyped-def]
    """ingest(path, **kw) -> FileResult, into the in-memory store."""

    def run(path: Path | str, **kw: object) -> FileResult:
        kw.setdefault("sensor", "test")
        return ingest_file(store, Path(path), **kw)  # type: ignore[arg-type]

    return run


@pytest.fixture
def public_corpus() -> Path:
    if not PUBLIC_CORPUS.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"public corpus missing at {PUBLIC_CORPUS} (CI must have ../shared)")
        pytest.skip(f"public corpus not found at {PUBLIC_CORPUS} (set HOPGUARD_CORPUS)")
    return PUBLIC_CORPUS


@pytest.fixture
def endpoint_corpus() -> Path:
    if not ENDPOINT_CORPUS.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"endpoint corpus missing at {ENDPOINT_CORPUS} (CI must have ../shared)")
        pytest.skip(f"endpoint corpus not found at {ENDPOINT_CORPUS} "
                    "(set HOPGUARD_ENDPOINT_CORPUS)")
    return ENDPOINT_CORPUS
