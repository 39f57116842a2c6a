"""HTML bodies: an allow-list sanitiser (nh3) that keeps only `cid:` images, and a plain-text
rendering. A post's `cid:` references become attachment URLs when it is read (app.posts.service).
"""

from __future__ import annotations

import html as html_lib
import re
from collections import Counter
from collections.abc import Mapping
from html.parser import HTMLParser

import nh3

# The HTML parser under nh3 (html5ever) and the stdlib's html.parser have super-linear paths on
# hostile input (measured: 20,000 nested ``<dl><dd>`` take 6 s in nh3, 100,000 attributes on
# one tag 6 s, 125,000 elements foster-parented out of a table 14 s; 20,000 ``<a b='`` take
# 13 s in html.parser). A mail's HTML is therefore cut to MAX_HTML_CHARS, and HTML beyond the
# bounds below is not parsed as a tree at all: it is reduced to its text by a linear scan.
MAX_HTML_CHARS = 1_000_000
MAX_TAGS = 20_000
MAX_OPEN_ELEMENTS = 256
MAX_ATTRIBUTES = 256
MAX_CHARACTER_REFERENCES = 100_000

ALLOWED_TAGS = frozenset(
    {
        "a",
        "b",
        "big",
        "blockquote",
        "br",
        "center",
        "code",
        "div",
        "em",
        "font",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "hr",
        "i",
        "img",
        "li",
        "ol",
        "p",
        "pre",
        "s",
        "small",
        "span",
        "strong",
        "sub",
        "sup",
        "table",
        "tbody",
        "td",
        "th",
        "thead",
        "tr",
        "u",
        "ul",
    }
)
ALLOWED_ATTRIBUTES: Mapping[str, frozenset[str]] = {
    "*": frozenset({"align", "dir"}),
    "a": frozenset({"href", "title"}),
    "img": frozenset({"src", "alt", "width", "height"}),
    "td": frozenset({"colspan", "rowspan", "align"}),
    "th": frozenset({"colspan", "rowspan", "align"}),
}
URL_SCHEMES = frozenset({"http", "https", "mailto", "cid"})
# Elements removed together with everything inside them (the rest of the non-allowed elements
# are unwrapped: their text stays).
DROPPED_WITH_CONTENT = frozenset(
    {
        "applet",
        "embed",
        "frame",
        "frameset",
        "iframe",
        "math",
        "noembed",
        "noframes",
        "object",
        "script",
        "select",
        "style",
        "svg",
        "template",
        "textarea",
        "title",
        "xmp",
    }
)
LINK_REL = "noopener noreferrer nofollow"


def _is_cid(value: str) -> bool:
    return value.strip()[:4].lower() == "cid:"


def _cleaner(**options: object) -> nh3.Cleaner:
    return nh3.Cleaner(
        tags=set(ALLOWED_TAGS),
        clean_content_tags=set(DROPPED_WITH_CONTENT),
        attributes={tag: set(names) for tag, names in ALLOWED_ATTRIBUTES.items()},
        strip_comments=True,
        link_rel=LINK_REL,
        url_schemes=set(URL_SCHEMES),
        **options,  # type: ignore[arg-type]
    )


def _image_src(tag: str, attribute: str, value: str) -> str | None:
    # Only an image carried by the mail itself: no remote resource (tracking pixel), no data:
    # URL. Relative URLs (which would resolve against our origin) are denied by the cleaner.
    if tag == "img" and attribute == "src":
        return value.strip() if _is_cid(value) else None
    return value


# Built once. Most mail has no image: its HTML is cleaned without any Python callback.
# (html5ever also parses ``<image>`` as ``<img>``.)
_IMAGE_TAG = re.compile(r"<im(?:g|age)", re.IGNORECASE)
_CLEANER = _cleaner(url_relative="deny")
_IMAGE_CLEANER = _cleaner(url_relative="deny", attribute_filter=_image_src)


def _clean(html: str) -> str:
    return (_IMAGE_CLEANER if _IMAGE_TAG.search(html) else _CLEANER).clean(html)


def sanitize_html(html: str, *, max_chars: int = MAX_HTML_CHARS) -> str:
    """The mail's HTML reduced to an explicit allow-list of elements, attributes and schemes.

    No scripts, event handlers, styles, forms, frames or embedded documents; links are
    http(s)/mailto/cid only and get ``rel="noopener noreferrer nofollow"``; an image may only
    reference a part of the mail (``cid:``), so nothing is fetched from elsewhere when the post
    is shown. Input beyond ``max_chars`` is cut off; HTML too complex to parse in bounded time
    becomes its text, escaped, one ``<br>`` per line.
    """
    html = html[:max_chars]
    if too_complex(html):
        return _text_as_html(_scan_text(html))
    return _clean(html)


# --- bounds -------------------------------------------------------------------------------------

_TAG = re.compile(r"<(/?)([A-Za-z][^\s/<>]*)([^<>]*)")
# Elements the HTML parser closes by itself (or that never have content): they do not nest.
_SELF_CLOSING = frozenset(
    {
        "area",
        "base",
        "basefont",
        "bgsound",
        "body",
        "br",
        "caption",
        "col",
        "colgroup",
        "dd",
        "dt",
        "embed",
        "frame",
        "head",
        "hr",
        "html",
        "img",
        "input",
        "keygen",
        "li",
        "link",
        "meta",
        "optgroup",
        "option",
        "p",
        "param",
        "rb",
        "rp",
        "rt",
        "rtc",
        "source",
        "tbody",
        "td",
        "tfoot",
        "th",
        "thead",
        "tr",
        "track",
        "wbr",
    }
)


# The attributes of a tag (as _TAG reads it) longer than twice MAX_ATTRIBUTES; a start tag's name.
_WIDE_TAG = re.compile(r"</?[A-Za-z][^\s/<>]*+([^<>]{" + str(2 * MAX_ATTRIBUTES + 1) + ",})")
# What any such tag starts with: a quicker scan (half the time of _WIDE_TAG's) that rules most
# HTML out at once.
_LONG_TAG = re.compile(r"<[^<>]{" + str(2 * MAX_ATTRIBUTES + 1) + "}")
_START_TAG = re.compile(r"<([A-Za-z][^\s/<>]*)")


def too_complex(html: str) -> bool:
    """Whether the HTML is beyond what the HTML parsers handle in bounded time.

    A linear, conservative estimate: the number of tags, the number of character references,
    the attributes of any one tag, and how many elements are open at once (counting end tags
    only against open elements of their name).
    """
    if html.count("&") > MAX_CHARACTER_REFERENCES:
        return True
    if html.count("<") > MAX_TAGS and len(_TAG.findall(html)) > MAX_TAGS:
        return True
    if _LONG_TAG.search(html):
        for attributes in _WIDE_TAG.findall(html):
            if attributes.count("=") > MAX_ATTRIBUTES or len(attributes.split()) > MAX_ATTRIBUTES:
                return True
    # No more start tags that can stay open than the bound: it cannot be reached (most mail).
    starts = Counter(_START_TAG.findall(html))
    if sum(n for name, n in starts.items() if name.lower() not in _SELF_CLOSING) <= (
        MAX_OPEN_ELEMENTS
    ):
        return False
    tags = _TAG.findall(html)
    open_by_name: dict[str, int] = {}
    depth = 0
    for slash, raw_name, _ in tags:
        name = raw_name.lower()
        if name in _SELF_CLOSING:
            continue
        if slash:
            if open_by_name.get(name):
                open_by_name[name] -= 1
                depth -= 1
        else:  # "<div/>" does not close a div in HTML: it counts as open
            open_by_name[name] = open_by_name.get(name, 0) + 1
            depth += 1
            if depth > MAX_OPEN_ELEMENTS:
                return True
    return False


_HIDDEN_ELEMENTS = ("script", "style", "head", "title", "template", "svg", "math", "object")
_BREAKING_TAG = re.compile(
    r"<(?:br|p|div|tr|li|h[1-6]|blockquote|pre|table|ul|ol|dl|dt|dd|hr|center|section|article"
    r"|header|footer|address)\b[^<>]*>?|</(?:p|div|tr|li|h[1-6]|blockquote|pre|table|ul|ol|dl"
    r"|center|section|article|header|footer|address)\s*>?",
    re.IGNORECASE,
)
_ANY_TAG = re.compile(r"<[^<>]*>?")


def _cut_elements(html: str, name: str) -> str:
    """Remove every ``<name ...> ... </name>`` span (to the end when unclosed), in linear time."""
    opening = re.compile(rf"<{name}(?![\w:-])", re.IGNORECASE)
    closing = re.compile(rf"</{name}(?![\w:-])[^<>]*>?", re.IGNORECASE)
    out: list[str] = []
    position = 0
    while (start := opening.search(html, position)) is not None:
        out.append(html[position : start.start()])
        end = closing.search(html, start.end())
        if end is None:
            return "".join(out)
        position = end.end()
    out.append(html[position:])
    return "".join(out)


def _cut_comments(html: str) -> str:
    out: list[str] = []
    position = 0
    while (start := html.find("<!--", position)) >= 0:
        out.append(html[position:start])
        end = html.find("-->", start + 4)
        if end < 0:
            return "".join(out)
        position = end + 3
    out.append(html[position:])
    return "".join(out)


def _scan_text(html: str) -> str:
    """Text of HTML by a linear scan (no tree): for HTML too complex to parse."""
    html = _cut_comments(html)
    for name in _HIDDEN_ELEMENTS:
        html = _cut_elements(html, name)
    html = _BREAKING_TAG.sub("\n", html)
    html = _ANY_TAG.sub("", html)
    return _tidy(html_lib.unescape(html))


def _text_as_html(text: str) -> str:
    return "<br>".join(html_lib.escape(line, quote=False) for line in text.split("\n"))


# --- plain text ---------------------------------------------------------------------------------

# Elements that start a new line, and those that stand apart as paragraphs.
_LINE_TAGS = frozenset(
    {"br", "dd", "div", "dt", "figcaption", "form", "hr", "li", "main", "nav", "tr"}
)
_PARAGRAPH_TAGS = frozenset(
    {
        "address",
        "article",
        "aside",
        "blockquote",
        "center",
        "dl",
        "figure",
        "footer",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "header",
        "ol",
        "p",
        "pre",
        "section",
        "table",
        "ul",
    }
)
_STRUCTURE_TAGS = _LINE_TAGS | _PARAGRAPH_TAGS | {"tbody", "tfoot", "thead", "td", "th"}
_CELL_TAGS = frozenset({"td", "th"})
_LINE, _PARAGRAPH = "\ue000", "\ue001"  # markers, resolved by _tidy
_BREAKS = re.compile(r"\s*[\ue000\ue001][\s\ue000\ue001]*")
_HORIZONTAL_SPACE = re.compile(r"[^\S\n]+")
_BLANK_LINES = re.compile(r"\n{3,}")


class _TextExtractor(HTMLParser):
    """Text of the (well-formed) HTML that nh3 produced: blocks become line breaks."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.chunks: list[str] = []
        self.preformatted = 0

    def _mark(self, tag: str) -> None:
        if tag in _PARAGRAPH_TAGS:
            self.chunks.append(_PARAGRAPH)
        elif tag in _LINE_TAGS:
            self.chunks.append(_LINE)
        elif tag in _CELL_TAGS:
            self.chunks.append(" ")

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.preformatted += tag == "pre"
        self._mark(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag == "pre":
            self.preformatted = max(self.preformatted - 1, 0)
        self._mark(tag)

    def handle_data(self, data: str) -> None:
        data = data.replace(_LINE, "").replace(_PARAGRAPH, "")
        if self.preformatted:
            data = data.replace("\r\n", "\n").replace("\r", "\n").replace("\n", _LINE)
        else:  # line ends in the source are spaces
            data = data.replace("\r", " ").replace("\n", " ")
        self.chunks.append(data)


def _resolve_break(match: re.Match[str]) -> str:
    return "\n\n" if _PARAGRAPH in match.group() else "\n"


def _tidy(text: str) -> str:
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    lines = (_HORIZONTAL_SPACE.sub(" ", line).strip() for line in text.split("\n"))
    return _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip()


_TEXT_CLEANER = nh3.Cleaner(
    tags=set(ALLOWED_TAGS | _STRUCTURE_TAGS),
    clean_content_tags=set(DROPPED_WITH_CONTENT),
    attributes={},
    strip_comments=True,
    link_rel=None,
)


def html_to_text(html: str, *, max_chars: int = MAX_HTML_CHARS) -> str:
    """A plain-text rendering: visible text only, one line per block, entities decoded.

    Scripts, styles and the head are dropped with their content. The HTML is first normalised by
    nh3 (so that html.parser only ever sees well-formed markup); HTML too complex for that is
    reduced to text by a linear scan.
    """
    html = html[:max_chars]
    if too_complex(html):
        return _scan_text(html)
    normalised = _TEXT_CLEANER.clean(html)
    parser = _TextExtractor()
    try:
        parser.feed(normalised)
        parser.close()
    except Exception:  # html.parser raises AssertionError on some input; nh3 output is tame
        return _scan_text(html)
    return _tidy(_BREAKS.sub(_resolve_break, "".join(parser.chunks)))
