"""Phone numbers the way people type them, parsed once (``phonenumbers``) and written the way each API wants them.

``+351 912 345 678``, ``00351912345678``, ``351 912 345 678`` and, in a file of
Portuguese contacts (``default_phone_region`` PT), ``912 345 678`` are one
number. It is sent:

- to the V2 API (``mobile_number``) in E.164: ``+351912345678`` (the
  documentation shows no format; E.164 is the one form that cannot be misread);
- to the V1 API (a contact's ``phone``) as the reference's examples split it:
  ``{"extension": "00351", "number": "912345678"}``: the country calling code
  after ``00`` (``001`` in the examples) and the national number, digits only.

A number that cannot be a phone number of its region (too short, too long, a
prefix no operator has) is refused with the reason, never sent as typed.
"""

from __future__ import annotations

from dataclasses import dataclass

import phonenumbers

#: the region of numbers written without a country code, unless ``default_phone_region`` says otherwise
DEFAULT_REGION = "PT"
_REASONS = {
    phonenumbers.ValidationResult.TOO_SHORT: "too short",
    phonenumbers.ValidationResult.TOO_LONG: "too long",
    phonenumbers.ValidationResult.INVALID_COUNTRY_CODE: "no country has that calling code",
    phonenumbers.ValidationResult.INVALID_LENGTH: "its length fits no number of its country",
}


class PhoneError(ValueError):
    """A phone number that cannot be one; the message says why, naming the value."""


@dataclass(frozen=True)
class Phone:
    """A parsed phone number.

    Attributes:
        country_code: the country calling code (``351``).
        national: the national significant number, digits only (``912345678``).
    """

    country_code: int
    national: str

    @property
    def e164(self) -> str:
        """``+351912345678``: how the V2 API's ``mobile_number`` is sent."""
        return f"+{self.country_code}{self.national}"

    @property
    def extension(self) -> str:
        """``00351``: the V1 API's ``extension``, as the reference's examples write it (``001``)."""
        return f"00{self.country_code}"


def check_region(region: str) -> str | None:
    """Why ``region`` cannot be ``default_phone_region``; None when it can.

    Args:
        region: a two-letter region code (``PT``).

    Returns:
        The reason, or None.
    """
    if region.upper() in phonenumbers.SUPPORTED_REGIONS:
        return None
    return f"{region!r} is not a region code phonenumbers knows; use a two-letter code such as PT, ES, GB or US"


def parse(text: object, region: str = DEFAULT_REGION, *, field: str = "phone") -> Phone:
    """The phone number ``text`` writes, read in ``region`` when it has no country code.

    ``00`` before the country code counts as ``+`` whatever the region (so ``00351…``
    is Portuguese everywhere), and a number that starts with the country code of
    ``region`` without ``+`` is read as one with it when the national reading is
    not a valid number (``351912345678``).

    Args:
        text: the number as typed (a number typed as a JSON number is read as its digits).
        region: the region of numbers without a country code.
        field: the record's field, for the message.

    Returns:
        The number.

    Raises:
        PhoneError: it is not a possible and valid number.
    """
    if isinstance(text, bool) or not isinstance(text, (str, int)):
        msg = f"field {field}: must be a phone number as text, not {type(text).__name__}"
        raise PhoneError(msg)
    raw = str(text).strip()
    typed = raw
    if typed.startswith("00"):
        typed = "+" + typed[2:]
    candidates = [typed]
    own_code = str(phonenumbers.country_code_for_region(region.upper()))
    if not typed.startswith("+") and typed.startswith(own_code):
        candidates.append("+" + typed)  # the region's own country code written without + (351 912 345 678)
    reason = "not a phone number"
    for candidate in candidates:
        try:
            number = phonenumbers.parse(candidate, region.upper())
        except phonenumbers.NumberParseException:
            continue
        if phonenumbers.is_valid_number(number) and number.country_code is not None:
            return Phone(number.country_code, phonenumbers.national_significant_number(number))
        if candidate is typed:
            reason = _REASONS.get(phonenumbers.is_possible_number_with_reason(number), "no such number in its country")
    hint = "" if typed.startswith("+") else f"; a number without a country code is read as {region.upper()}'s"
    msg = f"field {field}: {raw!r} is not a valid phone number ({reason}{hint})"
    raise PhoneError(msg)
