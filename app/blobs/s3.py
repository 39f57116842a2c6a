"""S3-compatible object storage for blobs (AWS S3, MinIO, Ceph, R2…), through aiobotocore.

Blobs are objects ``<prefix>/<sha256>`` of one bucket. A put first asks whether the object is
there (HEAD): if so, nothing is uploaded (puts are idempotent by content), and an object last
written more than ``REFRESH_SECONDS`` ago is copied onto itself, which renews its
``LastModified`` so that the cleanup's grace period protects it again (``app.maintenance``).
Otherwise the bytes are streamed from the spooled file: one PUT up to ``part_size`` bytes (the
file object is read in a worker thread by the HTTP client, never whole in memory), a multipart
upload above it (one part in memory at a time). Each upload carries its integrity check (the
SHA-256 of a single PUT, the MD5 of each part; a multipart upload's SHA-256 is checked here
before it is completed), and a put returns once S3 has answered it: the object is durable.

Every failure of the store (unreachable, timeouts, credentials, a missing bucket, server
errors) raises ``BlobStoreUnavailable``: inbound answers 503 and the provider retries.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack, contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Literal

import aiohttp
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import BotoCoreError, ClientError

from app.blobs.store import CHUNK, BlobStoreUnavailable, is_digest, valid_digest

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client
    from types_aiobotocore_s3.type_defs import CompletedPartTypeDef, HeadObjectOutputTypeDef

PART_SIZE = 8 * 1024 * 1024
"""Files larger than this go up in a multipart upload, in parts of this size (S3's minimum part
is 5 MiB)."""
REFRESH_SECONDS = 300
"""A put of a blob written longer ago than this renews its ``LastModified`` (a server-side copy
onto itself, no bytes sent); the cleanup's grace period must be well above it."""
CONCURRENT_UPLOADS = 4
"""Attachments of one mail uploaded at once."""
CONTENT_TYPE = "application/octet-stream"  # the API serves the type recorded with the row

_STORE_ERRORS = (BotoCoreError, ClientError, aiohttp.ClientError, TimeoutError)

AddressingStyle = Literal["auto", "path", "virtual"]


def _status(exc: ClientError) -> int | None:
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return int(status) if status is not None else None


def _missing(exc: ClientError) -> bool:
    code = exc.response.get("Error", {}).get("Code")
    return code in {"404", "NoSuchKey", "NotFound"} or (
        _status(exc) == 404 and code not in {"NoSuchBucket", "NoSuchUpload"}
    )


@contextmanager
def _unavailable(what: str) -> Iterator[None]:
    """Any failure of the store's client becomes ``BlobStoreUnavailable``."""
    try:
        yield
    except _STORE_ERRORS as exc:
        raise BlobStoreUnavailable(f"object store: {what} failed: {exc}") from exc


def _checksum(sha256: str) -> str:
    """``x-amz-checksum-sha256``: the store verifies the bytes it receives against it."""
    return base64.b64encode(bytes.fromhex(sha256)).decode()


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _read_part(f: BinaryIO, size: int, digest: Any) -> tuple[bytes, str]:
    """The next part of a file, with its Content-MD5; the file's SHA-256 is updated."""
    data = f.read(size)
    digest.update(data)
    return data, base64.b64encode(hashlib.md5(data, usedforsecurity=False).digest()).decode()


def _remove(paths: list[Path]) -> None:
    for path in paths:
        path.unlink(missing_ok=True)


class S3BlobStore:
    """One bucket and prefix; one client, opened in the app's lifespan (or on first use)."""

    def __init__(
        self,
        bucket: str,
        prefix: str,
        *,
        spool_root: Path,
        endpoint_url: str | None = None,
        addressing_style: AddressingStyle | None = None,
        part_size: int = PART_SIZE,
    ) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.tmp_dir = spool_root / "tmp"
        self.endpoint_url = endpoint_url
        # A custom endpoint (MinIO, Ceph…) is most often reached by path: http://host:9000/bucket
        self.addressing_style: AddressingStyle = addressing_style or (
            "path" if endpoint_url else "auto"
        )
        self.part_size = part_size
        self._client: S3Client | None = None
        self._stack: AsyncExitStack | None = None
        self._opening: asyncio.Lock | None = None

    def __repr__(self) -> str:
        where = f" at {self.endpoint_url}" if self.endpoint_url else ""
        return f"S3BlobStore(s3://{self.bucket}/{self.prefix}{where})"

    def key(self, sha256: str) -> str:
        valid_digest(sha256)
        return f"{self.prefix}/{sha256}" if self.prefix else sha256

    # --- the client ------------------------------------------------------------------------

    async def start(self) -> None:
        await self._connect()

    async def close(self) -> None:
        stack, self._stack, self._client = self._stack, None, None
        if stack is not None:
            await stack.aclose()

    async def _connect(self) -> S3Client:
        if self._client is not None:
            return self._client
        if self._opening is None:
            self._opening = asyncio.Lock()
        async with self._opening:
            if self._client is not None:  # opened while this one waited
                return self._client
            config = AioConfig(
                connect_timeout=5,
                read_timeout=60,
                retries={"mode": "standard"},  # attempts: AWS_MAX_ATTEMPTS, else 3
                max_pool_connections=32,
                signature_version="s3v4",  # presigned URLs too (some services know no other)
                s3={"addressing_style": self.addressing_style},
                # We send our own checksums (SHA-256, MD5); the SDK's default CRC trailers are
                # refused by some S3-compatible services.
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
            )
            stack = AsyncExitStack()
            with _unavailable("opening the client"):
                # Region and credentials: the standard AWS variables and credential chain.
                client = await stack.enter_async_context(
                    get_session().create_client("s3", endpoint_url=self.endpoint_url, config=config)
                )
            self._client, self._stack = client, stack
            return client

    # --- writing ---------------------------------------------------------------------------

    async def put_bytes(self, data: bytes) -> str:
        if len(data) > CHUNK:  # hashing megabytes off the event loop
            sha256 = await asyncio.to_thread(lambda: hashlib.sha256(data).hexdigest())
        else:
            sha256 = hashlib.sha256(data).hexdigest()

        async def upload() -> None:
            client = await self._connect()
            with _unavailable("PUT"):
                await client.put_object(
                    Bucket=self.bucket,
                    Key=self.key(sha256),
                    Body=data,
                    ContentLength=len(data),
                    ContentType=CONTENT_TYPE,
                    ChecksumSHA256=_checksum(sha256),
                )

        await self._store(sha256, len(data), upload)
        return sha256

    async def put_file(self, path: Path, sha256: str | None = None) -> str:
        """Store a copy of a file's bytes (``sha256``: the digest it must have; computed from
        the file first when not given, since it names the object)."""
        size = (await asyncio.to_thread(path.stat)).st_size
        if sha256 is None:
            sha256 = await asyncio.to_thread(_file_digest, path)
        digest = sha256
        await self._store(digest, size, lambda: self._upload_file(path, digest, size))
        return digest

    async def adopt_files(self, files: list[tuple[Path, str]]) -> None:
        """Upload complete files whose digests are known (``(path, sha256)``), a few at once,
        then remove them: they are in the store."""
        if not files:
            return
        first: dict[str, Path] = {}
        for path, sha256 in files:
            first.setdefault(sha256, path)
        limit = asyncio.Semaphore(CONCURRENT_UPLOADS)

        async def one(sha256: str, path: Path) -> None:
            async with limit:
                await self.put_file(path, sha256)

        try:
            async with asyncio.TaskGroup() as group:
                for sha256, path in first.items():
                    group.create_task(one(sha256, path))
        except BaseExceptionGroup as failures:
            raise failures.exceptions[0] from None  # what failed first, as itself
        await asyncio.to_thread(_remove, [path for path, _ in files])

    async def _store(self, sha256: str, size: int, upload: Callable[[], Awaitable[None]]) -> None:
        """Upload unless the object is there; renew an old one's ``LastModified``."""
        head = await self._head(sha256)
        if head is not None and head["ContentLength"] == size:
            if time.time() - head["LastModified"].timestamp() < REFRESH_SECONDS:
                return
            if await self._renew(sha256):
                return
        await upload()

    async def _renew(self, sha256: str) -> bool:
        """Copy the object onto itself (no bytes sent): its ``LastModified`` becomes now.
        False when it vanished meanwhile (the caller uploads it)."""
        client = await self._connect()
        key = self.key(sha256)
        with _unavailable("COPY"):
            try:
                await client.copy_object(
                    Bucket=self.bucket,
                    Key=key,
                    CopySource={"Bucket": self.bucket, "Key": key},
                    MetadataDirective="REPLACE",
                    ContentType=CONTENT_TYPE,
                )
            except ClientError as exc:
                if _missing(exc):
                    return False
                raise
        return True

    async def _upload_file(self, path: Path, sha256: str, size: int) -> None:
        if size > self.part_size:
            await self._upload_parts(path, sha256)
            return
        client = await self._connect()
        f = await asyncio.to_thread(path.open, "rb")
        try:
            with _unavailable("PUT"):
                await client.put_object(
                    Bucket=self.bucket,
                    Key=self.key(sha256),
                    Body=f,
                    ContentLength=size,
                    ContentType=CONTENT_TYPE,
                    ChecksumSHA256=_checksum(sha256),
                )
        finally:
            f.close()

    async def _upload_parts(self, path: Path, sha256: str) -> None:
        """A multipart upload, one part in memory at a time; aborted on any failure."""
        client = await self._connect()
        key = self.key(sha256)
        with _unavailable("starting a multipart upload"):
            started = await client.create_multipart_upload(
                Bucket=self.bucket, Key=key, ContentType=CONTENT_TYPE
            )
        upload_id = started["UploadId"]
        try:
            parts: list[CompletedPartTypeDef] = []
            digest = hashlib.sha256()
            f = await asyncio.to_thread(path.open, "rb")
            try:
                while True:
                    data, md5 = await asyncio.to_thread(_read_part, f, self.part_size, digest)
                    if not data:
                        break
                    number = len(parts) + 1
                    with _unavailable(f"uploading part {number}"):
                        uploaded = await client.upload_part(
                            Bucket=self.bucket,
                            Key=key,
                            UploadId=upload_id,
                            PartNumber=number,
                            Body=data,
                            ContentMD5=md5,
                        )
                    parts.append({"PartNumber": number, "ETag": uploaded["ETag"]})
                    del data
            finally:
                f.close()
            if digest.hexdigest() != sha256:
                raise ValueError("file changed while it was stored")
            with _unavailable("completing a multipart upload"):
                await client.complete_multipart_upload(
                    Bucket=self.bucket,
                    Key=key,
                    UploadId=upload_id,
                    MultipartUpload={"Parts": parts},
                )
        except BaseException:
            with suppress(*_STORE_ERRORS):  # best effort: a lifecycle rule removes the rest
                await client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
            raise

    # --- reading ---------------------------------------------------------------------------

    async def _head(self, sha256: str) -> HeadObjectOutputTypeDef | None:
        client = await self._connect()
        with _unavailable("HEAD"):
            try:
                return await client.head_object(Bucket=self.bucket, Key=self.key(sha256))
            except ClientError as exc:
                if _missing(exc):
                    return None
                raise

    async def exists(self, sha256: str) -> bool:
        return await self._head(sha256) is not None

    async def size(self, sha256: str) -> int | None:
        head = await self._head(sha256)
        return None if head is None else head["ContentLength"]

    async def read(self, sha256: str, chunk_size: int = CHUNK) -> AsyncIterator[bytes]:
        """The bytes as they arrive from the store; ``FileNotFoundError`` when missing."""
        client = await self._connect()
        with _unavailable("GET"):
            try:
                response = await client.get_object(Bucket=self.bucket, Key=self.key(sha256))
            except ClientError as exc:
                if _missing(exc):
                    raise FileNotFoundError(f"no blob {sha256}") from None
                raise
        async with response["Body"] as body:
            while True:
                with _unavailable("reading an object"):
                    chunk = await body.read(chunk_size)
                if not chunk:
                    return
                yield chunk

    async def read_all(self, sha256: str) -> bytes:
        return b"".join([chunk async for chunk in self.read(sha256)])

    # --- deleting and listing --------------------------------------------------------------

    async def delete(self, sha256: str) -> None:
        client = await self._connect()
        with _unavailable("DELETE"):
            await client.delete_object(Bucket=self.bucket, Key=self.key(sha256))

    async def delete_if_modified_before(self, sha256: str, cutoff: float) -> bool:
        head = await self._head(sha256)
        if head is None or head["LastModified"].timestamp() >= cutoff:
            return False
        await self.delete(sha256)
        return True

    async def keys_modified_before(self, cutoff: float) -> AsyncIterator[str]:
        """The bucket listed page by page (1,000 keys each), under the prefix only: objects
        whose names are not digests are not ours and never listed."""
        client = await self._connect()
        folder = f"{self.prefix}/" if self.prefix else ""
        pages = client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=folder, Delimiter="/"
        )
        iterator = aiter(pages)
        while True:
            with _unavailable("listing the bucket"):
                try:
                    page = await anext(iterator)
                except StopAsyncIteration:
                    return
            for item in page.get("Contents", []):
                name = item["Key"][len(folder) :]
                if is_digest(name) and item["LastModified"].timestamp() < cutoff:
                    yield name

    # --- the API's needs -------------------------------------------------------------------

    async def check(self) -> None:
        client = await self._connect()
        with _unavailable("HEAD bucket"):
            await client.head_bucket(Bucket=self.bucket)

    async def presigned_url(
        self,
        sha256: str,
        *,
        content_type: str,
        content_disposition: str,
        cache_control: str,
        expires_in: int,
    ) -> str | None:
        client = await self._connect()
        with _unavailable("presigning a URL"):
            return await client.generate_presigned_url(
                "get_object",
                Params={
                    "Bucket": self.bucket,
                    "Key": self.key(sha256),
                    "ResponseContentType": content_type,
                    "ResponseContentDisposition": content_disposition,
                    "ResponseCacheControl": cache_control,
                },
                ExpiresIn=expires_in,
            )
