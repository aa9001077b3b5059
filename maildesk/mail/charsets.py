"""Bytes to text the way lenient mail software does it: declared charsets read through an
alias table, undeclared 8-bit text recognised before any guess.

Mail lies about its charset all the time: misspelt names ("uft-8"), Microsoft's names
for standard ones (ks_c_5601-1987), supersets sent under the subset's name (GB2312 text
with GBK characters), and raw 8-bit headers with no charset at all, often in the same
legacy charset as the body. The order here: the declared charset (aliased), strictly;
then the other charsets the mail declares; then UTF-8; then the legacy CJK charsets when
the bytes read as CJK text; then charset-normalizer on text long enough to judge; and
last Windows-1252, which decodes anything.

Most mail declares its charsets or is ASCII: what only undeclared 8-bit text needs, the
scripts' patterns (compiled on first use, through re's cache) and charset-normalizer, is
not loaded for it.
"""
from __future__ import annotations

import codecs
import re

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
_CJK_CHARS = r"[\u3000-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uff00-\uffef]"
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
    # valid UTF-8 with 8-bit bytes in it is almost never an accident; then what the mail
    # says its other parts are (a raw subject is usually in the body's charset)
    for name in ("utf-8", *(codec(h) for h in hints)):
        if name is None or name in tried:
            continue
        tried.add(name)
        try:
            return data.decode(name)
        except UnicodeDecodeError:
            pass
    text = _cjk(data) or _cyrillic(data)
    if text is not None:
        return text
    if len(data) >= 64:
        from charset_normalizer import from_bytes
        best = from_bytes(data).best()
        if best is not None and best.encoding not in ("ascii",):
            return str(best)
    return data.decode("cp1252", "replace")


_KANA = r"[\u3040-\u30ff]"
_HANGUL = r"[\uac00-\ud7af]"
_CYRILLIC = r"[\u0400-\u04ff]"
_ACCENT_RUN = r"[\u00c0-\u00ff]{3,}"


def _strict(data: bytes, name: str) -> str | None:
    try:
        return data.decode(name)
    except UnicodeDecodeError:
        return None


def _cjk(data: bytes) -> str | None:
    """Legacy CJK bytes, told apart by what each reading gives: kana only in Japanese,
    Hangul throughout in Korean (Chinese read as Korean mixes in Hanja), GB2312's
    simplified set before Big5's traditional one, GBK and EUC-JP last."""
    def share(text: str, script: str) -> float:
        return len(re.findall(script, text)) / max(1, sum(1 for c in text if ord(c) > 127))

    for name in ("cp932", "euc_jp"):
        text = _strict(data, name)
        if text is not None and _reads_as_cjk(text) and share(text, _KANA) >= 0.2:
            return text
    text = _strict(data, "cp949")
    if text is not None and _reads_as_cjk(text) and share(text, _HANGUL) >= 0.9:
        return text
    for name in ("gb2312", "big5hkscs", "gb18030"):
        text = _strict(data, name)
        if text is not None and _reads_as_cjk(text):
            return data.decode("gb18030") if name == "gb2312" else text
    return None


def _cyrillic(data: bytes) -> str | None:
    """Windows-1251 or KOI8-R text: read as Windows-1252 it is runs of accented letters
    ("Ïðèâåò"), which Western text seldom has."""
    if not re.search(_ACCENT_RUN, data.decode("cp1252", "replace")):
        return None
    best: tuple[float, str] | None = None
    for name in ("cp1251", "koi8_r"):     # each reads the other as Cyrillic with the case
        text = data.decode(name, "replace")   # turned: the right one is mostly lower case
        letters = re.findall(_CYRILLIC, text)
        wide = [c for c in text if ord(c) > 127]
        if wide and len(letters) >= 0.9 * len(wide):
            lower = sum(1 for c in letters if c.islower()) / len(letters)
            if best is None or lower > best[0]:
                best = (lower, text)
    return best[1] if best else None


_CJK_RUN = _CJK_CHARS + "{2,}"


def _reads_as_cjk(text: str) -> bool:
    """CJK text, not Latin text that a double-byte charset happens to accept ("Büro" is two
    valid GB18030 characters, "B黵o"): real CJK comes in runs, and nearly all of it does."""
    wide = [c for c in text if ord(c) > 127]
    cjk = re.findall(_CJK_CHARS, text)
    in_runs = sum(len(r) for r in re.findall(_CJK_RUN, text))
    return bool(wide) and len(cjk) >= 0.9 * len(wide) and in_runs >= max(2, 0.7 * len(cjk))


def _mostly_utf8(data: bytes) -> bool:
    """Valid UTF-8 but for a few bytes (a mangled quoted-printable escape)."""
    text = data.decode("utf-8", "replace")
    bad = text.count("\ufffd")
    return bad <= max(2, len(text) // 200) and bad < sum(1 for c in text if ord(c) > 127)
