from __future__ import annotations

import hashlib
from pathlib import Path

from app.blobs.store import LocalBlobStore


def _spooled(folder: Path, name: str, data: bytes) -> tuple[Path, str]:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(data)
    return path, hashlib.sha256(data).hexdigest()


async def test_adopted_files_are_moved_into_place_and_read_back(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "blobs")
    spool = tmp_path / "blobs" / "tmp" / "form-1"
    files = [_spooled(spool, f"{i}.part", f"attachment {i}".encode() * 1000) for i in range(3)]
    await store.adopt_files(files)
    for (source, sha256), i in zip(files, range(3), strict=True):
        assert not source.exists()  # taken over, not copied
        assert await store.read_all(sha256) == f"attachment {i}".encode() * 1000


async def test_a_blob_already_stored_is_kept_and_the_spooled_copy_left(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "blobs")
    data = b"same bytes"
    sha256 = await store.put_bytes(data)
    source, digest = _spooled(tmp_path / "blobs" / "tmp" / "form-2", "0.part", data)
    assert digest == sha256
    await store.adopt_files([(source, digest), (source, digest)])
    assert source.exists()  # left for the form's clean-up
    assert await store.read_all(sha256) == data


async def test_adopting_nothing_does_nothing(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "blobs")
    await store.adopt_files([])
    assert not (tmp_path / "blobs").exists()
