"""Per-contact checks of pass 1 (sftpsms.intake.ContactChecker): the quick readings of a number
decide exactly what normalise_msisdn and the network check would."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from sftpsms.errors import ErrorCode
from sftpsms.fileformat import RawContact
from sftpsms.intake import ContactChecker, Outcome
from sftpsms.numbers import NetworkDirectory, normalise_msisdn
from sftpsms.template import Template
from tests.test_numbers import written_numbers

ROUTES = NetworkDirectory(["1", "9995", "4479"])


def checker(country: str) -> ContactChecker:
    return ContactChecker(
        template=Template.parse("Hi @@value1@@"), country=country, networks=ROUTES, max_parts=10
    )


def the_long_way(index: int, msisdn: str, country: str) -> Outcome:
    """What check() decides for a contact with a message, through normalise_msisdn and
    has_network only."""
    if not msisdn:
        return Outcome(
            index, None, None, code=ErrorCode.REQUIRED_PARAMETER_MISSING, detail="msisdn is missing"
        )
    normal = normalise_msisdn(msisdn, country)
    if normal is None:
        return Outcome(index, msisdn, None, code=ErrorCode.NO_NETWORK, detail="not a phone number")
    if not ROUTES.has_network(normal):
        return Outcome(
            index, normal, None, code=ErrorCode.NO_NETWORK, detail="no network for this number"
        )
    return Outcome(index, normal, None, text="Hi Thandi", parts=1)


@settings(max_examples=1500, deadline=None)
@given(written_numbers())
def test_a_contacts_number_is_checked_as_normalise_msisdn_and_the_network_check_say(
    case: tuple[str, str],
) -> None:
    raw, country = case
    contact = RawContact(7, raw, None, {"value1": "Thandi"}, None)
    assert checker(country).check(contact) == the_long_way(7, raw, country)


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(["1", "9995", "4479", "2783", "0", "+27", "0027", "+1 "]),
    st.text("0123456789 ", min_size=0, max_size=12),
)
def test_route_prefix_and_own_country_spellings_are_checked_as_the_long_way(
    prefix: str, rest: str
) -> None:
    contact = RawContact(3, prefix + rest, None, {"value1": "Thandi"}, None)
    assert checker("ZA").check(contact) == the_long_way(3, prefix + rest, "ZA")


def test_every_usual_spelling_of_an_own_country_mobile_is_queued_in_e164_form() -> None:
    spellings = ["27831234567", "0831234567", "083 123 4567", "+27 83 123 4567", "0027831234567"]
    outcomes = [
        checker("ZA").check(RawContact(i, raw, "C1", {"value1": "Thandi"}, None))
        for i, raw in enumerate(spellings)
    ]
    assert [(o.msisdn, o.code, o.text) for o in outcomes] == [("27831234567", None, "Hi Thandi")] * 5
