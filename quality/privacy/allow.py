"""Values that look like personal data but are not: reserved, documentation and public-service values,
and the user's own allow-list.

Redacting ``ping 8.8.8.8`` to ``ping [IP_ADDRESS]`` or ``john@example.com`` to ``[EMAIL]`` in a
tutorial protects nobody and teaches a model to write placeholders. Left alone by default:

* **IP addresses** that single out no one: the documentation ranges (RFC 5737 192.0.2.0/24,
  198.51.100.0/24, 203.0.113.0/24; RFC 3849 2001:db8::/32, RFC 9637 3fff::/20), loopback,
  RFC 1918 private ranges and IPv6 unique-local addresses, link-local, unspecified, multicast,
  benchmarking (198.18.0.0/15) and the reserved 240.0.0.0/4 with the broadcast address; and the
  well-known public DNS resolvers (:data:`PUBLIC_RESOLVERS`). Private and link-local addresses are
  not routable on the internet and are reused by millions of networks (``192.168.1.1`` is every
  other home router), so one of them does not point at a person or a household; a public address,
  even a dynamic one, can be tied to a subscriber by the provider, which is why it is personal
  data (CJEU C-582/14, Breyer). Shared address space 100.64.0.0/10 (carrier-grade NAT) is still
  redacted: a provider assigns it to subscribers, as it does public addresses.
* **E-mail addresses** at the RFC 2606 / RFC 6761 names: ``example.com``, ``example.net``,
  ``example.org`` and their subdomains, and any domain under ``.test``, ``.example``, ``.invalid``
  or ``.localhost``.
* **Phone numbers** in ranges set aside for fiction: NANP 555-0100 to 555-0199 in any area code,
  and Ofcom's drama ranges (``020 7946 0xxx``, ``07700 900xxx``, ``01632 960xxx``...); and NANP
  toll-free numbers (800, 833, 844, 855, 866, 877, 888), which are organisations' service lines:
  the dev data's are a suicide-prevention lifeline, poison control, the Trevor Project and
  customer service, exactly what a helpful answer must keep.
* **Card numbers** that payment processors publish for testing (Stripe's ``4242 4242 4242 4242``,
  ``4111 1111 1111 1111``...): they charge no one, and payment-integration tutorials need them.
* **Secrets** that are documentation values: AWS's ``AKIAIOSFODNN7EXAMPLE`` and its example
  secret key.

:class:`Allowlist` adds the user's exact values and regular expressions (``[pipeline.pii]
allow_values``, ``allow_patterns``), checked when the settings load.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Sequence

_NETWORKS = [ipaddress.ip_network(n) for n in (
    "192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32", "3fff::/20",  # documentation
    "127.0.0.0/8", "::1/128", "0.0.0.0/8", "::/128",                                  # loopback, unspecified
    "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7",                      # private, unique local
    "169.254.0.0/16", "fe80::/10",                                                     # link-local
    "224.0.0.0/4", "ff00::/8", "198.18.0.0/15", "240.0.0.0/4",                         # multicast, benchmark, reserved
)]

#: Public DNS resolvers (Google, Cloudflare, Quad9, OpenDNS, Level 3, AdGuard, CleanBrowsing, Comodo,
#: Yandex, Verisign): the addresses of every network tutorial, no person's.
PUBLIC_RESOLVERS = frozenset(ipaddress.ip_address(a) for a in (
    "8.8.8.8", "8.8.4.4", "1.1.1.1", "1.0.0.1", "1.1.1.2", "1.0.0.2", "1.1.1.3", "1.0.0.3",
    "9.9.9.9", "149.112.112.112", "9.9.9.10", "149.112.112.10", "9.9.9.11", "149.112.112.11",
    "208.67.222.222", "208.67.220.220", "208.67.222.123", "208.67.220.123",
    "4.2.2.1", "4.2.2.2", "4.2.2.3", "4.2.2.4", "4.2.2.5", "4.2.2.6",
    "94.140.14.14", "94.140.15.15", "185.228.168.9", "185.228.169.9", "8.26.56.26", "8.20.247.20",
    "77.88.8.8", "77.88.8.1", "64.6.64.6", "64.6.65.6",
    "2001:4860:4860::8888", "2001:4860:4860::8844", "2606:4700:4700::1111", "2606:4700:4700::1001",
    "2620:fe::fe", "2620:fe::9", "2620:119:35::35", "2620:119:53::53", "2a10:50c0::ad1:ff", "2a10:50c0::ad2:ff",
))

_EXAMPLE_DOMAINS = ("example.com", "example.net", "example.org")
_RESERVED_TLDS = frozenset({"test", "example", "invalid", "localhost"})

#: Card numbers that processors publish for testing (Stripe, Adyen, Braintree, PayPal docs); all pass Luhn.
TEST_CARDS = frozenset({
    "4242424242424242", "4000056655665556", "4111111111111111", "4012888888881881", "4222222222222",
    "4000000000000002", "4000000000009995", "4000002500003155", "4005519200000004", "4217651111111119",
    "5555555555554444", "2223003122003222", "5200828282828210", "5105105105105100", "5454545454545454",
    "378282246310005", "371449635398431", "378734493671000", "6011111111111117", "6011000990139424",
    "3056930009020004", "36227206271667", "30569309025904", "38520000023237", "3566002020360505",
    "3530111333300000", "6200000000000005",
})

#: AWS's documentation key pair (docs.aws.amazon.com): no account behind it.
DOC_SECRETS = frozenset({"AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"})

_NANP_TOLL_FREE = frozenset({"800", "833", "844", "855", "866", "877", "888"})
#: Ofcom's numbers for drama (national format, 11 digits): these 8-digit prefixes plus any 3 digits.
_UK_DRAMA_PREFIXES = ("01134960", "01144960", "01154960", "01164960", "01174960", "01184960", "01214960",
                      "01314960", "01414960", "01514960", "01614960", "01914980", "02079460", "02896496",
                      "02920180", "01632960", "07700900", "08081570", "09098790", "03069990")


def reserved_ip(value: str) -> bool:
    try:
        ip = ipaddress.ip_address(value)
    except ValueError:
        return False
    return ip in PUBLIC_RESOLVERS or any(ip in net for net in _NETWORKS if net.version == ip.version)


def reserved_email(value: str) -> bool:
    domain = value.rpartition("@")[2].casefold().rstrip(".")
    if domain.rpartition(".")[2] in _RESERVED_TLDS:
        return True
    return any(domain == d or domain.endswith("." + d) for d in _EXAMPLE_DOMAINS)


def reserved_phone(value: str) -> bool:
    digits = re.sub(r"\D", "", value)
    if value.lstrip().startswith("+44"):
        digits = "0" + digits[2:]
    if len(digits) == 11 and digits.startswith("0") and digits.startswith(_UK_DRAMA_PREFIXES):
        return True
    if len(digits) == 11 and digits.startswith("1"):
        digits = digits[1:]
    return len(digits) == 10 and (digits[3:8] == "55501" or digits[:3] in _NANP_TOLL_FREE)


def reserved_card(value: str) -> bool:
    return re.sub(r"\D", "", value) in TEST_CARDS


_RESERVED = {"ip_address": reserved_ip, "email": reserved_email, "phone": reserved_phone,
             "credit_card": reserved_card, "secret": lambda v: v in DOC_SECRETS}


def reserved(kind: str, value: str) -> bool:
    """True if ``value``, found as ``kind``, is a reserved, documentation or public-service value."""
    check = _RESERVED.get(kind)
    return check is not None and check(value)


@dataclass(frozen=True)
class Allowlist:
    """What the PII detectors find but leave alone.

    Args:
        reserved: keep the reserved and documentation values of this module.
        values: exact values to keep (compared without regard to case).
        patterns: regular expressions; a finding that one matches entirely is kept.
    """

    reserved: bool = True
    values: frozenset[str] = frozenset()
    patterns: tuple[re.Pattern, ...] = ()

    @classmethod
    def from_settings(cls, *, reserved: bool = True, values: Sequence[str] = (), patterns: Sequence[str] = (),
                      where: str = "pipeline.pii") -> "Allowlist":
        """An allow-list from settings, each entry checked.

        Raises:
            ValueError: an empty value, or a pattern that is empty, does not compile or matches
                the empty string, naming the setting and the entry.
        """
        for i, v in enumerate(values):
            if not isinstance(v, str) or not v.strip():
                raise ValueError(f"{where}.allow_values[{i}] must be a non-empty string, got {v!r}")
        compiled = []
        for i, p in enumerate(patterns):
            if not isinstance(p, str) or not p.strip():
                raise ValueError(f"{where}.allow_patterns[{i}] must be a non-empty regular expression, got {p!r}")
            try:
                rx = re.compile(p)
            except re.error as exc:
                raise ValueError(f"{where}.allow_patterns[{i}] = {p!r} is not a valid regular expression: {exc}; "
                                 "escape literal dots and brackets (\\. \\[)") from None
            if rx.fullmatch(""):
                raise ValueError(f"{where}.allow_patterns[{i}] = {p!r} matches the empty string, so it would allow "
                                 "anything it is tried on; anchor it to what you mean (e.g. .+@corp\\.example)")
            compiled.append(rx)
        return cls(reserved, frozenset(v.strip().casefold() for v in values), tuple(compiled))

    def allows(self, kind: str, value: str) -> bool:
        if self.reserved and reserved(kind, value):
            return True
        if value.casefold() in self.values:
            return True
        return any(p.fullmatch(value) for p in self.patterns)


#: The default: reserved values kept, nothing else.
RESERVED = Allowlist()
