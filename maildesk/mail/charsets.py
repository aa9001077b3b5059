"""Bytes to text the way lenient mail software does it: declared charsets read through an
alias table, undeclared 8-bit text recognised before any guess.

Mail lies about its charset all the time: misspelt names ("uft-8"), Microsoft's names
for standard ones (ks_c_5601-1987), supersets sent under the subset's name (GB2312 text
with GBK characters), and raw 8-bit headers with no charset at all, often in the same
legacy charset as the body. The order here: the declared charset (aliased), strictly;
then the other charsets the mail declares; then UTF-8; then the legacy CJK charsets when
the bytes read as CJK text; then charset-normalizer on text long enough to judge; and
last Windows-1252, which decodes anything.
"""
from __future__ import annotations

import codecs
import re

from charset_normalizer import from_bytes

# names seen in real mail -> what Python calls the charset meant (or a superset of it)
ALIASES = {
    "uft-8": "utf-8", "utf8": "utf-8", "utf-8lite": "utf-8", "unicode-1-1-utf-8": "utf-8",
    "unicode-1-1-utf-7": "utf-7", "unicode-2-0-utf-7": "utf-7", "x-unicode20utf7": "utf-7",
    "x-unicode20utf8": "utf-8",
    "gb2312": "gb18030", "gbk": "gb18030", "x-gbk": "gb18030", "cp936": "gb18030",
    "euc-cn": "gb18030", "x-euc-cn": "gb18030", "chinese": "gb18030", "csgb2312": "gb18030",
    "big5": "big5hkscs", "x-x-big5": "big5hkscs", "cn-big5": "big5hkscs",
    "ks_c_5601-1987": "cp949", "ks_c_5601": "cp949", "ksc5601": "cp949", "euc-kr": "cp949",
    "x-euc-kr": "cp949", "korean": "cp949",
    "shift_jis": "cp932", "shift-jis": "cp932", "x-sjis": "cp932", "sjis": "cp932",
    "ms_kanji": "cp932", "windows-31j": "cp932", "x-euc-jp": "euc_jp",
    "iso-2022-jp": "iso2022_jp_ext", "csiso2022jp": "iso2022_jp_ext",
    "iso-8859-8-i": "iso-8859-8", "iso-8859-8-e": "iso-8859-8", "iso-8859-6-i": "iso-8859-6",
    "windows-874": "cp874", "x-mac-roman": "mac_roman", "macintosh": "mac_roman",
    "iso-8859-1": "cp1252", "latin1": "cp1252", "x-user-defined": "cp1252",
}
# said, but meaning "we don't know": read as undeclared
# (8-bit bytes labelled ASCII are as good as unlabelled)
UNKNOWN = {"", "unknown", "unknown-8bit", "x-unknown", "default", "default_charset", "none",
           "charset", "8bit", "binary", "x-binaryenc", "iso", "auto", "us-ascii", "ascii",
           "ansi_x3.4-1968", "us"}
# legacy charsets that raw 8-bit CJK headers come in, most common first
CJK = ("gb18030", "cp932", "big5hkscs", "cp949", "euc_jp")
_CJK_CHARS = re.compile(r"[\u3000-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uff00-\uffef]")
_TRIM = re.compile(r"[\s'\"]+")


def codec(name: str | None) -> str | None:
    """Python's codec for a charset name as mail writes it; None: unknown or "don't know"."""
    key = _TRIM.sub("", (name or "").lower())
    if key in UNKNOWN:
        return None
    key = ALIASES.get(key, key)
    try:
        return codecs.lookup(key).name
    except LookupError:
        return None


def decode(data: bytes, declared: str | None = None, hints: tuple[str, ...] = ()) -> str:
    """Text of data; declared: the part's charset; hints: the other charsets of the mail."""
    name = codec(declared)
    if data.isascii() and b"\x1b" not in data and name != "utf-7":
        return data.decode("ascii")
    if name is not None:
        try:
            return data.decode(name)
        except UnicodeDecodeError:
            if name == "utf-8" and _mostly_utf8(data):   # one bad byte: not the whole text
                return data.decode("utf-8", "replace")
    return undeclared(data, hints, skip=name)


def undeclared(data: bytes, hints: tuple[str, ...] = (), skip: str | None = None) -> str:
    """8-bit text whose charset is not said (or was wrong)."""
    if b"\x1b$" in data or b"\x1b(" in data:          # ISO-2022-JP escapes
        try:
            return data.decode("iso2022_jp_ext")
        except UnicodeDecodeError:
            pass
    tried = {skip}
    for name in (*(codec(h) for h in hints), "utf-8"):
        if name is None or name in tried or name in ("cp1252", "ascii"):
            continue
        tried.add(name)
        try:
            return data.decode(name)
        except UnicodeDecodeError:
            pass
    for name in CJK:
        if name in tried:
            continue
        try:
            text = data.decode(name)
        except UnicodeDecodeError:
            continue
        wide = sum(1 for c in text if ord(c) > 127)
        if wide and len(_CJK_CHARS.findall(text)) >= 0.8 * wide:
            return text
    if len(data) >= 64:
        best = from_bytes(data).best()
        if best is not None and best.encoding not in ("ascii",):
            return str(best)
    return data.decode("cp1252", "replace")


def _mostly_utf8(data: bytes) -> bool:
    """Valid UTF-8 but for a few bytes (a mangled quoted-printable escape)."""
    text = data.decode("utf-8", "replace")
    bad = text.count("\ufffd")
    return bad <= max(2, len(text) // 200) and bad < sum(1 for c in text if ord(c) > 127)
