"""The streaming form reader that replaces Starlette's ``request.form()`` for webhooks."""

from __future__ import annotations

import hashlib
import os
import random
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import anyio.to_thread
import pytest

from app.inbound import multipart
from app.inbound.multipart import (
    MAX_FIELD_NAME_BYTES,
    MAX_FORM_PARTS,
    MAX_UNAUTHENTICATED_BYTES,
    Form,
    FormLimits,
    FormPart,
    FormTooComplex,
    MalformedBody,
    PayloadTooLarge,
    read_form,
    spool_body,
    sweep_spool,
)

BOUNDARY = "----mailslotTestBoundary7MA4YWxk"
FORM_DATA = f"multipart/form-data; boundary={BOUNDARY}"
URLENCODED = "application/x-www-form-urlencoded"
KiB = 1024
MiB = 1024 * KiB


async def chunked(body: bytes, size: int) -> AsyncIterator[bytes]:
    """The body in ``size``-byte chunks, plus an empty one at the end like Starlette's stream."""
    for i in range(0, len(body), size):
        yield body[i : i + size]
    yield b""


def field(name: str, value: bytes, content_type: str | None = None) -> bytes:
    head = f'Content-Disposition: form-data; name="{name}"\r\n'.encode()
    if content_type:
        head += f"Content-Type: {content_type}\r\n".encode()
    return head + b"\r\n" + value


def file(
    name: str, filename: str, value: bytes, content_type: str = "application/octet-stream"
) -> bytes:
    head = (
        f'Content-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
        f"Content-Type: {content_type}\r\n\r\n"
    ).encode()
    return head + value


def body_of(*parts: bytes, boundary: str = BOUNDARY) -> bytes:
    delimiter = f"--{boundary}".encode()
    out = b"".join(delimiter + b"\r\n" + part + b"\r\n" for part in parts)
    return out + delimiter + b"--\r\n"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def leftovers(spool_root: Path) -> list[Path]:
    tmp = spool_root / "tmp"
    return sorted(tmp.rglob("*")) if tmp.exists() else []


@pytest.fixture
def spool_root(tmp_path: Path) -> Path:
    return tmp_path / "spool"


async def read(
    body: bytes,
    spool_root: Path,
    *,
    chunk: int = 64 * KiB,
    content_type: str = FORM_DATA,
    **limits: Any,
) -> Form:
    options: dict[str, Any] = {"max_total": 100 * MiB, "max_file": 50 * MiB} | limits
    return await read_form(chunked(body, chunk), content_type, spool_root=spool_root, **options)


# A binary attachment full of near-boundaries, CR/LF and NUL bytes.
ATTACHMENT = (
    bytes(random.Random(7).getrandbits(8) for _ in range(150 * KiB))
    + b"\r\n--" + BOUNDARY[:-1].encode() + b"\r\n\r\n--\r\n\x00"
)  # fmt: skip


@pytest.mark.parametrize("chunk", [7, 4093, 64 * KiB, 10 * MiB])
async def test_fields_and_files_round_trip_byte_identical(spool_root: Path, chunk: int) -> None:
    body = body_of(
        field("recipient", b"group@in.example.com"),
        field("body-plain", b"line one\r\nline two\r\n"),
        file("attachment-1", "../../etc/passwd", ATTACHMENT, "image/png"),
        field("empty", b""),
        file("attachment-2", "empty.txt", b"", "text/plain; charset=utf-8"),
    )
    form = await read(body, spool_root, chunk=chunk)
    try:
        assert [p.name for p in form.parts] == [
            "recipient",
            "body-plain",
            "attachment-1",
            "empty",
            "attachment-2",
        ]
        assert form.text("recipient") == "group@in.example.com"
        assert form.text("body-plain") == "line one\r\nline two\r\n"
        assert form.text("missing") is None
        recipient = form.get("recipient")
        assert recipient is not None
        assert recipient.filename is None
        assert recipient.content_type is None
        assert recipient.path is None
        assert recipient.data == b"group@in.example.com"
        assert recipient.sha256 == sha(b"group@in.example.com")

        first, second = form.files()
        assert first.filename == "../../etc/passwd"  # as sent: sanitising is the caller's job
        assert first.content_type == "image/png"
        assert first.size == len(ATTACHMENT)
        assert first.sha256 == sha(ATTACHMENT)
        assert first.data is None
        assert first.path is not None
        assert first.path.parent == form.spool_dir
        assert first.path.read_bytes() == ATTACHMENT
        assert first.read() == ATTACHMENT
        assert not first.truncated

        assert second.filename == "empty.txt"
        assert second.charset == "utf-8"
        assert second.size == 0
        assert second.sha256 == sha(b"")
        assert second.path is not None
        assert second.path.read_bytes() == b""
        empty = form.get("empty")
        assert empty is not None
        assert empty.read() == b""
        assert empty.size == 0
        assert form.spool_dir.parent == spool_root / "tmp"
    finally:
        form.cleanup()
    assert not form.spool_dir.exists()
    assert leftovers(spool_root) == []


async def test_fields_are_bytes_decoded_with_the_charset_the_caller_names(
    spool_root: Path,
) -> None:
    japanese = "件名 会議の議事録です"
    body = body_of(
        field("subject", "Grüße, 世界 🎉".encode()),
        field("text", japanese.encode("shift_jis"), "text/plain; charset=Shift_JIS"),
        field("latin", "Café".encode("latin-1")),
        field("odd", "Café".encode(), 'text/plain; charset="x-no-such-charset"'),
        field("grüße", b"named in UTF-8"),
    )
    form = await read(body, spool_root, chunk=7)
    try:
        assert form.text("subject") == "Grüße, 世界 🎉"
        text = form.get("text")
        assert text is not None
        assert text.data == japanese.encode("shift_jis")  # never decoded behind our back
        assert text.charset == "Shift_JIS"
        assert text.content_type == "text/plain; charset=Shift_JIS"
        assert form.text("text", "shift_jis") == japanese
        assert form.text("text", None) == japanese  # None: the part's own charset
        # No latin-1 fallback: invalid UTF-8 becomes replacement characters...
        assert form.text("latin") == "Caf\ufffd"
        # ...unless the caller knows better.
        assert form.text("latin", "iso-8859-1") == "Café"
        # An unknown charset, or a codec that is not a text encoding, degrades to UTF-8.
        assert form.text("odd", None) == "Café"
        assert form.text("subject", "x-no-such-charset") == "Grüße, 世界 🎉"
        assert form.text("subject", "base64") == "Grüße, 世界 🎉"
        # Invalid bytes for the named charset degrade to UTF-8 with replacement characters.
        assert form.text("latin", "shift_jis") == "Caf\ufffd"
        assert form.text("grüße") == "named in UTF-8"
    finally:
        form.cleanup()


async def test_a_field_over_the_memory_threshold_is_spilled_to_disk(spool_root: Path) -> None:
    value = os.urandom(2 * MiB)
    small = b"x" * MiB  # exactly at the threshold: stays in memory
    body = body_of(field("body-mime", value), field("small", small))
    form = await read(body, spool_root)
    try:
        big = form.get("body-mime")
        assert big is not None
        assert big.data is None
        assert big.path is not None
        assert big.path.parent == form.spool_dir
        assert big.size == len(value)
        assert big.sha256 == sha(value)
        assert big.read() == value
        kept = form.get("small")
        assert kept is not None
        assert kept.data == small
        assert kept.path is None
    finally:
        form.cleanup()


async def test_a_field_bigger_than_starlettes_1_mib_default_works(spool_root: Path) -> None:
    value = b"a" * (MiB + 1)  # Starlette: 400 "Part exceeded maximum size of 1024KB."
    body = body_of(field("html", value, "text/html; charset=utf-8"))
    form = await read(body, spool_root, memory_threshold=4 * MiB)
    try:
        part = form.get("html")
        assert part is not None
        assert part.data == value  # under this threshold: in memory
        assert part.size == MiB + 1
        assert part.sha256 == sha(value)
    finally:
        form.cleanup()


async def test_a_file_at_max_file_is_kept_and_one_byte_more_is_truncated(
    spool_root: Path,
) -> None:
    limit = 300 * KiB
    at_limit = os.urandom(limit)
    over = os.urandom(limit + 1)
    body = body_of(
        file("attachment-1", "at-limit.bin", at_limit),
        file("attachment-2", "over.bin", over),
        field("signature", b"after the big one"),
    )
    form = await read(body, spool_root, chunk=4 * KiB, max_file=limit)
    try:
        kept, dropped = form.files()
        assert not kept.truncated
        assert kept.size == limit
        assert kept.sha256 == sha(at_limit)
        assert kept.read() == at_limit
        assert dropped.truncated
        assert dropped.size == limit + 1  # still counted to the end
        assert dropped.path is None
        assert dropped.data is None
        assert dropped.sha256 is None
        with pytest.raises(ValueError, match="not kept"):
            dropped.read()
        # The body was still read to its end.
        assert form.text("signature") == "after the big one"
        assert sorted(form.spool_dir.iterdir()) == [kept.path]
    finally:
        form.cleanup()


async def test_a_truncated_file_is_deleted_as_soon_as_it_passes_the_cap(
    spool_root: Path,
) -> None:
    """The file goes when the cap is passed, not at the end of the part."""
    limit = 2 * MiB
    seen: list[list[str]] = []

    async def stream() -> AsyncIterator[bytes]:
        head = body_of(file("attachment-1", "huge.bin", b"")).split(b"\r\n\r\n", 1)[0]
        yield head + b"\r\n\r\n"
        for _ in range(6):  # 6 MiB of data in 1 MiB chunks
            yield b"z" * MiB
            seen.append(sorted(p.name for p in (spool_root / "tmp").rglob("*.part")))
        yield f"\r\n--{BOUNDARY}--\r\n".encode()

    form = await read_form(
        stream(), FORM_DATA, spool_root=spool_root, max_total=100 * MiB, max_file=limit
    )
    try:
        assert seen[0] == ["000000.part"]
        assert seen[3:] == [[], [], []]
        (part,) = form.files()
        assert part.truncated
        assert part.size == 6 * MiB
    finally:
        form.cleanup()


async def test_a_field_over_max_field_is_truncated(spool_root: Path) -> None:
    body = body_of(field("body-mime", b"m" * (3 * MiB)), field("token", b"t0k3n"))
    form = await read(body, spool_root, max_field=2 * MiB, memory_threshold=64 * KiB)
    try:
        part = form.get("body-mime")
        assert part is not None
        assert part.truncated
        assert part.size == 3 * MiB
        assert part.path is None
        assert part.data is None
        with pytest.raises(ValueError, match="not kept"):
            form.text("body-mime")
        assert form.text("token") == "t0k3n"
        assert not form.spool_dir.exists() or list(form.spool_dir.iterdir()) == []
    finally:
        form.cleanup()


async def test_a_body_over_max_total_stops_at_once_and_leaves_nothing(spool_root: Path) -> None:
    body = body_of(file("attachment-1", "a.bin", os.urandom(3 * MiB)), field("x", b"y"))
    consumed = 0

    async def stream() -> AsyncIterator[bytes]:
        nonlocal consumed
        for i in range(0, len(body), 64 * KiB):
            consumed += 1
            yield body[i : i + 64 * KiB]

    with pytest.raises(PayloadTooLarge) as raised:
        await read_form(
            stream(), FORM_DATA, spool_root=spool_root, max_total=2 * MiB, max_file=10 * MiB
        )
    assert raised.value.limit == 2 * MiB
    assert consumed == 2 * MiB // (64 * KiB) + 1  # not one chunk more than needed
    assert leftovers(spool_root) == []


async def test_a_body_exactly_at_max_total_is_read(spool_root: Path) -> None:
    body = body_of(field("a", b"b"))
    form = await read(body, spool_root, max_total=len(body))
    form.cleanup()
    with pytest.raises(PayloadTooLarge):
        await read(body, spool_root, max_total=len(body) - 1)
    assert leftovers(spool_root) == []


async def test_a_form_held_in_memory_touches_no_disk(spool_root: Path) -> None:
    form = await read(b"token=abc&subject=hello", spool_root, content_type=URLENCODED)
    assert form.text("subject") == "hello"
    assert not form.spool_dir.exists()  # made only when a value goes to disk
    assert leftovers(spool_root) == []
    form.cleanup()  # nothing to remove: no error either


async def test_urlencoded_values_are_percent_decoded_bytes(spool_root: Path) -> None:
    body = (
        b"sender=J%C3%BCrgen+M%C3%BCller+%3Cj%40example.com%3E"
        b"&subject=a%2Bb+%26+c%3Dd%25"
        b"&latin=Caf%E9&empty=&flag&caf%C3%A9=1&&body-plain=line%0D%0Anext"
        b"&odd=100%&bad=%zz%4"
    )
    for chunk in (1, 2, 3, 7, len(body)):
        form = await read(body, spool_root, chunk=chunk, content_type=URLENCODED)
        try:
            assert [p.name for p in form.parts] == [
                "sender",
                "subject",
                "latin",
                "empty",
                "flag",
                "café",
                "body-plain",
                "odd",
                "bad",
            ]
            assert form.text("sender") == "Jürgen Müller <j@example.com>"
            assert form.text("subject") == "a+b & c=d%"
            latin = form.get("latin")
            assert latin is not None
            assert latin.data == b"Caf\xe9"  # bytes: no latin-1 fallback
            assert latin.content_type is None
            assert latin.charset is None
            assert latin.filename is None
            assert form.text("latin") == "Caf\ufffd"
            assert form.text("latin", "windows-1252") == "Café"
            assert form.text("empty") == ""
            assert form.text("flag") == ""
            assert form.text("café") == "1"
            assert form.text("body-plain") == "line\r\nnext"
            assert form.text("odd") == "100%"
            assert form.text("bad") == "%zz%4"
            assert form.files() == []
        finally:
            form.cleanup()


async def test_urlencoded_decoding_matches_the_standard_library(spool_root: Path) -> None:
    rng = random.Random(2231)
    alphabet = b"%%%+&=aF09zZ\\x\xe9 "
    for _ in range(40):
        body = bytes(rng.choice(alphabet) for _ in range(rng.randrange(1, 300)))
        expected = [
            (name.encode("latin-1"), value.encode("latin-1"))
            for name, value in parse_qsl(
                body.decode("latin-1"), keep_blank_values=True, encoding="latin-1"
            )
        ]
        form = await read(body, spool_root, chunk=rng.randrange(1, 9), content_type=URLENCODED)
        try:
            got = [(p.name.encode("utf-8"), p.read()) for p in form.parts]
            assert [value for _, value in got] == [value for _, value in expected]
            assert [p.name for p in form.parts] == [
                name.decode("utf-8", errors="replace").replace("\x00", "\ufffd")
                for name, _ in expected
            ]
        finally:
            form.cleanup()


async def test_urlencoded_fields_follow_the_same_limits(spool_root: Path) -> None:
    big = os.urandom(2 * MiB)
    hexed = big.hex().upper().encode()
    encoded = bytearray(3 * len(big))  # every byte as %XX, the worst case for the decoder
    encoded[0::3] = b"%" * len(big)
    encoded[1::3] = hexed[0::2]
    encoded[2::3] = hexed[1::2]
    body = b"body-mime=" + bytes(encoded) + b"&stripped-text=" + b"s" * (300 * KiB) + b"&token=abc"
    form = await read(
        body,
        spool_root,
        content_type="application/x-www-form-urlencoded; charset=utf-8",
        max_field=3 * MiB,
        memory_threshold=256 * KiB,
    )
    try:
        mime = form.get("body-mime")
        assert mime is not None
        assert mime.path is not None
        assert mime.size == len(big)
        assert mime.sha256 == sha(big)
        assert mime.read() == big
        stripped = form.get("stripped-text")
        assert stripped is not None
        assert stripped.path is not None  # over 256 KiB: spilled
        assert stripped.read() == b"s" * (300 * KiB)
        assert form.text("token") == "abc"
    finally:
        form.cleanup()

    form = await read(body, spool_root, content_type=URLENCODED, max_field=MiB)
    try:
        mime = form.get("body-mime")
        assert mime is not None
        assert mime.truncated
        assert mime.size == len(big)
        assert form.text("token") == "abc"
        assert not form.spool_dir.exists() or list(form.spool_dir.iterdir()) == []
    finally:
        form.cleanup()


async def test_filenames_rfc_2231_and_raw_utf_8(spool_root: Path) -> None:
    def disposition(params: str) -> bytes:
        return f"Content-Disposition: form-data; {params}\r\n\r\ndata".encode()

    body = body_of(
        disposition('name="a1"; filename="fallback.pdf"; filename*=UTF-8\'\'%E2%82%AC%20rates.pdf'),
        disposition("filename*=iso-8859-1'fr'caf%E9.txt; name=a2"),
        disposition("name=a3; filename*0*=utf-8''%C3%BC; filename*1=ber; filename*2*=%20n.txt"),
        disposition('name="a4"; filename="Résumé; final \\"v2\\".doc"'),
        disposition("name=a5; filename*=x-unknown''%C3%A9t%C3%A9.txt"),
        disposition('name="a6"; filename=""'),
        disposition('name="a7"; filename="C:\\Users\\me\\note.txt"'),
    )
    form = await read(body, spool_root, chunk=5)
    try:
        assert [p.filename for p in form.files()] == [
            "€ rates.pdf",
            "café.txt",
            "über n.txt",
            'Résumé; final "v2".doc',
            "été.txt",
            "",
            "C:\\Users\\me\\note.txt",
        ]
        assert [p.name for p in form.parts] == ["a1", "a2", "a3", "a4", "a5", "a6", "a7"]
        assert all(p.read() == b"data" for p in form.parts)
        assert all(p.content_type is None for p in form.parts)
    finally:
        form.cleanup()


@pytest.mark.parametrize(
    ("content_type", "body", "detail"),
    [
        ("multipart/form-data", body_of(field("a", b"b")), "without a boundary"),
        ('multipart/form-data; boundary=""', body_of(field("a", b"b")), "without a boundary"),
        ("application/json", b'{"a": 1}', "unsupported content type"),
        ("", b"a=b", "unsupported content type"),
        (FORM_DATA, body_of(field("a", b"b"))[:-30], "ended before the closing"),
        (FORM_DATA, body_of(file("f", "f.bin", b"x" * 200 * KiB))[:-100], "ended before"),
        (FORM_DATA, b"", "ended before the closing"),
        (FORM_DATA, b"not a multipart body at all", ""),
        (FORM_DATA, body_of(field("a", b"b"), boundary="other"), ""),
        (
            f"multipart/form-data; boundary={'b' * 300}",
            body_of(field("a", b"b"), boundary="b" * 300),
            "oundary",
        ),
        (FORM_DATA, f"--{BOUNDARY}\r\nNo colon here\r\n\r\nx".encode(), ""),
    ],
)
async def test_malformed_bodies(
    spool_root: Path, content_type: str, body: bytes, detail: str
) -> None:
    with pytest.raises(MalformedBody, match=detail or None) as raised:
        await read(body, spool_root, chunk=1000, content_type=content_type)
    assert raised.value.detail
    assert leftovers(spool_root) == []


async def test_an_empty_form_and_a_quoted_boundary(spool_root: Path) -> None:
    form = await read(
        f"--{BOUNDARY}--\r\n".encode(), spool_root, content_type=f'{FORM_DATA.split(";")[0]}; '
        f'boundary="{BOUNDARY}"; charset=utf-8',
    )  # fmt: skip
    assert form.parts == []
    form.cleanup()
    form = await read(b"", spool_root, content_type=URLENCODED)
    assert form.parts == []
    form.cleanup()
    assert leftovers(spool_root) == []


async def test_a_failing_stream_leaves_nothing_on_disk(spool_root: Path) -> None:
    class ClientDisconnectError(Exception):
        pass

    async def stream() -> AsyncIterator[bytes]:
        body = body_of(file("attachment-1", "a.bin", os.urandom(3 * MiB)))
        yield body[: 2 * MiB]
        raise ClientDisconnectError

    with pytest.raises(ClientDisconnectError):
        await read_form(
            stream(), FORM_DATA, spool_root=spool_root, max_total=10 * MiB, max_file=10 * MiB
        )
    assert leftovers(spool_root) == []


async def test_disk_writes_are_batched(spool_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hops = 0
    run_sync = anyio.to_thread.run_sync

    async def counting(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        nonlocal hops
        hops += 1
        return await run_sync(func, *args, **kwargs)

    monkeypatch.setattr(anyio.to_thread, "run_sync", counting)
    data = os.urandom(4 * MiB)
    body = body_of(file("attachment-1", "a.bin", data), field("x", b"y"))
    form = await read(body, spool_root, chunk=16 * KiB)  # 257 chunks
    try:
        (part,) = form.files()
        assert part.read() == data
        # One to create the spool dir, about one per MiB, one at the part's end.
        assert hops <= 1 + 4 + 2
    finally:
        form.cleanup()


async def test_many_parts(spool_root: Path) -> None:
    parts = [field(f"field-{i}", f"value {i}".encode()) for i in range(450)]
    parts += [file(f"attachment-{i}", f"f{i}.txt", f"file {i}".encode()) for i in range(50)]
    form = await read(body_of(*parts), spool_root, chunk=4093)
    try:
        assert len(form.parts) == 500
        assert form.text("field-0") == "value 0"
        assert form.text("field-449") == "value 449"
        files = form.files()
        assert len(files) == 50
        assert [f.read() for f in files] == [f"file {i}".encode() for i in range(50)]
        assert len(list(form.spool_dir.iterdir())) == 50
    finally:
        form.cleanup()


async def test_repeated_names(spool_root: Path) -> None:
    body = body_of(field("to", b"a@x"), field("to", b"b@x"))
    form = await read(body, spool_root)
    try:
        assert [p.read() for p in form.getall("to")] == [b"a@x", b"b@x"]
        assert form.text("to") == "a@x"  # get() is the first
        assert form.getall("nothing") == []
    finally:
        form.cleanup()


async def test_cleanup_removes_the_spool_dir(spool_root: Path) -> None:
    body = body_of(file("attachment-1", "a.bin", b"abc"), field("big", b"b" * (2 * MiB)))
    form = await read(body, spool_root)
    assert len(list(form.spool_dir.iterdir())) == 2
    form.cleanup()
    assert not form.spool_dir.exists()
    form.cleanup()  # idempotent
    assert (spool_root / "tmp").is_dir()
    assert leftovers(spool_root) == []


async def test_spool_body(spool_root: Path) -> None:
    message = b"From: a@example.com\r\nSubject: hi\r\n\r\n" + os.urandom(3 * MiB + 5)
    path, size, digest = await spool_body(
        chunked(message, 60 * KiB), spool_root=spool_root, max_total=4 * MiB
    )
    assert path.read_bytes() == message
    assert size == len(message)
    assert digest == sha(message)
    assert path.parent.parent == spool_root / "tmp"

    with pytest.raises(PayloadTooLarge):
        await spool_body(chunked(message, 60 * KiB), spool_root=spool_root, max_total=2 * MiB)
    assert leftovers(spool_root) == [path.parent, path]

    empty, size, digest = await spool_body(
        chunked(b"", 1), spool_root=spool_root, max_total=4 * MiB
    )
    assert empty.read_bytes() == b""
    assert (size, digest) == (0, sha(b""))


def test_sweep_spool_removes_leftovers(tmp_path: Path) -> None:
    root = tmp_path / "blobs"
    assert sweep_spool(root) == 0  # no tmp dir yet
    tmp = root / "tmp"
    (tmp / "old-request").mkdir(parents=True)
    (tmp / "old-request" / "000000.part").write_bytes(b"x")
    (tmp / "stray-file").write_bytes(b"y")
    (tmp / "fresh-request").mkdir()
    (root / "kept-blob").write_bytes(b"z")  # outside tmp: never touched
    long_ago = time.time() - 7200
    for name in ("old-request", "stray-file"):
        os.utime(tmp / name, (long_ago, long_ago))

    assert sweep_spool(root, older_than_seconds=3600) == 2
    assert [p.name for p in tmp.iterdir()] == ["fresh-request"]
    assert sweep_spool(root) == 1
    assert list(tmp.iterdir()) == []
    assert (root / "kept-blob").exists()


# --- bounds on what a body can make the reader keep or do --------------------------------------


class Gate:
    """A FieldGate that lets the request in when a field named ``key`` says ``open``."""

    def __init__(self, content_fields: frozenset[str] = frozenset()) -> None:
        self.authenticated = False
        self.content_fields = content_fields
        self.seen: list[str] = []

    def field(self, part: FormPart) -> None:
        self.seen.append(part.name)
        if part.name == "key":
            if part.data != b"open":
                raise PermissionError("wrong key")
            self.authenticated = True


class Counted:
    """A body in 64 KiB chunks, counting how many bytes the reader pulled."""

    def __init__(self, body: bytes, chunk: int = 64 * KiB) -> None:
        self.body, self.chunk, self.pulled = body, chunk, 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for i in range(0, len(self.body), self.chunk):
            self.pulled += len(self.body[i : i + self.chunk])
            yield self.body[i : i + self.chunk]


async def read_counted(
    body: Counted, spool_root: Path, content_type: str = URLENCODED, **options: Any
) -> Form:
    return await read_form(
        body,
        content_type,
        spool_root=spool_root,
        max_total=100 * MiB,
        max_file=50 * MiB,
        **options,
    )


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"a&" * (4 * MiB), id="4-million-empty-fields"),
        pytest.param(b"&" * (8 * MiB), id="8-million-separators"),
        pytest.param(b"a=1&" * (2 * MiB), id="2-million-fields"),
    ],
)
async def test_the_number_of_parts_is_bounded_and_the_read_stops_there(
    spool_root: Path, body: bytes
) -> None:
    counted = Counted(body)
    with pytest.raises(FormTooComplex, match="more than 2000 parts") as raised:
        await read_counted(counted, spool_root, gate=Gate())
    assert raised.value.authenticated is False
    assert counted.pulled <= 64 * KiB  # the first chunk already holds 2,001 fields
    assert leftovers(spool_root) == []
    # Without a gate (a request authenticated by its headers) the bound is the same.
    with pytest.raises(FormTooComplex) as raised:
        await read_counted(Counted(body), spool_root)
    assert raised.value.authenticated is True


async def test_multipart_parts_are_bounded_too(spool_root: Path) -> None:
    parts = [field(f"f{i}", b"v") for i in range(MAX_FORM_PARTS)]
    form = await read(body_of(*parts), spool_root)
    assert len(form.parts) == MAX_FORM_PARTS
    form.cleanup()
    body = body_of(*parts, file("attachment-1", "a.bin", b"x" * MiB))
    with pytest.raises(FormTooComplex, match="parts"):
        await read(body, spool_root)
    assert leftovers(spool_root) == []


async def test_the_bounds_can_be_changed_from_outside(
    spool_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(multipart, "MAX_FORM_PARTS", 3)
    assert FormLimits().max_parts == 3
    with pytest.raises(FormTooComplex, match="more than 3 parts"):
        await read(b"a=1&b=2&c=3&d=4", spool_root, content_type=URLENCODED)
    form = await read(b"a=1&b=2&c=3", spool_root, content_type=URLENCODED)
    assert len(form.parts) == 3


@pytest.mark.parametrize("content_type", [URLENCODED, FORM_DATA])
async def test_a_field_name_is_bounded(spool_root: Path, content_type: str) -> None:
    def body(name: bytes) -> bytes:
        if content_type == URLENCODED:
            return name + b"=v"
        return body_of(b'Content-Disposition: form-data; name="' + name + b'"\r\n\r\nv')

    form = await read(body(b"n" * MAX_FIELD_NAME_BYTES), spool_root, content_type=content_type)
    assert [len(p.name) for p in form.parts] == [MAX_FIELD_NAME_BYTES]
    form.cleanup()
    with pytest.raises(FormTooComplex, match="field name"):
        await read(body(b"n" * (MAX_FIELD_NAME_BYTES + 1)), spool_root, content_type=content_type)
    # An urlencoded name is refused as it grows, not at its end.
    if content_type == URLENCODED:
        counted = Counted(b"n" * (16 * MiB))
        with pytest.raises(FormTooComplex):
            await read_counted(counted, spool_root)
        assert counted.pulled <= 64 * KiB


async def test_plain_values_in_memory_are_bounded_per_form(spool_root: Path) -> None:
    limits = FormLimits(memory_bytes=3 * MiB)
    values = [bytes([65 + i]) * (MiB - 10) for i in range(6)]
    body = body_of(*(field(f"v{i}", v) for i, v in enumerate(values)))
    form = await read(body, spool_root, limits=limits)
    try:
        in_memory = [p for p in form.parts if p.data is not None]
        assert sum(p.size for p in in_memory) <= 3 * MiB
        assert len(in_memory) == 3
        assert [p.read() for p in form.parts] == values  # the others are on disk
        assert all(p.path is not None for p in form.parts[3:])
    finally:
        form.cleanup()


class TestBeforeAuthentication:
    async def test_fields_past_the_bound_stop_the_read(self, spool_root: Path) -> None:
        counted = Counted(b"body-html=" + b"x" * (64 * MiB))
        with pytest.raises(FormTooComplex, match="before the request was authenticated") as raised:
            await read_counted(counted, spool_root, gate=Gate())
        assert raised.value.authenticated is False
        assert counted.pulled <= MAX_UNAUTHENTICATED_BYTES + MiB + 64 * KiB
        assert leftovers(spool_root) == []

    async def test_files_and_content_fields_do_not_count(self, spool_root: Path) -> None:
        big = os.urandom(12 * MiB)
        body = body_of(
            file("attachment-1", "a.bin", big),
            field("body-mime", big),
            field("key", b"open"),
            field("body-html", b"h" * (12 * MiB)),  # after the gate let it in
        )
        gate = Gate(content_fields=frozenset({"body-mime"}))
        form = await read(body, spool_root, gate=gate)
        try:
            assert gate.authenticated
            assert sorted(gate.seen) == ["body-html", "body-mime", "key"]
            assert form.get("attachment-1") is not None
        finally:
            form.cleanup()
        # The same fields, the content field not declared: refused before the key arrives.
        with pytest.raises(FormTooComplex):
            await read(body, spool_root, gate=Gate())
        assert leftovers(spool_root) == []

    async def test_a_gate_that_refuses_stops_the_read_and_leaves_nothing(
        self, spool_root: Path
    ) -> None:
        body = body_of(field("key", b"wrong"), file("attachment-1", "a.bin", os.urandom(20 * MiB)))
        counted = Counted(body)
        with pytest.raises(PermissionError):
            await read_counted(counted, spool_root, content_type=FORM_DATA, gate=Gate())
        assert counted.pulled <= 64 * KiB
        assert leftovers(spool_root) == []

    async def test_a_refusal_after_spooling_leaves_nothing(self, spool_root: Path) -> None:
        body = body_of(
            file("attachment-1", "a.bin", os.urandom(3 * MiB)),
            field("big", b"b" * (2 * MiB)),
            field("key", b"wrong"),
        )
        with pytest.raises(PermissionError):
            await read(body, spool_root, gate=Gate())
        assert leftovers(spool_root) == []


@pytest.mark.parametrize("content_type", [URLENCODED, FORM_DATA])
async def test_a_nul_in_a_field_name_is_replaced(spool_root: Path, content_type: str) -> None:
    if content_type == URLENCODED:
        body = b"a%00b=1&\x00c=2"
    else:
        body = body_of(field("a\x00b", b"1"), field("\x00c", b"2"))
    form = await read(body, spool_root, content_type=content_type)
    assert [p.name for p in form.parts] == ["a\ufffdb", "\ufffdc"]
    assert form.text("a\ufffdb") == "1"
    form.cleanup()
