from __future__ import annotations

import asyncio
import hashlib
import math
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from app.blobs import s3 as s3_store
from app.blobs.factory import create_blob_store
from app.blobs.s3 import S3BlobStore
from app.blobs.store import BlobStore, BlobStoreUnavailable, LocalBlobStore
from app.config import Settings
from app.inbound.failures import is_infrastructure_error
from tests import s3


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


# --- both stores, through the same interface ------------------------------------------------


@pytest.fixture(params=s3.KINDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[BlobStore]:
    """The store the settings choose: the local folder, or a prefix of the test S3 bucket."""
    blob_dir = tmp_path / "blobs"
    values = s3.settings_for(blob_dir) if request.param == "s3" else {}
    blobs = create_blob_store(
        Settings(_env_file=None, environment="test", blob_dir=blob_dir, **values)
    )
    await blobs.start()
    try:
        yield blobs
    finally:
        await blobs.close()


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def _all_keys(store: BlobStore) -> list[str]:
    return sorted([key async for key in store.keys_modified_before(time.time() + 60)])


class TestEitherStore:
    async def test_bytes_are_stored_under_their_digest_and_read_back(
        self, store: BlobStore
    ) -> None:
        data = b"an attachment"
        sha256 = await store.put_bytes(data)
        assert sha256 == _digest(data)
        assert await store.exists(sha256)
        assert await store.size(sha256) == len(data)
        assert await store.read_all(sha256) == data

    async def test_a_second_put_of_the_same_bytes_is_harmless(self, store: BlobStore) -> None:
        first = await store.put_bytes(b"twice")
        assert await store.put_bytes(b"twice") == first
        assert await store.read_all(first) == b"twice"
        assert await _all_keys(store) == [first]

    async def test_put_file_computes_the_digest_and_keeps_the_file(
        self, store: BlobStore, tmp_path: Path
    ) -> None:
        path = tmp_path / "part"
        path.write_bytes(b"x" * 300_000)
        sha256 = await store.put_file(path)
        assert sha256 == _digest(b"x" * 300_000)
        assert path.exists()  # a copy, not taken over
        assert await store.read_all(sha256) == b"x" * 300_000

    async def test_adopted_files_can_be_read_and_adopting_again_is_harmless(
        self, store: BlobStore, tmp_path: Path
    ) -> None:
        spool = tmp_path / "blobs" / "tmp" / "form-1"
        files = [_spooled(spool, f"{i}.part", f"part {i}".encode() * 5000) for i in range(3)]
        await store.adopt_files([*files, files[0]])  # one file named twice
        for (_, sha256), i in zip(files, range(3), strict=True):
            assert await store.read_all(sha256) == f"part {i}".encode() * 5000
        again = [_spooled(spool, "again.part", b"part 0" * 5000)]
        await store.adopt_files(again)
        assert await store.read_all(again[0][1]) == b"part 0" * 5000
        assert len(await _all_keys(store)) == 3

    async def test_reading_streams_in_chunks(self, store: BlobStore) -> None:
        data = bytes(range(256)) * 4096  # 1 MiB
        sha256 = await store.put_bytes(data)
        chunks = [chunk async for chunk in store.read(sha256, chunk_size=64 * 1024)]
        assert len(chunks) >= 16
        assert max(len(chunk) for chunk in chunks) <= 64 * 1024
        assert b"".join(chunks) == data

    async def test_a_missing_blob_is_missing_everywhere(self, store: BlobStore) -> None:
        sha256 = _digest(b"never stored")
        assert not await store.exists(sha256)
        assert await store.size(sha256) is None
        with pytest.raises(FileNotFoundError):
            await anext(store.read(sha256))
        with pytest.raises(FileNotFoundError):
            await store.read_all(sha256)
        await store.delete(sha256)  # nothing to delete: no error
        assert not await store.delete_if_modified_before(sha256, time.time() + 60)

    async def test_listing_by_age_and_deleting_only_what_is_still_old(
        self, store: BlobStore
    ) -> None:
        old = await store.put_bytes(b"old")
        renewed = await store.put_bytes(b"stored again")
        cutoff = await _past_a_whole_second()
        young = await store.put_bytes(b"young")
        assert sorted([k async for k in store.keys_modified_before(cutoff)]) == sorted(
            [old, renewed]
        )
        assert [k async for k in store.keys_modified_before(cutoff - 3600)] == []
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(s3_store, "REFRESH_SECONDS", 0)  # renew whatever is there
            await store.put_bytes(b"stored again")  # listed as old, then stored again
        assert await store.delete_if_modified_before(old, cutoff)
        assert not await store.delete_if_modified_before(renewed, cutoff)
        assert not await store.delete_if_modified_before(young, cutoff)
        assert await _all_keys(store) == sorted([renewed, young])
        await store.delete(young)
        assert await _all_keys(store) == [renewed]

    async def test_the_store_answers_its_readiness_check(self, store: BlobStore) -> None:
        await store.check()


async def _past_a_whole_second() -> float:
    """The next whole second, once passed (S3 keeps modification times in whole seconds)."""
    boundary = math.floor(time.time()) + 1
    await asyncio.sleep(boundary - time.time() + 0.05)
    return boundary


# --- S3 only ----------------------------------------------------------------------------------


@pytest.fixture
async def s3_blobs(tmp_path: Path) -> AsyncIterator[S3BlobStore]:
    blobs = S3BlobStore(
        s3.BUCKET,
        s3.prefix_for(tmp_path),
        spool_root=tmp_path,
        endpoint_url=s3.endpoint(),
        part_size=5 * 1024 * 1024,  # S3's smallest part
    )
    try:
        yield blobs
    finally:
        await blobs.close()


class TestS3:
    async def test_a_large_file_goes_up_in_parts_and_comes_back_whole(
        self, s3_blobs: S3BlobStore, tmp_path: Path
    ) -> None:
        path = tmp_path / "large.bin"
        data = os.urandom(11 * 1024 * 1024)
        path.write_bytes(data)
        sha256 = await s3_blobs.put_file(path, _digest(data))
        assert s3.head(s3_blobs.key(sha256))["ETag"].endswith('-3"')  # 5 + 5 + 1 MiB
        assert await s3_blobs.size(sha256) == len(data)
        assert await s3_blobs.read_all(sha256) == data

    async def test_a_spooled_file_that_does_not_match_its_digest_is_not_stored(
        self, s3_blobs: S3BlobStore, tmp_path: Path
    ) -> None:
        path = tmp_path / "changed.bin"
        path.write_bytes(b"a" * (6 * 1024 * 1024))
        claimed = _digest(b"something else")
        with pytest.raises(ValueError, match="changed"):
            await s3_blobs.put_file(path, claimed)
        assert not await s3_blobs.exists(claimed)

    async def test_adopted_files_are_uploaded_then_removed_from_the_spool(
        self, s3_blobs: S3BlobStore, tmp_path: Path
    ) -> None:
        spool = tmp_path / "tmp" / "form-1"
        files = [_spooled(spool, f"{i}.part", f"attachment {i}".encode()) for i in range(5)]
        await s3_blobs.adopt_files(files)
        assert not any(path.exists() for path, _ in files)
        for path, sha256 in files:
            assert await s3_blobs.read_all(sha256) == f"attachment {path.stem}".encode()

    async def test_only_digests_under_its_own_prefix_are_listed(
        self, s3_blobs: S3BlobStore, tmp_path: Path
    ) -> None:
        ours = await s3_blobs.put_bytes(b"ours")
        s3.put_foreign(f"{s3_blobs.prefix}/README.txt", b"not a blob")
        s3.put_foreign(f"{s3_blobs.prefix}/nested/{_digest(b'x')}", b"x")
        s3.put_foreign(f"{s3.prefix_for(tmp_path / 'other')}/{_digest(b'y')}", b"y")
        assert [k async for k in s3_blobs.keys_modified_before(time.time() + 60)] == [ours]

    async def test_a_presigned_url_serves_the_bytes_with_the_given_headers(
        self, s3_blobs: S3BlobStore
    ) -> None:
        sha256 = await s3_blobs.put_bytes(b"<svg onload=alert(1)>")
        url = await s3_blobs.presigned_url(
            sha256,
            content_type="application/octet-stream",
            content_disposition="attachment; filename=\"x.svg\"; filename*=UTF-8''x.svg",
            cache_control="private, max-age=60",
            expires_in=60,
        )
        assert url is not None
        async with httpx.AsyncClient() as client:
            r = await client.get(url)
            assert r.status_code == 200
            assert r.content == b"<svg onload=alert(1)>"
            assert r.headers["content-type"] == "application/octet-stream"
            assert r.headers["content-disposition"].startswith("attachment;")
            assert r.headers["cache-control"] == "private, max-age=60"
            unsigned = await client.get(url.split("?")[0])
            assert unsigned.status_code == 403

    async def test_an_unreachable_store_is_an_infrastructure_failure_until_it_is_back(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")  # the same failures, without the SDK's retries
        async with s3.Outage() as outage:
            blobs = S3BlobStore(
                s3.BUCKET, s3.prefix_for(tmp_path), spool_root=tmp_path, endpoint_url=outage.url
            )
            try:
                sha256 = await blobs.put_bytes(b"kept")
                await outage.cut()
                failures = [
                    blobs.put_bytes(b"new"),
                    blobs.size(sha256),
                    blobs.read_all(sha256),
                    blobs.check(),
                ]
                for call in failures:
                    with pytest.raises(BlobStoreUnavailable) as caught:
                        await call
                    assert is_infrastructure_error(caught.value)
                await outage.restore()
                await blobs.check()
                assert await blobs.read_all(sha256) == b"kept"
                assert await blobs.read_all(await blobs.put_bytes(b"new")) == b"new"
            finally:
                await blobs.close()

    async def test_a_local_store_has_no_presigned_urls(self, tmp_path: Path) -> None:
        local = LocalBlobStore(tmp_path)
        sha256 = await local.put_bytes(b"x")
        url = await local.presigned_url(
            sha256,
            content_type="text/plain",
            content_disposition="attachment",
            cache_control="private",
            expires_in=60,
        )
        assert url is None
