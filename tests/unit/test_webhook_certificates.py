"""core/certificates.py: the webhook's CA and serving certificate, and when each renews."""

from __future__ import annotations

import ipaddress
import ssl
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.verification import PolicyBuilder, Store

from mistral_operator.core import certificates as certs

pytestmark = pytest.mark.unit

HOSTS = ["mistral-operator-webhook.mistral-system.svc", "127.0.0.1"]
NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def fresh(now: datetime = NOW, hosts: list[str] = HOSTS) -> certs.WebhookCerts:
    decision = certs.renewed(None, hosts, now)
    assert decision is not None
    return decision[0]


def verifies(bundle: bytes, cert_pem: bytes, host: str, at: datetime) -> bool:
    """Whether a TLS client trusting ``bundle`` accepts ``cert_pem`` for ``host`` at ``at``."""
    store = Store(x509.load_pem_x509_certificates(bundle))
    builder = PolicyBuilder().store(store).time(at)
    subject: x509.verification.Subject
    try:
        subject = x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        subject = x509.DNSName(host)
    verifier = builder.build_server_verifier(subject)
    try:
        verifier.verify(x509.load_pem_x509_certificate(cert_pem), [])
    except x509.verification.VerificationError:
        return False
    return True


def test_nothing_stored_issues_a_ca_and_a_certificate_for_every_host(tmp_path: Path) -> None:
    decision = certs.renewed(None, HOSTS, NOW)
    assert decision is not None
    issued, why = decision
    assert why == "no valid CA was stored"
    for host in HOSTS:
        assert verifies(issued.ca_bundle, issued.cert, host, NOW)
    assert not verifies(issued.ca_bundle, issued.cert, "elsewhere.example", NOW)
    # The pair loads as a TLS server's (what Kopf's server does with the files).
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    cert.write_bytes(issued.cert)
    key.write_bytes(issued.key)
    ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert, key)
    assert issued.serving_not_after() == NOW + certs.SERVING_LIFETIME


def test_a_current_pair_is_kept() -> None:
    issued = fresh()
    assert certs.renewed(issued, HOSTS, NOW + timedelta(days=200)) is None
    assert certs.renewed(certs.WebhookCerts.from_data(issued.to_data()), HOSTS, NOW) is None


def test_the_serving_certificate_renews_two_thirds_through_its_life_under_the_same_ca() -> None:
    issued = fresh()
    due = NOW + certs.SERVING_LIFETIME * 2 / 3 + timedelta(minutes=5)
    decision = certs.renewed(issued, HOSTS, due)
    assert decision is not None
    renewed, why = decision
    assert "two thirds" in why
    assert renewed.ca_bundle == issued.ca_bundle
    assert renewed.ca_key == issued.ca_key
    assert renewed.cert != issued.cert
    assert verifies(issued.ca_bundle, renewed.cert, HOSTS[0], due)


def test_a_host_the_certificate_does_not_name_renews_it() -> None:
    issued = fresh()
    wider = [*HOSTS, "localhost"]
    decision = certs.renewed(issued, wider, NOW)
    assert decision is not None
    assert decision[1] == "the serving certificate does not name localhost"
    assert verifies(issued.ca_bundle, decision[0].cert, "localhost", NOW)


def test_a_certificate_of_another_ca_or_garbage_is_replaced() -> None:
    issued, other = fresh(), fresh()
    mixed = certs.WebhookCerts(issued.ca_bundle, issued.ca_key, other.cert, other.key)
    decision = certs.renewed(mixed, HOSTS, NOW)
    assert decision is not None
    assert "not signed by the CA" in decision[1]
    assert verifies(issued.ca_bundle, decision[0].cert, HOSTS[0], NOW)
    broken = certs.WebhookCerts(b"not a pem", issued.ca_key, issued.cert, issued.key)
    decision = certs.renewed(broken, HOSTS, NOW)
    assert decision is not None
    assert decision[1] == "no valid CA was stored"


def test_an_aged_ca_is_replaced_and_the_old_one_stays_trusted_until_it_expires() -> None:
    issued = fresh()
    due = NOW + certs.CA_LIFETIME * 2 / 3 + timedelta(days=1)
    decision = certs.renewed(issued, HOSTS, due)
    assert decision is not None
    rotated, why = decision
    assert "CA" in why
    bundle = x509.load_pem_x509_certificates(rotated.ca_bundle)
    assert len(bundle) == 2
    assert bundle[1] == x509.load_pem_x509_certificates(issued.ca_bundle)[0]
    # Both the new pair and a replica's certificate of the old CA are trusted meanwhile
    # (the old serving certificate itself is long expired by then, so one is issued by
    # the old CA at that moment, as a replica that renewed late would hold).
    assert verifies(rotated.ca_bundle, rotated.cert, HOSTS[0], due)
    late = certs.renewed(
        certs.WebhookCerts(issued.ca_bundle, issued.ca_key, b"", b""),
        HOSTS,
        due - timedelta(days=2),
    )
    assert late is not None
    assert verifies(rotated.ca_bundle, late[0].cert, HOSTS[0], due)
    # Once the old CA has expired, the next rotation drops it.
    later = NOW + certs.CA_LIFETIME + certs.CA_LIFETIME * 2 / 3
    again = certs.renewed(rotated, HOSTS, later)
    assert again is not None
    assert len(x509.load_pem_x509_certificates(again[0].ca_bundle)) == 2  # new + previous


def test_from_data_needs_every_key() -> None:
    data = fresh().to_data()
    del data[certs.CA_KEY]
    assert certs.WebhookCerts.from_data(data) is None
