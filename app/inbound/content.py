"""The kept content of a mail: a JSON document whose attachments are blobs."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, replace
from typing import Any

from app.blobs.store import BlobStore, BlobStoreUnavailable
from app.inbound.model import InboundAttachment, InboundEmail, OmittedPart

VERSION = 1


async def store_attachments(email: InboundEmail, blobs: BlobStore) -> InboundEmail:
    """Write every kept attachment to the blob store (fsynced); the result names them by digest
    only (no bytes, no spooled file), so that storing it again does nothing."""
    if not email.attachments:  # most mail: nothing to write, the same mail
        return email
    # Spooled parts with a known digest are taken over (renamed into place), all in one go.
    await blobs.adopt_files(
        [
            (a.path, a.sha256)
            for a in email.attachments
            if a.kept and a.path is not None and a.sha256 is not None
        ]
    )
    stored = []
    for attachment in email.attachments:
        if not attachment.kept:
            stored.append(attachment)
            continue
        if attachment.path is not None and attachment.sha256 is not None:
            sha256 = attachment.sha256
        elif attachment.path is not None:
            sha256 = await blobs.put_file(attachment.path)
        elif attachment.data is not None:
            sha256 = await blobs.put_bytes(attachment.data)
        else:
            sha256 = attachment.sha256 or ""
        stored.append(replace(attachment, sha256=sha256, data=None, path=None))
    return replace(email, attachments=tuple(stored))


def to_document(email: InboundEmail) -> bytes:
    """Serialise a mail whose attachments are already stored (``sha256`` names each blob)."""
    doc = asdict(email)
    doc["version"] = VERSION
    doc["attachments"] = [
        {k: v for k, v in asdict(a).items() if k not in {"data", "path"}} for a in email.attachments
    ]
    return json.dumps(doc, ensure_ascii=False, sort_keys=True).encode()


async def keep(email: InboundEmail, blobs: BlobStore) -> str:
    """Store the mail's content; returns the digest of its document."""
    email = await store_attachments(email, blobs)
    return await blobs.put_bytes(to_document(email))


async def load(sha256: str, blobs: BlobStore) -> InboundEmail:
    doc: dict[str, Any] = json.loads(await blobs.read_all(sha256))
    doc.pop("version", None)
    attachments = []
    for item in doc.pop("attachments", []):
        data = (
            await blobs.read_all(item["sha256"])
            if item.get("kept") and item.get("sha256")
            else None
        )
        attachments.append(InboundAttachment(**item, data=data))
    doc["recipients"] = tuple(doc.get("recipients", ()))
    doc["headers"] = tuple(tuple(h) for h in doc.get("headers", ()))
    doc["omitted"] = tuple(OmittedPart(**o) for o in doc.get("omitted", ()))
    return InboundEmail(**doc, attachments=tuple(attachments))


async def named_blobs(sha256: str, blobs: BlobStore) -> set[str] | None:
    """The attachment blobs a kept document names, without reading them; None when the document
    is gone or unreadable. Raises ``BlobStoreUnavailable``: the store's answer is unknown, so a
    caller deciding what to delete must not go on as if the document named nothing."""
    try:
        doc: dict[str, Any] = json.loads(await blobs.read_all(sha256))
        return {a["sha256"] for a in doc.get("attachments", []) if a.get("sha256")}
    except BlobStoreUnavailable:
        raise
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return None


async def kept_digest(sha256: str, blobs: BlobStore) -> str | None:
    """``content_digest`` of a kept document, without reading its attachments; None if gone."""
    try:
        doc: dict[str, Any] = json.loads(await blobs.read_all(sha256))
    except BlobStoreUnavailable:
        raise  # unknown, not gone: the caller answers 503 and the provider retries
    except (OSError, ValueError):
        return None
    h = hashlib.sha256()
    for name in ("from_address", "subject", "text", "html"):
        h.update((doc.get(name) or "").encode("utf-8", "surrogatepass"))
        h.update(b"\0")
    for a in doc.get("attachments", []):
        line = f"{a.get('filename')}\0{a.get('size')}\0{a.get('sha256') or ''}\0"
        h.update(line.encode("utf-8", "surrogatepass"))
    for o in doc.get("omitted", ()):
        h.update(_omitted_line(o["filename"], o["size"], o["reason"]))
    return h.hexdigest()


def content_digest(email: InboundEmail) -> str:
    """A digest of the normalised content (not of the request bytes, whose framing may change)."""
    h = hashlib.sha256()
    for part in (email.from_address or "", email.subject, email.text or "", email.html or ""):
        h.update(part.encode("utf-8", "surrogatepass"))
        h.update(b"\0")
    for a in email.attachments:
        h.update(f"{a.filename}\0{a.size}\0{a.sha256 or ''}\0".encode("utf-8", "surrogatepass"))
    for o in email.omitted:
        h.update(_omitted_line(o.filename, o.size, o.reason))
    return h.hexdigest()


def _omitted_line(filename: str, size: int | None, reason: str) -> bytes:
    return f"omitted\0{filename}\0{size}\0{reason}\0".encode("utf-8", "surrogatepass")
