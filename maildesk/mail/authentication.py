"""Is this mail really from the domain its From names? DKIM, or a trusted upstream verdict.

Two proofs count, both aligned with the From domain:
- a DKIM signature by that domain (or its parent) that verifies (dkimpy);
- an Authentication-Results header (RFC 8601) added by one of our own MTAs,
  named by its authserv-id in `desk.trusted_authserv_ids`, saying dkim=pass
  for that domain or dmarc=pass for it. Only the headers above the first
  untrusted one count: anything below could have been written by the sender
  (RFC 8601 section 5), and a forged header naming our authserv-id below a
  genuine one is ignored.
"""
from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Any

import authres
import dkim

log = logging.getLogger("maildesk.auth")
DnsFunc = Callable[..., Any]


def _aligned(signer: str, domain: str) -> bool:
    signer, domain = signer.lower().rstrip("."), domain.lower().rstrip(".")
    return domain == signer or domain.endswith("." + signer)


_BARE_CR = re.compile(rb"\r(?!\n)")
_BARE_LF = re.compile(rb"(?<!\r)\n")


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


def dkim_pass(raw: bytes, domain: str, dnsfunc: DnsFunc | None = None) -> bool:
    """A DKIM signature of domain (or a parent of it) that verifies, over the whole body
    (a signature with l= covers only a prefix: text appended after it would pass), on a
    mail whose lines mean the same to DKIM and to the parser."""
    if b"dkim-signature" not in raw[:200_000].lower():
        return False
    why = ambiguous_lines(raw)
    if why is not None:
        log.info("DKIM is no proof for %s: %s", domain, why)
        return False
    try:
        verifier = dkim.DKIM(raw)
        for i, sig in enumerate(_signatures(verifier)):
            d = sig.get(b"d", b"").decode(errors="replace")
            if not _aligned(d, domain) or b"l" in sig:
                continue
            ok = verifier.verify(idx=i, dnsfunc=dnsfunc) if dnsfunc else verifier.verify(idx=i)
            if ok:
                return True
    except Exception as e:  # dkimpy raises many kinds on hostile input; none is proof
        log.info("DKIM check failed for %s: %s: %s", domain, type(e).__name__, e)
    return False


def _signatures(verifier: Any) -> list[dict[bytes, bytes]]:
    out = []
    for name, value in verifier.headers:
        if name.lower() == b"dkim-signature":
            try:
                out.append(dkim.util.parse_tag_value(value))
            except dkim.util.InvalidTagValueList:
                out.append({})
    return out


def trusted_results_pass(headers: tuple[tuple[str, str], ...], trusted: list[str],
                         domain: str) -> bool:
    """dkim=pass or dmarc=pass for domain in the trusted Authentication-Results on top."""
    if not trusted:
        return False
    for name, value in headers:
        if name != "authentication-results":
            continue
        try:
            parsed = authres.AuthenticationResultsHeader.parse(f"Authentication-Results: {value}")
        except Exception:  # an unparseable header cannot be ours: stop trusting here
            return False
        if parsed.authserv_id.lower() not in trusted:
            return False     # below an untrusted one, nothing is ours any more
        for r in parsed.results:
            props = {f"{p.type}.{p.name}".lower(): str(p.value) for p in r.properties}
            if r.method == "dkim" and r.result == "pass" \
                    and _aligned(props.get("header.d", props.get("header.i", "")).split("@")[-1],
                                 domain):
                return True
            if r.method == "dmarc" and r.result == "pass" \
                    and props.get("header.from", "").lower() == domain.lower():
                return True
    return False
