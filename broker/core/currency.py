"""ISO 4217 currency codes and their minor-unit exponents, for exact payment amounts."""

from __future__ import annotations

from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal

# Active ISO 4217 codes (list of 2024) mapped to their minor-unit exponent. Funds codes and
# precious metals without a minor unit (XAU, XAG, XPT, XPD, XDR, XSU, XUA) are excluded:
# nobody pays an agent in troy ounces through this broker.
_ZERO = "BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX UYI VND VUV XAF XOF XPF"
_THREE = "BHD IQD JOD KWD LYD OMR TND"
_FOUR = "CLF UYW"
_TWO = (
    "AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BMD BND BOB BOV BRL BSD BTN BWP "
    "BYN BZD CAD CDF CHE CHF CHW CNY COP COU CRC CUP CVE CZK DKK DOP DZD EGP ERN ETB EUR FJD "
    "FKP GBP GEL GHS GIP GMD GTQ GYD HKD HNL HTG HUF IDR ILS INR IRR JMD KES KGS KHR KPW KYD "
    "KZT LAK LBP LKR LRD LSL MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN MXV MYR MZN NAD "
    "NGN NIO NOK NPR NZD PAB PEN PGK PHP PKR PLN QAR RON RSD RUB SAR SBD SCR SDG SEK SGD SHP "
    "SLE SOS SRD SSP STN SVC SYP SZL THB TJS TMT TOP TRY TTD TWD TZS UAH USD USN UYU UZS VED "
    "VES WST XCD XCG YER ZAR ZMW ZWG"
)

MINOR_UNITS: dict[str, int] = {
    **{code: 2 for code in _TWO.split()},
    **{code: 0 for code in _ZERO.split()},
    **{code: 3 for code in _THREE.split()},
    **{code: 4 for code in _FOUR.split()},
}


def is_currency(code: str) -> bool:
    """Return True for an active ISO 4217 code that has a minor unit."""
    return code in MINOR_UNITS


def to_minor(amount: Decimal | int, currency: str) -> int:
    """Convert an exact major-unit amount to integer minor units of `currency`."""
    scaled = Decimal(amount).scaleb(MINOR_UNITS[currency])
    if scaled != scaled.to_integral_value():
        raise ValueError(f"{currency} has {MINOR_UNITS[currency]} decimal places")
    return int(scaled)


def to_major(minor: int, currency: str) -> Decimal:
    """Convert integer minor units to an exact major-unit Decimal."""
    return Decimal(minor).scaleb(-MINOR_UNITS[currency])


def convert_minor(
    minor: int, currency: str, rate: Decimal, reference: str, *, round_up: bool
) -> int:
    """`minor` units of `currency` in minor units of `reference`, at `rate` reference
    major units per major unit. Exposure rounds up and collateral down, so rounding never
    favours the sender."""
    major = Decimal(minor).scaleb(-MINOR_UNITS[currency]) * rate
    scaled = major.scaleb(MINOR_UNITS[reference])
    return int(scaled.to_integral_value(rounding=ROUND_CEILING if round_up else ROUND_FLOOR))
