"""Content-addressed blob storage: bytes are named by their SHA-256 and fsynced before use."""

from __future__ import annotations

import asyncio
import errno
import hashlib
import os
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Protocol

CHUNK = 1024 * 1024


class BlobStore(Protocol):
    tmp_dir: Path

    async def put_bytes(self, data: bytes) -> str: ...
    async def put_file(self, path: Path, sha256: str | None = None) -> str: ...
    async def adopt_files(self, files: list[tuple[Path, str]]) -> None: ...
    async def exists(self, sha256: str) -> bool: ...
    async def size(self, sha256: str) -> int | None: ...
    def read(self, sha256: str, chunk_size: int = CHUNK) -> AsyncIterator[bytes]: ...
    async def read_all(self, sha256: str) -> bytes: ...
    async def delete(self, sha256: str) -> None: ...
    def keys_older_than(self, seconds: float) -> Iterator[str]: ...


def _valid(sha256: str) -> str:
    if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
        raise ValueError("not a SHA-256 hex digest")
    return sha256


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

    def ensure(self) -> None:
        self.objects.mkdir(parents=True, exist_ok=True)
        self.tmp_dir.mkdir(parents=True, exist_ok=True)

    def path(self, sha256: str) -> Path:
        _valid(sha256)
        return self.objects / sha256[:2] / sha256[2:4] / sha256

    def _install(self, tmp: Path, sha256: str) -> None:
        """Move a complete, fsynced temporary file into place (atomic rename)."""
        target = self.path(sha256)
        if target.exists():
            tmp.unlink(missing_ok=True)
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, target)
        _fsync_dir(target.parent)

    def _write_bytes(self, data: bytes) -> str:
        sha256 = hashlib.sha256(data).hexdigest()
        if self.path(sha256).exists():
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
        if sha256 is not None and self.path(sha256).exists():
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
            if target.exists():
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

    def keys_older_than(self, seconds: float) -> Iterator[str]:
        cutoff = time.time() - seconds
        if not self.objects.exists():
            return
        for path in self.objects.glob("*/*/*"):
            try:
                if path.stat().st_mtime < cutoff:
                    yield path.name
            except FileNotFoundError:
                continue

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
