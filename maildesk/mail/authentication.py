"""Is this mail really from the domain its From names? DKIM, or a trusted upstream verdict.

Two proofs count, both aligned with the From domain by the Public Suffix List
(DMARC's relaxed alignment: the same organisational domain, never a public
suffix such as `com` or `co.uk`):
- a DKIM signature by that organisation that verifies (dkimpy) over the whole
  body and over every From and Subject field the mail has;
- an Authentication-Results header (RFC 8601) added by one of our own MTAs,
  named by its authserv-id in `desk.trusted_authserv_ids`, saying dkim=pass
  for that organisation or dmarc=pass for the From domain. It counts only on
  mail that came through that MTA, and only in the topmost run of such
  headers (see `results_pass`). Values are read as they are on the wire:
  an RFC 2047 encoded word is no header our MTA wrote.

Both are verified on the bytes the parser reads: mail whose lines read two
ways (`ambiguous_lines`) or that has more than one From proves nothing.

dkimpy and its resolver (dnspython) are imported at the first signature to check: a
tenth of a second that a pipe delivery of unsigned mail does without.
"""
from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from email.utils import getaddresses
from functools import cache
from typing import Any

import authres
from publicsuffixlist import PublicSuffixList

log = logging.getLogger("maildesk.auth")
DnsFunc = Callable[..., Any]
DKIM, RESULTS = "dkim", "authentication-results"

# What MTAs write above the Authentication-Results they add when they deliver: trace
# fields (RFC 5321 4.4), the envelope as delivery agents record it, ARC, SPF results.
TRACE = frozenset({"return-path", "received", "x-received", "received-spf", "delivered-to",
                   "x-original-to", "envelope-to", "x-envelope-to", "x-envelope-from",
                   "arc-seal", "arc-message-signature", "arc-authentication-results"})
MAX_FIELDS = 500


@cache
def _suffixes() -> PublicSuffixList:
    return PublicSuffixList()


def organisation(domain: str) -> str | None:
    """The registrable domain (example.co.uk for mail.example.co.uk); None for a public
    suffix itself, which nobody owns and no signature may speak for."""
    return _suffixes().privatesuffix(domain.lower().strip().rstrip("."))


def aligned(signer: str, domain: str) -> bool:
    org = organisation(domain)
    return org is not None and organisation(signer) == org


_BARE_CR = re.compile(rb"\r(?!\n)")
_BARE_LF = re.compile(rb"(?<!\r)\n")
_END_OF_HEAD = re.compile(rb"\r?\n\r?\n")


def ambiguous_lines(raw: bytes) -> str | None:
    """Why the mail's lines could be read two ways, or None. DKIM (dkimpy) ends lines only
    at CRLF or LF; the mail parser also at a bare CR. A bare CR, or LF lines among CRLF
    ones in the header block, lets a signed mail carry headers and text that the
    signature never covered (issue 15: `X-Junk: x\\rFrom: bob@...` in front of any
    genuine newsletter of the agents' domain)."""
    if _BARE_CR.search(raw):
        return "a bare CR"
    head = raw.split(b"\r\n\r\n", 1)[0] if b"\r\n\r\n" in raw else raw.split(b"\n\n", 1)[0]
    if b"\r\n" in head and _BARE_LF.search(head):
        return "LF and CRLF line ends mixed in the header block"
    return None


def header_fields(raw: bytes) -> list[tuple[str, str]]:
    """The header block as it is on the wire, top first: (lower-case name, unfolded value),
    nothing decoded. A line that is no field ends the block, as it ends the parser's."""
    m = _END_OF_HEAD.search(raw, 0, 1_000_000)
    head = raw[:m.start()] if m else raw[:1_000_000]
    fields: list[tuple[str, str]] = []
    for line in re.split(r"\r?\n", head.decode("utf-8", "replace")):
        if line[:1] in (" ", "\t") and fields:
            fields[-1] = (fields[-1][0], f"{fields[-1][1]} {line.strip()}")
            continue
        name, colon, value = line.partition(":")
        if not colon or not name.strip() or len(fields) >= MAX_FIELDS:
            break
        fields.append((name.strip().lower(), value.strip()))
    return fields


def why_no_proof(raw: bytes, fields: list[tuple[str, str]] | None = None) -> str | None:
    """What makes any proof of this mail's sender worthless, or None: lines that read two
    ways, or a From that names no one person (two From fields, two mailboxes in one, or
    none: the parser then takes Sender or Reply-To, which nothing proves)."""
    why = ambiguous_lines(raw)
    if why is not None:
        return why
    froms = [v for name, v in (header_fields(raw) if fields is None else fields)
             if name == "from"]
    if len(froms) != 1:
        return f"{len(froms)} From fields"
    if len([a for _n, a in getaddresses(froms) if "@" in a]) != 1:
        return "a From that does not name exactly one mailbox"
    return None


def _provable(raw: bytes, domain: str, fields: list[tuple[str, str]] | None
              ) -> list[tuple[str, str]] | None:
    """fields as the caller gives them (it found no doubt in the mail), else the mail's
    own, read and checked here; None when no proof of its sender can hold."""
    if fields is not None:
        return fields
    fields = header_fields(raw)
    why = why_no_proof(raw, fields)
    if why is not None:
        log.info("no proof of %s can hold for this mail: %s", domain, why)
        return None
    return fields


def proof(raw: bytes, domain: str, *, trusted_ids: list[str], via_mta: bool,
          verify_dkim: bool, dns: DnsFunc | None = None,
          fields: list[tuple[str, str]] | None = None) -> str | None:
    """How the mail proves it comes from domain: DKIM, RESULTS, or None. fields: the
    header fields of a mail the caller found no doubt in (why_no_proof)."""
    fields = _provable(raw, domain, fields)
    if fields is None:
        return None
    if via_mta and results_pass(fields, trusted_ids, domain):
        return RESULTS
    if verify_dkim and dkim_pass(raw, domain, dns, fields):
        return DKIM
    return None


class KeyCache:
    """DKIM key records from DNS, kept for an hour (a miss for five minutes). The check
    runs for every person's signed mail while intake holds its transaction: the same
    few selectors (a provider's) answer most of it, and a slow resolver must not be
    asked for them again for each mail. Bounded: the oldest half goes when full."""

    def __init__(self, lookup: DnsFunc, size: int = 4096, hit: float = 3600.0,
                 miss: float = 300.0, timeout: float = 2.0) -> None:
        self._lookup, self._size, self._hit, self._miss = lookup, size, hit, miss
        self._timeout = timeout
        self._kept: dict[bytes, tuple[float, bytes | None]] = {}
        self._lock = threading.Lock()

    def __call__(self, name: bytes, timeout: float = 5) -> bytes | None:
        now = time.monotonic()
        with self._lock:
            found = self._kept.get(name)
        if found is not None and found[0] > now:
            return found[1]
        try:
            record = self._lookup(name, timeout=min(timeout, self._timeout))
        except Exception:  # noqa: BLE001 - a resolver failure is no key, like a miss
            record = None
        with self._lock:
            if len(self._kept) >= self._size:
                for old in list(self._kept)[:self._size // 2]:
                    del self._kept[old]
            self._kept[name] = (now + (self._hit if record else self._miss), record)
        return record


def _system_txt(name: bytes, timeout: float = 5) -> bytes | None:
    """A TXT record by dkimpy's resolver (dnspython), the system's name servers."""
    import dkim.dnsplug
    record: bytes | None = dkim.dnsplug.get_txt(name, timeout=timeout)
    return record


SYSTEM_DNS = KeyCache(_system_txt)


def dkim_pass(raw: bytes, domain: str, dns: DnsFunc | None = None,
              fields: list[tuple[str, str]] | None = None) -> bool:
    """A DKIM signature of domain's organisation that verifies over the whole body (a
    signature with l= covers only a prefix: text appended after it would pass) and over
    every From and Subject field (one the signature leaves out is the one the parser
    reads), on a mail whose lines mean the same to DKIM and to the parser (fields: as
    for `proof`)."""
    if b"dkim-signature" not in raw[:200_000].lower():
        return False
    fields = _provable(raw, domain, fields)
    if fields is None:
        return False
    present = {n: sum(name == n for name, _v in fields) for n in ("from", "subject")}
    import dkim
    try:
        verifier = dkim.DKIM(raw)
        for i, sig in enumerate(_signatures(verifier)):
            d = sig.get(b"d", b"").decode(errors="replace")
            signed = [h.strip().lower() for h in sig.get(b"h", b"").decode(errors="replace")
                      .split(":")]
            if not aligned(d, domain) or b"l" in sig \
                    or any(signed.count(n) < k for n, k in present.items()):
                continue
            ok = verifier.verify(idx=i, dnsfunc=dns or SYSTEM_DNS)
            if ok:
                return True
    except Exception as e:  # dkimpy raises many kinds on hostile input; none is proof
        log.info("DKIM check failed for %s: %s: %s", domain, type(e).__name__, e)
    return False


def _signatures(verifier: Any) -> list[dict[bytes, bytes]]:
    import dkim.util
    out = []
    for name, value in verifier.headers:
        if name.lower() == b"dkim-signature":
            try:
                out.append(dkim.util.parse_tag_value(value))
            except dkim.util.InvalidTagValueList:
                out.append({})
    return out


def results_pass(fields: list[tuple[str, str]], trusted: list[str], domain: str) -> bool:
    """dkim=pass or dmarc=pass for domain in the Authentication-Results our MTA added.

    RFC 8601 section 5: only the topmost contiguous ones are ours. Reading from the
    top, trace fields that MTAs add on delivery may come first; then the run of
    Authentication-Results whose authserv-id is trusted. The first field of any
    other kind, or one with another authserv-id, ends the run: whatever is below it
    was in the mail when it reached us, and its sender could have written it,
    our authserv-id included."""
    trusted = [t.lower() for t in trusted]
    if not trusted:
        return False
    in_run = False
    for name, value in fields:
        if name != "authentication-results":
            if in_run or name not in TRACE:
                return False
            continue
        in_run = True
        if "=?" in value:       # an encoded word: no MTA writes one here
            return False
        try:
            parsed = authres.AuthenticationResultsHeader.parse(f"Authentication-Results: {value}")
        except Exception:  # an unparseable header cannot be ours: stop trusting here
            return False
        if str(parsed.authserv_id).lower() not in trusted:
            return False
        if any(_passes(r, domain) for r in parsed.results):
            return True
    return False


def _passes(result: Any, domain: str) -> bool:
    props = {f"{p.type}.{p.name}".lower(): str(p.value) for p in result.properties}
    if result.method == "dkim" and result.result == "pass":
        signer = props.get("header.d") or props.get("header.i", "").rpartition("@")[2]
        return bool(signer) and aligned(signer, domain)
    return result.method == "dmarc" and result.result == "pass" \
        and props.get("header.from", "").lower().rstrip(".") == domain.lower()
