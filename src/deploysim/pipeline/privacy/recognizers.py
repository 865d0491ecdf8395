"""Built-in fast recognizers: regular expressions that propose, validators that decide.

Each kind has a cheap candidate pattern and, where a checksum or numbering plan
exists, a library validator (Luhn, IBAN mod-97, libphonenumber, ``ipaddress``), so
random digit runs in code or logs are not flagged. Kind names follow Presidio's
entity names so built-in and Presidio spans mix in one list.
"""

from __future__ import annotations

import bisect
import functools
import ipaddress
import re
import string
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import phonenumbers
from stdnum import iban as stdnum_iban
from stdnum import luhn

EMAIL = "EMAIL_ADDRESS"
PHONE = "PHONE_NUMBER"
CARD = "CREDIT_CARD"
IBAN = "IBAN_CODE"
IP = "IP_ADDRESS"
SSN = "US_SSN"
NINO = "UK_NINO"
API_KEY = "API_KEY"
URL_CREDENTIALS = "URL_CREDENTIALS"
SECRET = "SECRET"
ADDRESS = "STREET_ADDRESS"
PERSON = "PERSON"
LOCATION = "LOCATION"
ORGANIZATION = "ORGANIZATION"

BUILTIN_KINDS: tuple[str, ...] = (EMAIL, PHONE, CARD, IBAN, IP, SSN, NINO, API_KEY, URL_CREDENTIALS, SECRET, ADDRESS)
PRESIDIO_KINDS: tuple[str, ...] = (PERSON, LOCATION, ORGANIZATION)

#: When spans overlap, the earlier kind wins (a card number inside a URL credential is part of the credential).
PRIORITY: dict[str, int] = {
    kind: i
    for i, kind in enumerate(
        (URL_CREDENTIALS, API_KEY, EMAIL, IBAN, CARD, SSN, NINO, IP, PHONE, SECRET, ADDRESS, PERSON, ORGANIZATION,
         LOCATION)
    )
}


@dataclass(frozen=True, slots=True)
class Span:
    start: int
    end: int
    kind: str

    def text(self, source: str) -> str:
        return source[self.start : self.end]


Finder = Callable[[str], Iterable[Span]]

# --- candidate patterns -------------------------------------------------------------------------

# Internationalised addresses too (RFC 6531): Unicode letters in the local part and the domain, IDN TLDs.
_EMAIL_RE = re.compile(
    r"(?<![\w.+%-])[^\W_](?:[\w.%+-]{0,63})@(?:[^\W_](?:[\w-]{0,61}[^\W_])?\.)+"
    r"(?:[^\W\d_]{2,24}|xn--[a-z0-9-]{2,59})(?![\w-])"
)
_FILE_SUFFIXES = frozenset("png jpg jpeg gif svg webp ico bmp js ts css html pdf zip tar gz".split())

# Phone candidates: optional +country, groups of digits joined by one separator each; no newlines.
_PHONE_RE = re.compile(r"(?<![\w+.\-/@#=])(?:\+\d{1,3}[ .\-]?)?(?:\(\d{1,5}\)[ .\-]?)?\d{1,5}(?:[ .\-]\d{1,8}){1,5}"
                       r"(?![\w\-]|\.\d)")
_PHONE_PLUS_COMPACT_RE = re.compile(r"(?<![\w+])\+\d{1,3}[ .\-]?\d{6,14}(?!\w)")
# National numbers written without separators: 10 digits (NANP), 11 with a trunk prefix (1 or 0).
_PHONE_COMPACT_RE = re.compile(r"(?<![\w+.\-/@#=$:])(?:\d{10}|[01]\d{10})(?![\w\-]|\.\d)")
_NANP_REGIONS = frozenset("US CA AG AI AS BB BM BS DM DO GD GU JM KN KY LC MP MS PR SX TC TT VC VG VI".split())
_COMPACT_DATE = re.compile(r"^(?:19|20)\d\d(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])")
_DATE_START = re.compile(r"^\d{4}-\d{2}-\d{2}")
_DATE_LIKE = re.compile(r"^\d{4}[-./]\d{1,2}[-./]\d{1,2}$|^\d{1,2}[-./]\d{1,2}[-./]\d{2,4}$")

_CARD_RE = re.compile(r"(?<![\w\-.])\d(?:[ \-]?\d){12,18}(?![\w\-]|\.\d)")
_CARD_PREFIX = re.compile(r"^(?:4|5[1-5]|2[2-7]|3[47]|6011|65|64[4-9]|35|3[0689]|62)")

_IBAN_RE = re.compile(r"(?<![\w])[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?(?!\w)")

_IPV4_RE = re.compile(r"(?<![\w.])(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
                      r"(?![\w]|\.\d)")
_IPV6_RE = re.compile(r"(?<![\w:.])[0-9A-Fa-f]{0,4}:[0-9A-Fa-f:]{2,38}(?![\w:])")

_SSN_RE = re.compile(r"(?<![\w\-])(?!000|666|9\d\d)\d{3}([ \-])(?!00)\d{2}\1(?!0000)\d{4}(?![\w\-])")
# Nine digits in a row are an SSN only where the text says so (ids, decimals and URLs are full of them).
_SSN_COMPACT_RE = re.compile(r"(?<![\w\-./])(?!000|666|9\d\d)\d{3}(?!00)\d{2}(?!0000)\d{4}(?![\w\-/]|\.\d)")
_SSN_CONTEXT = re.compile(r"(?i)(?:\bssn|social[ \-]?security|\bsocial\b|\bss ?#|\bss no|\btax ?id|\btaxpayer|\bitin\b"
                          r"|\btin\b)[^\n\d]{0,40}$")
_NINO_RE = re.compile(r"(?<!\w)(?!BG|GB|NK|KN|TN|NT|ZZ)[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z] ?\d{2} ?\d{2} ?\d{2} ?[A-D]"
                      r"(?!\w)")

_API_KEY_RE = re.compile(
    r"(?<![A-Za-z0-9_\-])(?:"
    r"sk-(?:ant-|proj-|live-|test-|or-v1-)?[A-Za-z0-9_\-]{20,}"
    r"|(?:sk|pk|rk)_(?:live|test)_[A-Za-z0-9]{16,}"
    r"|gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{22,}"
    r"|(?:AKIA|ASIA)[A-Z0-9]{16}"
    r"|xox[abposr]-[A-Za-z0-9\-]{10,}"
    r"|AIza[0-9A-Za-z_\-]{35}"
    r"|hf_[A-Za-z0-9]{30,}"
    r"|glpat-[A-Za-z0-9_\-]{20,}"
    r"|SG\.[A-Za-z0-9_\-]{16,}\.[A-Za-z0-9_\-]{16,}"
    r"|eyJ[A-Za-z0-9_\-]{10,}\.eyJ[A-Za-z0-9_\-]{10,}\.[A-Za-z0-9_\-]{10,}"
    r")(?![A-Za-z0-9_\-])"
)

_URL_CRED_RE = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.\-]{1,15}://([^\s:/@\"'<>]{1,64}:[^\s/@\"'<>]{1,128})@[\w.\-\[]")

_SECRET_RE = re.compile(
    r"(?i)\b(?:password|passwd|passphrase|passcode|pwd|pin code|api[_ \-]?key|secret[_ \-]?key|client[_ \-]?secret"
    r"|access[_ \-]?token|auth[_ \-]?token|bearer)\b[\"']?\s*(?:[:=]|\bis\b|\bBearer\b)?\s*[\"']?"
    r"([^\s\"'`,;()\[\]{}<>$]{6,128})"
)
_SECRET_PLACEHOLDERS = re.compile(r"(?i)^(?:your|my|the|none|null|true|false|string|xxx|\*{3}|example|changeme"
                                  r"|password|secret|token|required|optional|undefined)")

_STREET_SUFFIX = (
    r"(?:Street|St|Avenue|Ave|Road|Rd|Boulevard|Blvd|Lane|Ln|Drive|Dr|Court|Ct|Way|Place|Pl|Terrace|Ter|Circle|Cir"
    r"|Parkway|Pkwy|Highway|Hwy|Square|Sq|Crescent|Close|Trail|Trl)"
)
_ADDRESS_RE = re.compile(
    r"(?<![\w\-.])\d{1,5}[A-Za-z]?(?: [A-Z][a-z]+\.?| [NSEW]\.?| \d{1,3}(?:st|nd|rd|th)){1,4} " + _STREET_SUFFIX
    + r"\b(?:,? (?:Apt|Apartment|Suite|Ste|Unit|Fl|Floor|#)\.? ?[\w\-]{1,6})?"
)


# --- validators -----------------------------------------------------------------------------------


def digits_of(text: str) -> str:
    return "".join(c for c in text if c.isdigit())


def valid_card(text: str) -> bool:
    digits = digits_of(text)
    # Test numbers (4111 1111 1111 1111, 4242...) are cards too: people paste them with real ones.
    if not 13 <= len(digits) <= 19 or not _CARD_PREFIX.match(digits):
        return False
    seps = {c for c in text if not c.isdigit()}
    if len(seps) > 1:
        return False
    if seps:  # printed cards are grouped 4-4-4-4(-3) or, for Amex, 4-6-5
        groups = [len(g) for g in text.split(seps.pop())]
        if groups not in ([4, 4, 4, 4], [4, 6, 5], [4, 4, 4, 4, 3]):
            return False
    return luhn.is_valid(digits)


def valid_iban(text: str) -> bool:
    return stdnum_iban.is_valid(text.replace(" ", ""))


def parse_phone(text: str, regions: tuple[str, ...]) -> phonenumbers.PhoneNumber | None:
    """The number ``text`` denotes if it is a phone number for one of ``regions`` (or international).

    Recall first: a number in a range reserved for fiction or not yet assigned (555-01xx, 07700 900xxx)
    is "invalid" to libphonenumber but is still somebody's number in a log; it counts when its length
    is possible for the region and, for NANP, its area code and exchange have the plan's shape.
    """
    candidates = ("ZZ",) if text.startswith("+") else regions
    for region in candidates:
        try:
            number = phonenumbers.parse(text, None if region == "ZZ" else region)
        except phonenumbers.NumberParseException:
            continue
        if phonenumbers.is_valid_number(number) or _plausible_number(number, text):
            return number
    return None


def _plausible_number(number: phonenumbers.PhoneNumber, text: str) -> bool:
    """A possible number with the numbering plan's shape, though not (yet) assigned."""
    if not phonenumbers.is_possible_number(number):
        return False
    national = str(number.national_number)
    if number.country_code == 1:  # NANP: NXX-NXX-XXXX, grouped 3-3-4 (or not at all)
        groups = [len(g) for g in re.findall(r"\d+", text.removeprefix("+"))]
        if groups[:1] == [1] and len(groups) > 1:
            groups = groups[1:]
        return (len(national) == 10 and national[0] in "23456789" and national[3] in "23456789"
                and groups in ([3, 3, 4], [3, 7], [10], [11]))
    # elsewhere a national number is written with its trunk prefix 0, or internationally with +
    if not text.lstrip("(").startswith(("0", "+")):
        return False
    if number.country_code == 44:  # UK: geographic, mobile, non-geographic: 10 national digits
        return len(national) == 10 and national[0] in "123578"
    return len(national) >= 8


def _valid_phone_shape(text: str) -> bool:
    digits = digits_of(text)
    if not 7 <= len(digits) <= 15 or _DATE_LIKE.match(text) or _DATE_START.match(text):
        return False
    if text.startswith("+"):
        return True
    # National numbers: grouped like a phone number, not a decimal or a version number.
    seps = [c for c in text if not c.isdigit() and c not in "()"]
    if "." in seps and (len(set(seps)) > 1 or len(seps) == 1):  # 37.12332123 is a decimal
        return False
    return len(digits) >= 9 and (len(seps) >= 1 or "(" in text)


def valid_ip(text: str) -> bool:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return False
    if address.is_loopback or address.is_unspecified or address.is_multicast:
        return False
    if address.version == 4:
        return text not in ("255.255.255.255",) and not text.startswith("0.")
    return text.count(":") >= 3 or len(text) >= 9


# --- finders: a cheap trigger finds the few places worth a closer look; the exact pattern runs there --


def _class_table(classes: dict[str, str], other: str) -> bytes:
    """A ``bytes.translate`` table sending each ASCII character in a key to that key's class letter, the rest to
    ``other``."""
    table = bytearray(other.encode() * 256)
    for members, letter in classes.items():
        for c in members.encode():
            table[c] = ord(letter)
    return bytes(table)


#: Character classes of the trigger patterns: a digit is 0, an upper-case letter A, a lower-case one a; the
#: separators the patterns name stand for themselves, everything else (non-ASCII too) is ``#``.
_SHAPE = _class_table({string.digits: "0", string.ascii_uppercase: "A", string.ascii_lowercase: "a", "(": "(",
                       ")": ")", ".": ".", "-": "-", " ": " "}, "#")
#: For the IPv6 trigger: a hexadecimal digit is h, a colon stays, everything else is ``#``.
_HEX_SHAPE = _class_table({string.hexdigits: "h", ":": ":"}, "#")
#: A digit ``\d`` matches that is not 0-9 (Arabic-Indic, full-width, ...).
_NON_ASCII_DIGIT = re.compile(r"[^\D0-9]")


@functools.lru_cache(maxsize=4)  # each text is shaped once for all the finders that ask in a row
def _shape(text: str, table: bytes, unicode_digits: bool) -> bytes | None:
    """``text`` one byte per character, each byte its character's class in ``table``; None where the text holds
    a digit outside ASCII and ``unicode_digits`` (the str pattern matches it with ``\\d``, the table cannot)."""
    if text.isascii():
        return text.encode("ascii").translate(table)
    if unicode_digits and _NON_ASCII_DIGIT.search(text):
        return None
    return text.encode("ascii", "replace").translate(table)  # one ``?`` per other character: positions kept


@dataclass(frozen=True)
class _Trigger:
    """A trigger pattern over the text, and the same pattern over the text's classes (``_shape``).

    ``re`` tries a pattern that begins with a character class at every character of the text (~10 ns each);
    over the classes the pattern begins with a literal, which ``re`` skips to with a fast search, about ten
    times faster. Same matches: every character class in ``pattern`` is one class letter of ``table``.
    """

    pattern: re.Pattern[str]
    shaped: re.Pattern[bytes]
    table: bytes
    unicode_digits: bool = True  # ``pattern`` has ``\\d``, which matches digits outside ASCII too

    def finditer(self, text: str) -> Iterator[re.Match[Any]]:
        shape = _shape(text, self.table, self.unicode_digits)
        return self.pattern.finditer(text) if shape is None else self.shaped.finditer(shape)

    def search(self, text: str) -> re.Match[Any] | None:
        shape = _shape(text, self.table, self.unicode_digits)
        return self.pattern.search(text) if shape is None else self.shaped.search(shape)


_NUMERIC_TRIGGER = _Trigger(re.compile(r"\d[\d().\- ]{5,40}\d"), re.compile(rb"0[0().\- ]{5,40}0"), _SHAPE)
_IBAN_NINO_TRIGGER = _Trigger(re.compile(r"[A-Z][A-Z] ?\d\d"), re.compile(rb"AA ?00"), _SHAPE)
_IPV6_TRIGGER = _Trigger(re.compile(r"[0-9a-fA-F]:[0-9a-fA-F:]*:"), re.compile(rb"h:[h:]*:"), _HEX_SHAPE,
                         unicode_digits=False)
_ADDRESS_TRIGGER = re.compile(" " + _STREET_SUFFIX + r"\b")
#: What every street address starts with (a house number, then a word, a compass point or an ordinal):
#: texts without it are skipped before the suffix scan, which is slow in ``re`` (it tries at every space).
_ADDRESS_START = _Trigger(re.compile(r"\d[A-Za-z]? [A-Z\d]"), re.compile(rb"0[Aa]? [A0]"), _SHAPE)
#: Every key format of ``_API_KEY_RE`` begins where a run of key characters ([A-Za-z0-9_-]) begins (its
#: look-behind), and that run is at least 13 characters long (``eyJ`` and 10; the others are longer), except
#: SendGrid's ``SG.``, whose dot is followed by such a run. Over ``_KEY_CHARS`` a run start is a space, 13 ``t``.
_KEY_CHARS = _class_table({string.ascii_letters + string.digits + "_-": "t"}, " ")
_KEY_RUN_START = re.compile(re.escape(b" " + b"t" * 13))
_SECRET_WORDS = ("pass", "Pass", "PASS", "pwd", "PWD", "pin code", "PIN code", "key", "Key", "KEY", "secret", "Secret",
                 "SECRET", "token", "Token", "TOKEN", "bearer", "Bearer")


def _occurrences(text: str, needle: str) -> Iterable[int]:
    i = text.find(needle)
    while i != -1:
        yield i
        i = text.find(needle, i + 1)


def _windowed(pattern: re.Pattern[str], text: str, start: int, end: int, longest: int = 200) -> Iterable[re.Match[str]]:
    """``pattern`` matches that start inside [start, end); lookarounds see ``longest`` characters past ``end``."""
    for m in pattern.finditer(text, max(0, start), min(len(text), end + longest)):
        if m.start() >= end:
            return
        yield m


#: The local part before an ``@``: ``_EMAIL_RE`` can only begin where this run of characters begins (the
#: character before is outside the class), so each ``@`` has one place to try.
_EMAIL_LOCAL = re.compile(r"[\w.%+-]{1,64}\Z")


def find_emails(text: str) -> list[Span]:
    """``_EMAIL_RE.finditer`` over the text, tried only where the local part before each ``@`` begins."""
    if "@" not in text:
        return []
    spans: list[Span] = []
    pos = 0  # where the last match ended: finditer's matches do not overlap
    for at in _occurrences(text, "@"):
        local = _EMAIL_LOCAL.search(text, max(pos, at - 64), at)  # \Z matches at ``at``, the end of this window
        m = _EMAIL_RE.match(text, local.start()) if local else None
        if m is None:
            continue
        pos = m.end()
        if m.group().rsplit(".", 1)[-1].lower() not in _FILE_SUFFIXES:
            spans.append(Span(m.start(), m.end(), EMAIL))
    return spans


def make_numeric_finder(regions: tuple[str, ...]) -> Finder:
    """Cards, US SSNs, IPv4 addresses and phone numbers all start as a run of digits and separators."""

    def find_numeric(text: str) -> list[Span]:
        spans: list[Span] = []
        for trigger in _NUMERIC_TRIGGER.finditer(text):
            lo, hi = trigger.start() - 6, trigger.end()
            for m in _windowed(_CARD_RE, text, lo, hi, 4):
                if valid_card(m.group()):
                    spans.append(Span(m.start(), m.end(), CARD))
            for m in _windowed(_SSN_RE, text, lo, hi, 4):
                spans.append(Span(m.start(), m.end(), SSN))
            for m in _windowed(_SSN_COMPACT_RE, text, lo, hi, 4):
                if _SSN_CONTEXT.search(text, max(0, m.start() - 60), m.start()):
                    spans.append(Span(m.start(), m.end(), SSN))
            if "." in text[trigger.start() : hi]:
                for m in _windowed(_IPV4_RE, text, lo, hi, 4):
                    if valid_ip(m.group()):
                        spans.append(Span(m.start(), m.end(), IP))
            for pattern in (_PHONE_RE, _PHONE_PLUS_COMPACT_RE):
                for m in _windowed(pattern, text, lo, hi, 4):
                    candidate = m.group()
                    if _valid_phone_shape(candidate) and parse_phone(candidate, regions) is not None:
                        spans.append(Span(m.start(), m.end(), PHONE))
            for m in _windowed(_PHONE_COMPACT_RE, text, lo, hi, 4):
                candidate = m.group()
                # A national trunk prefix 0 means a non-NANP plan; otherwise only NANP's shape is a phone.
                plans = tuple(r for r in regions if (r in _NANP_REGIONS) != candidate.startswith("0"))
                if plans and not _COMPACT_DATE.match(candidate) and parse_phone(candidate, plans) is not None:
                    spans.append(Span(m.start(), m.end(), PHONE))
        return spans

    return find_numeric


def find_ibans_and_ninos(text: str) -> list[Span]:
    spans: list[Span] = []
    for trigger in _IBAN_NINO_TRIGGER.finditer(text):
        lo, hi = trigger.start(), trigger.start() + 1
        for m in _windowed(_IBAN_RE, text, lo, hi):
            if valid_iban(m.group()):
                spans.append(Span(m.start(), m.end(), IBAN))
        for m in _windowed(_NINO_RE, text, lo, hi):
            spans.append(Span(m.start(), m.end(), NINO))
    return spans


def find_ipv6(text: str) -> list[Span]:
    colons = text.count(":")  # one fast pass; most texts have fewer than two colons, so no "::" either
    if colons < 2 or (colons < 7 and "::" not in text):
        return []
    spans: list[Span] = []
    for trigger in _IPV6_TRIGGER.finditer(text):
        for m in _windowed(_IPV6_RE, text, trigger.start() - 4, trigger.start() + 1):
            if valid_ip(m.group()):
                spans.append(Span(m.start(), m.end(), IP))
    return spans


def find_api_keys(text: str) -> list[Span]:
    """``_API_KEY_RE`` tried where a run of at least 13 key characters begins, and 3 before it after ``SG.``."""
    spans: list[Span] = []
    runs = b" " + text.encode("ascii", "replace").translate(_KEY_CHARS)  # one byte per character, shifted by 1
    for run in _KEY_RUN_START.finditer(runs):
        at = run.start()  # where the run begins in ``text`` (the leading space shifts ``runs`` by one)
        for start in (at - 3, at) if at >= 3 and text.startswith("SG.", at - 3) else (at,):
            m = _API_KEY_RE.match(text, start)
            if m:
                spans.append(Span(m.start(), m.end(), API_KEY))
    return spans


def find_url_credentials(text: str) -> list[Span]:
    """``_URL_CRED_RE.finditer`` over the text, searched only from the 16 characters before each ``://``.

    A match's scheme (2-16 characters, no colon) ends at the first ``://`` after its start, and the whole match
    ends within 198 characters of that ``://``; so the next match, if any, starts in the window before the next
    ``://``, or uses a later one.
    """
    if "://" not in text:
        return []
    spans: list[Span] = []
    pos = 0  # where the last match ended: finditer's matches do not overlap
    for sep in _occurrences(text, "://"):
        m = _URL_CRED_RE.search(text, max(pos, sep - 16), sep + 256)
        if m:
            pos = m.end()
            spans.append(Span(m.start(1), m.end(1), URL_CREDENTIALS))
    return spans


def _secret_like(value: str) -> bool:
    if _SECRET_PLACEHOLDERS.match(value) or len(set(value)) < 4 or value[0] in "-.@\\:/" or value.endswith(":"):
        return False
    classes = sum((any(c.islower() for c in value), any(c.isupper() for c in value),
                   any(c.isdigit() for c in value), any(not c.isalnum() for c in value)))
    # Identifiers and dotted names (``password = form.password``) are code, not secrets.
    if re.fullmatch(r"[A-Za-z_][\w.]*", value) and not any(c.isdigit() for c in value):
        return False
    return classes >= 2


#: The first word of every keyword ``_SECRET_RE`` knows, lower-cased: the regex can only begin at one of them.
_SECRET_STEMS = ("pass", "pwd", "pin code", "api", "secret", "client", "access", "auth", "bearer")
#: No stem begins inside another stem at a word start, so non-overlapping matches find every one that counts.
_SECRET_STEM_RE = re.compile("|".join(map(re.escape, _SECRET_STEMS)))
#: Characters that IGNORECASE folds onto an ASCII letter of a keyword (``ſ`` is s, ``ı`` and ``İ`` are i).
_SECRET_FOLDS = ("\u017f", "\u0131", "\u0130")


def _word_start(text: str, j: int) -> bool:
    return not j or not text[j - 1].isalnum()


def _stem_starts(text: str, low: str, i: int) -> Iterator[int]:
    """Where ``_SECRET_RE`` may begin in the 15 places up to ``i``: word starts of a stem, in order."""
    for m in _SECRET_STEM_RE.finditer(low, max(0, i - 14), i + 9):  # a stem is at most 8 characters long
        if m.start() > i:
            return
        if _word_start(text, m.start()):
            yield m.start()


#: ``_SECRET_WORDS`` by their lower-case form (an ASCII text keeps its positions when lower-cased).
_SECRET_TRIGGERS: tuple[tuple[str, frozenset[str]], ...] = tuple(
    (low, frozenset(w for w in _SECRET_WORDS if w.lower() == low))
    for low in dict.fromkeys(w.lower() for w in _SECRET_WORDS))


def find_secrets(text: str) -> list[Span]:
    """Values after a secret keyword; each trigger word looks back 14 characters for where the keyword begins.

    Same spans as trying ``_SECRET_RE`` at each of the 15 places before every trigger word (the first
    place that matches wins), but the regex runs only where a keyword's first word begins, once each.
    """
    low = text.lower()  # one pass; then seven scans instead of seventeen, most texts stop here
    if not ("key" in low or "pass" in low or "token" in low or "secret" in low or "pwd" in low or "pin code" in low
            or "bearer" in low):  # every trigger word, lower-cased: no trigger word, nothing to look back from
        return []
    spans: list[Span] = []
    triggers: Iterable[int]
    places: Callable[[int], Iterable[int]]
    if not text.isascii() and (len(low) != len(text) or any(c in text for c in _SECRET_FOLDS)):
        # lower-casing moved or folds characters: every word start, triggers found in the text itself
        starts = [j for j in range(len(text)) if _word_start(text, j)]
        triggers = (i for word in _SECRET_WORDS for i in _occurrences(text, word))

        def places(i: int) -> Iterable[int]:
            return starts[bisect.bisect_left(starts, i - 14) : bisect.bisect_right(starts, i)]
    else:  # the trigger words are case-sensitive
        triggers = (i for word, cases in _SECRET_TRIGGERS for i in _occurrences(low, word)
                    if text[i : i + len(word)] in cases)

        def places(i: int) -> Iterable[int]:
            return _stem_starts(text, low, i)
    tried: dict[int, re.Match[str] | None] = {}
    seen: set[int] = set()
    for i in triggers:
        for j in places(i):
            if j not in tried:
                tried[j] = _SECRET_RE.match(text, j)
            m = tried[j]
            if m is None:
                continue
            value = m.group(1).rstrip(".")
            if m.start(1) not in seen and _secret_like(value):
                seen.add(m.start(1))
                spans.append(Span(m.start(1), m.start(1) + len(value), SECRET))
            break
    return spans


def find_addresses(text: str) -> list[Span]:
    if _ADDRESS_START.search(text) is None:
        return []
    spans: list[Span] = []
    for trigger in _ADDRESS_TRIGGER.finditer(text):
        for m in _windowed(_ADDRESS_RE, text, trigger.start() - 60, trigger.start()):
            if m.end() >= trigger.end():
                spans.append(Span(m.start(), m.end(), ADDRESS))
                break
    return spans


def builtin_finders(phone_regions: tuple[str, ...] = ("US", "GB")) -> list[Finder]:
    return [find_url_credentials, find_api_keys, find_emails, find_ibans_and_ninos, make_numeric_finder(phone_regions),
            find_ipv6, find_secrets, find_addresses]


def resolve_overlaps(spans: Iterable[Span]) -> list[Span]:
    """Non-overlapping spans, in text order: higher-priority kinds first, then longer spans."""
    chosen: list[Span] = []
    for span in sorted(spans, key=lambda s: (PRIORITY.get(s.kind, 99), s.start - s.end, s.start)):
        if all(span.end <= c.start or span.start >= c.end for c in chosen):
            chosen.append(span)
    chosen.sort(key=lambda s: s.start)
    return chosen


def find_builtin(text: str, finders: list[Finder]) -> list[Span]:
    spans: list[Span] = []
    for finder in finders:
        spans.extend(finder(text))
    return spans
