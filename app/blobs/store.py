"""Content-addressed blob storage: bytes are named by their SHA-256 and durable before use.

Two stores share one interface: ``LocalBlobStore`` (a folder, the default) and
``app.blobs.s3.S3BlobStore`` (S3-compatible object storage, for several servers).
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import os
import shutil
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Protocol

CHUNK = 1024 * 1024


class BlobStoreUnavailable(ConnectionError):
    """The store cannot be reached, or refused a request (credentials, a missing bucket, a
    server error): an infrastructure failure, like a database down. Inbound answers 503 and the
    provider retries; ``/readyz`` answers 503. A ``ConnectionError``, so that
    ``app.inbound.failures.is_infrastructure_error`` knows it; a blob that is merely missing
    raises ``FileNotFoundError`` instead (or answers ``None``/``False``)."""


class BlobStore(Protocol):
    """Bytes named by their SHA-256 (lower-case hex). Every put is idempotent, and returns only
    once the bytes are durable in the store, so before the row that names them commits.

    Storing a blob that is already there refreshes its modification time: a blob that a mail
    in flight is about to name is never older than the cleanup's grace period, even when an
    earlier mail stored the same bytes long ago (``app.maintenance``).
    """

    tmp_dir: Path
    """Where request bodies are spooled (always a local folder: ``BLOB_DIR/tmp``)."""

    async def start(self) -> None:
        """Open what the store needs (its client); called once, in the app's lifespan. A store
        used before that opens itself on first use."""

    async def close(self) -> None:
        """Release what ``start`` (or first use) opened; the store may be started again."""

    async def check(self) -> None:
        """Raise ``BlobStoreUnavailable`` unless the store answers (``/readyz``)."""

    async def put_bytes(self, data: bytes) -> str: ...
    async def put_file(self, path: Path, sha256: str | None = None) -> str: ...
    async def adopt_files(self, files: list[tuple[Path, str]]) -> None: ...
    async def exists(self, sha256: str) -> bool: ...
    async def size(self, sha256: str) -> int | None: ...
    def read(self, sha256: str, chunk_size: int = CHUNK) -> AsyncIterator[bytes]: ...
    async def read_all(self, sha256: str) -> bytes: ...
    async def delete(self, sha256: str) -> None: ...

    def keys_modified_before(self, cutoff: float) -> AsyncIterator[str]:
        """The digests of blobs last stored before ``cutoff`` (Unix time), in no order."""
        ...

    async def delete_if_modified_before(self, sha256: str, cutoff: float) -> bool:
        """Delete the blob unless it was stored (or stored again) at or after ``cutoff``, as
        the store says now; True when it was deleted."""
        ...

    async def presigned_url(
        self,
        sha256: str,
        *,
        content_type: str,
        content_disposition: str,
        cache_control: str,
        expires_in: int,
    ) -> str | None:
        """A short-lived URL that serves the blob with these response headers, without
        credentials; None when the store has no such URLs (a local folder)."""
        ...


def valid_digest(sha256: str) -> str:
    if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
        raise ValueError("not a SHA-256 hex digest")
    return sha256


def is_digest(name: str) -> bool:
    return len(name) == 64 and all(c in "0123456789abcdef" for c in name)


def _touch(path: Path) -> bool:
    """Refresh an existing blob's modification time (stored again); False if it is gone."""
    try:
        os.utime(path)
    except FileNotFoundError:
        return False
    except PermissionError:  # another user's file (a folder shared by hand): there all the same
        return path.exists()
    return True


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LocalBlobStore:
    """A folder: ``objects/ab/cd/<sha256>``; temporary files in ``tmp/`` (swept at start-up)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.objects = root / "objects"
        self.tmp_dir = root / "tmp"

    async def start(self) -> None:
        """Nothing to open: the folder is made on first write."""

    async def close(self) -> None:
        """Nothing to release."""

    async def check(self) -> None:
        """A local folder always answers (a full disk shows on writes, as 503s)."""

    def ensure(self) -> None:
        self.objects.mkdir(parents=True, exist_ok=True)
        self.tmp_dir.mkdir(parents=True, exist_ok=True)

    def path(self, sha256: str) -> Path:
        valid_digest(sha256)
        return self.objects / sha256[:2] / sha256[2:4] / sha256

    def _install(self, tmp: Path, sha256: str) -> None:
        """Move a complete, fsynced temporary file into place (atomic rename)."""
        target = self.path(sha256)
        if _touch(target):
            tmp.unlink(missing_ok=True)
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, target)
        _fsync_dir(target.parent)

    def _write_bytes(self, data: bytes) -> str:
        sha256 = hashlib.sha256(data).hexdigest()
        if _touch(self.path(sha256)):
            return sha256
        self.ensure()
        fd, name = tempfile.mkstemp(dir=self.tmp_dir, prefix="blob-")
        tmp = Path(name)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            self._install(tmp, sha256)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return sha256

    def _copy_file(self, source: Path, sha256: str | None) -> str:
        self.ensure()
        if sha256 is not None and _touch(self.path(sha256)):
            return sha256
        fd, name = tempfile.mkstemp(dir=self.tmp_dir, prefix="blob-")
        tmp = Path(name)
        digest = hashlib.sha256()
        try:
            with os.fdopen(fd, "wb") as out, source.open("rb") as src:
                while chunk := src.read(CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            actual = digest.hexdigest()
            if sha256 is not None and actual != sha256:
                raise ValueError("file changed while it was stored")
            self._install(tmp, actual)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return actual

    async def put_bytes(self, data: bytes) -> str:
        return await asyncio.to_thread(self._write_bytes, data)

    async def put_file(self, path: Path, sha256: str | None = None) -> str:
        """Store a copy of a file's bytes (``sha256``: the digest it must have)."""
        return await asyncio.to_thread(self._copy_file, path, sha256)

    async def adopt_files(self, files: list[tuple[Path, str]]) -> None:
        """Take over complete files whose digests are known (``(path, sha256)``), in one
        worker-thread hop: each is fsynced, all are renamed into place, then their folders are
        fsynced (the first folder's fsync commits the renames together on a journaling file
        system)."""
        if files:
            await asyncio.to_thread(self._adopt_files, files)

    def _adopt_files(self, files: list[tuple[Path, str]]) -> None:
        self.ensure()
        moved: list[Path] = []
        for source, sha256 in files:
            target = self.path(sha256)
            if _touch(target):
                continue
            fd = os.open(source, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.replace(source, target)
            except OSError as exc:
                if exc.errno != errno.EXDEV:  # another file system: copy instead
                    raise
                self._copy_file(source, sha256)
                continue
            moved.append(target.parent)
        for folder in dict.fromkeys(moved):
            _fsync_dir(folder)

    async def exists(self, sha256: str) -> bool:
        return await asyncio.to_thread(self.path(sha256).exists)

    async def size(self, sha256: str) -> int | None:
        try:
            return (await asyncio.to_thread(self.path(sha256).stat)).st_size
        except FileNotFoundError:
            return None

    async def read(self, sha256: str, chunk_size: int = CHUNK) -> AsyncIterator[bytes]:
        f = await asyncio.to_thread(self.path(sha256).open, "rb")
        try:
            while chunk := await asyncio.to_thread(f.read, chunk_size):
                yield chunk
        finally:
            f.close()

    async def read_all(self, sha256: str) -> bytes:
        return await asyncio.to_thread(self.path(sha256).read_bytes)

    async def delete(self, sha256: str) -> None:
        await asyncio.to_thread(self.path(sha256).unlink, True)

    async def keys_modified_before(self, cutoff: float) -> AsyncIterator[str]:
        """One worker-thread hop per top-level folder (``objects/ab``), not per blob."""
        try:
            folders = sorted(await asyncio.to_thread(os.listdir, self.objects))
        except FileNotFoundError:
            return
        for folder in folders:
            for key in await asyncio.to_thread(
                self._modified_before, self.objects / folder, cutoff
            ):
                yield key

    @staticmethod
    def _modified_before(folder: Path, cutoff: float) -> list[str]:
        keys = []
        for path in folder.glob("*/*"):
            try:
                if is_digest(path.name) and path.stat().st_mtime < cutoff:
                    keys.append(path.name)
            except FileNotFoundError:
                continue
        return keys

    async def delete_if_modified_before(self, sha256: str, cutoff: float) -> bool:
        return await asyncio.to_thread(self._delete_if_modified_before, self.path(sha256), cutoff)

    @staticmethod
    def _delete_if_modified_before(path: Path, cutoff: float) -> bool:
        try:
            if path.stat().st_mtime >= cutoff:
                return False
            path.unlink()
        except FileNotFoundError:
            return False
        return True

    async def presigned_url(
        self,
        sha256: str,
        *,
        content_type: str,
        content_disposition: str,
        cache_control: str,
        expires_in: int,
    ) -> str | None:
        return None  # a folder has no URLs of its own: the API streams the bytes

    def sweep_tmp(self, older_than: float = 0) -> int:
        """Remove what earlier requests left in ``tmp/`` (per-request folders and stray files)
        at least ``older_than`` seconds old. Meant for start-up. Returns how many were removed."""
        try:
            entries = list(os.scandir(self.tmp_dir))
        except FileNotFoundError:
            return 0
        cutoff = time.time() - older_than
        removed = 0
        for entry in entries:
            try:
                if older_than > 0 and entry.stat(follow_symlinks=False).st_mtime > cutoff:
                    continue
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path)
                else:
                    os.unlink(entry.path)
            except OSError:  # vanished meanwhile, or not ours to remove: leave it
                continue
            removed += 1
        return removed
