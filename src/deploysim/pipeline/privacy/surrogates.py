"""Realistic, format-valid stand-ins for detected values (DESIGN rule 2: no ``[REDACTED]`` cues).

A fake is derived from a keyed hash of (record, kind, normalised value), so within a
record the same value always gets the same fake, other records get other fakes, and a
rerun or resumed run produces the same text (so the call cache still hits). Without
the key (``DEPLOYSIM_PRIVACY_KEY``) a fake cannot be tied back to its value.
"""

from __future__ import annotations

import hashlib
import ipaddress
import random
import re
import string
from collections.abc import Callable
from dataclasses import dataclass, field

import phonenumbers
from faker import Faker
from faker.providers.address.en_US import Provider as UsAddress
from stdnum import iban as stdnum_iban
from stdnum import luhn

from deploysim.pipeline.privacy import recognizers as rk
from deploysim.pipeline.privacy.recognizers import digits_of

#: Short labels for placeholder mode: ``<EMAIL_1>``.
LABELS: dict[str, str] = {
    rk.EMAIL: "EMAIL", rk.PHONE: "PHONE", rk.CARD: "CARD", rk.IBAN: "IBAN", rk.IP: "IP", rk.SSN: "SSN",
    rk.NINO: "NINO", rk.API_KEY: "API_KEY", rk.URL_CREDENTIALS: "CREDENTIALS", rk.SECRET: "SECRET",
    rk.ADDRESS: "ADDRESS", rk.PERSON: "PERSON", rk.LOCATION: "LOCATION", rk.ORGANIZATION: "ORG",
}
_FREE_MAIL = frozenset("gmail.com yahoo.com hotmail.com outlook.com icloud.com aol.com proton.me protonmail.com "
                       "live.com msn.com gmx.de web.de mail.ru qq.com 163.com yandex.ru".split())
_TITLES = frozenset("mr mr. mrs mrs. ms ms. miss dr dr. prof prof. sir madam mx mx.".split())
_US_STATES = frozenset(s.lower() for s in UsAddress.states)
_COUNTRIES = frozenset(c.lower() for c in UsAddress.countries)
_KEY_PREFIX = re.compile(r"^(?:sk-(?:ant-|proj-|live-|test-|or-v1-)?|(?:sk|pk|rk)_(?:live|test)_|gh[pousr]_"
                         r"|github_pat_|AKIA|ASIA|xox[a-z]-|AIza|hf_|glpat-|SG\.|eyJ)")
_DIGIT_SHAPED = frozenset((rk.PHONE, rk.CARD, rk.SSN))
_NINO_FIRST = "ABCEGHJKLMNPRSTWXYZ"
_NINO_SECOND = "ABCEGHJKLMNPRSTWXYZ"


def shape_random(value: str, rng: random.Random, keep: int = 0) -> str:
    """Same length and character classes, new characters: digits stay digits, case is kept."""
    out = list(value[:keep])
    for c in value[keep:]:
        if c.isdigit():
            out.append(rng.choice(string.digits))
        elif c.isupper():
            out.append(rng.choice(string.ascii_uppercase))
        elif c.islower():
            out.append(rng.choice(string.ascii_lowercase))
        else:
            out.append(c)
    return "".join(out)


def _into_shape(template: str, digits: str) -> str:
    """``digits`` laid into the digit positions of ``template`` (keeps spaces, dashes, parentheses)."""
    it = iter(digits)
    return "".join(next(it) if c.isdigit() else c for c in template)


def spaced_like(template: str, compact: str) -> str:
    """``compact`` (no spaces) with the spaces of ``template`` where it has them (IBAN, NINO groups)."""
    it = iter(compact)
    return "".join(c if c == " " else next(it) for c in template)


def normalise(kind: str, value: str, regions: tuple[str, ...]) -> str:
    """The identity of a value, so ``(415) 555-2671`` and ``415-555-2671`` get the same fake."""
    if kind == rk.EMAIL:
        return value.lower()
    if kind == rk.PHONE:
        number = rk.parse_phone(value, regions)
        return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164) if number else digits_of(value)
    if kind in (rk.CARD, rk.SSN):
        return digits_of(value)
    if kind in (rk.IBAN, rk.NINO):
        return value.replace(" ", "").upper()
    if kind == rk.IP:
        try:
            return ipaddress.ip_address(value).compressed
        except ValueError:
            return value
    if kind in (rk.PERSON, rk.LOCATION, rk.ORGANIZATION):
        return " ".join(value.split()).lower()
    return value


@dataclass
class Fakers:
    """Builds fakes for one value given a seeded ``rng``; one Faker per process (it is slow to build)."""

    locale: str = "en_US"
    regions: tuple[str, ...] = ("US", "GB")
    faker: Faker = field(init=False)

    def __post_init__(self) -> None:
        self.faker = Faker(self.locale)
        self.makers: dict[str, Callable[[str, random.Random], str]] = {
            rk.EMAIL: self.email, rk.PHONE: self.phone, rk.CARD: self.card, rk.IBAN: self.iban, rk.IP: self.ip,
            rk.SSN: self.ssn, rk.NINO: self.nino, rk.API_KEY: self.api_key, rk.URL_CREDENTIALS: self.credentials,
            rk.SECRET: lambda v, rng: shape_random(v, rng), rk.ADDRESS: self.address, rk.LOCATION: self.location,
            rk.ORGANIZATION: self.organization,
        }

    def make(self, kind: str, value: str, rng: random.Random) -> str:
        self.faker.seed_instance(rng.getrandbits(64))
        maker = self.makers.get(kind)
        for _ in range(8):
            try:
                fake = maker(value, rng) if maker else shape_random(value, rng)
            except (ValueError, IndexError, phonenumbers.NumberParseException):
                fake = shape_random(value, rng)
            if fake and fake != value:
                return fake
        return shape_random(value, rng)

    def email(self, value: str, rng: random.Random) -> str:
        domain = value.rsplit("@", 1)[-1].lower()
        new_domain = self.faker.free_email_domain() if domain in _FREE_MAIL else self.faker.domain_name()
        local = self.faker.user_name()
        if rng.random() < 0.5:
            local = f"{self.faker.first_name()}.{self.faker.last_name()}".lower()
        return f"{local}@{new_domain}"

    def phone(self, value: str, rng: random.Random) -> str:
        number = rk.parse_phone(value, self.regions)
        if number is None:
            return shape_random(value, rng)
        region = phonenumbers.region_code_for_number(number)
        kind = phonenumbers.number_type(number)
        example = region and (phonenumbers.example_number_for_type(region, kind) or phonenumbers.example_number(region))
        if not example:
            return shape_random(value, rng)
        national = str(example.national_number)
        for _ in range(50):
            body = national[:2] + "".join(rng.choice(string.digits) for _ in national[2:])
            candidate = phonenumbers.PhoneNumber(country_code=example.country_code, national_number=int(body),
                                                 italian_leading_zero=example.italian_leading_zero)
            if phonenumbers.is_valid_number(candidate) and candidate.national_number != number.national_number:
                break
        else:
            return shape_random(value, rng)
        style = (phonenumbers.PhoneNumberFormat.INTERNATIONAL if value.startswith("+")
                 else phonenumbers.PhoneNumberFormat.NATIONAL)
        formatted = phonenumbers.format_number(candidate, style)
        if len(digits_of(formatted)) == len(digits_of(value)):
            return _into_shape(value, digits_of(formatted))  # keep the writer's own separators
        return formatted

    def card(self, value: str, rng: random.Random) -> str:
        digits = digits_of(value)
        if digits.startswith(("34", "37", "6011", "65")):
            prefix = digits[:4] if digits.startswith("6011") else digits[:2]
        elif digits.startswith("5"):
            prefix = "5" + rng.choice("12345")
        else:
            prefix = digits[0]
        body = prefix + "".join(rng.choice(string.digits) for _ in range(len(digits) - len(prefix) - 1))
        return _into_shape(value, body + luhn.calc_check_digit(body))

    def iban(self, value: str, rng: random.Random) -> str:
        compact = value.replace(" ", "").upper()
        for _ in range(100):
            bban = shape_random(compact[4:], rng)
            candidate = compact[:2] + stdnum_iban.calc_check_digits(compact[:2] + "00" + bban) + bban
            if stdnum_iban.is_valid(candidate):
                break
        else:
            raise ValueError("no valid IBAN")
        return spaced_like(value, candidate)

    def ip(self, value: str, rng: random.Random) -> str:
        address = ipaddress.ip_address(value)
        if address.version == 6:
            return self.faker.ipv6()
        return self.faker.ipv4_private() if address.is_private else self.faker.ipv4_public()

    def ssn(self, value: str, rng: random.Random) -> str:
        fake = self.faker.ssn()
        return fake.replace("-", " ") if " " in value else fake

    def nino(self, value: str, rng: random.Random) -> str:
        compact = (rng.choice(_NINO_FIRST) + rng.choice(_NINO_SECOND)
                   + "".join(rng.choice(string.digits) for _ in range(6)) + rng.choice("ABCD"))
        return spaced_like(value, compact)

    def api_key(self, value: str, rng: random.Random) -> str:
        m = _KEY_PREFIX.match(value)
        return shape_random(value, rng, keep=m.end() if m else 0)

    def credentials(self, value: str, rng: random.Random) -> str:
        _, _, password = value.partition(":")
        return f"{self.faker.user_name()}:{shape_random(password, rng)}"

    def address(self, value: str, rng: random.Random) -> str:
        return self.faker.street_address()

    def location(self, value: str, rng: random.Random) -> str:
        key = value.strip().lower()
        if key in _US_STATES:
            return self.faker.state()
        if key in _COUNTRIES:
            return self.faker.country()
        return self.faker.city()

    def organization(self, value: str, rng: random.Random) -> str:
        return self.faker.company()

    def name_token(self, token: str, first: bool, rng: random.Random) -> str:
        self.faker.seed_instance(rng.getrandbits(64))
        for _ in range(8):
            fake = self.faker.first_name() if first else self.faker.last_name()
            if fake.lower() != token.lower():
                return fake
        return shape_random(token, rng)


class RecordSurrogates:
    """The replacements for one record: memoised so a value maps to one fake everywhere in it."""

    def __init__(self, fakers: Fakers, record_key: bytes, secret: bytes, mode: str) -> None:
        self.fakers = fakers
        self.record_key = record_key
        self.secret = secret
        self.mode = mode
        self.memo: dict[tuple[str, str], str] = {}
        self.counters: dict[str, int] = {}
        self.replaced: list[tuple[str, str, str]] = []  # (kind, original, replacement), for the mapping file

    def _rng(self, kind: str, norm: str) -> random.Random:
        digest = hashlib.blake2b(self.record_key + b"\0" + kind.encode() + b"\0" + norm.encode(),
                                 key=self.secret, digest_size=16).digest()
        return random.Random(int.from_bytes(digest, "big"))

    def replace(self, kind: str, value: str) -> str:
        norm = normalise(kind, value, self.fakers.regions)
        key = (kind, norm)
        found = self.memo.get(key)
        if found is None:
            found = self._new(kind, value, norm)
            self.memo[key] = found
            self.replaced.append((kind, value, found))
        elif kind in _DIGIT_SHAPED and self.mode == "surrogate" and len(digits_of(found)) == len(digits_of(value)):
            return _into_shape(value, digits_of(found))  # same number, written another way: keep this writing
        return found

    def _new(self, kind: str, value: str, norm: str) -> str:
        if self.mode == "placeholder":
            label = LABELS.get(kind, kind)
            self.counters[label] = self.counters.get(label, 0) + 1
            return f"<{label}_{self.counters[label]}>"
        if kind == rk.PERSON:
            return self._person(value)
        return self.fakers.make(kind, value, self._rng(kind, norm))

    def _person(self, value: str) -> str:
        """Token by token, so "Maria Gonzalez" and a later "Maria" or "Ms. Gonzalez" stay consistent."""
        out: list[str] = []
        first = True
        for token in re.split(r"(\s+)", value):
            core = token.removesuffix("'s").removesuffix("’s")
            suffix = token[len(core):]
            if core.lower() in _TITLES:
                first = False  # "Mr. Smith": what follows a title is a family name
            if not core.strip() or core.lower() in _TITLES or not core[:1].isupper():
                out.append(token)
                continue
            key = ("PERSON_TOKEN", core.lower())
            fake = self.memo.get(key)
            if fake is None:
                fake = self.fakers.name_token(core, first, self._rng("PERSON_TOKEN", core.lower()))
                if core.isupper():
                    fake = fake.upper()
                self.memo[key] = fake
            out.append(fake + suffix)
            first = False
        return "".join(out)
