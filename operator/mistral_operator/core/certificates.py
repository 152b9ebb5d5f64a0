"""The webhook's certificates: a private CA and the serving certificate it signs, and when
each is renewed. No I/O: the caller passes the clock and stores the result.

The API server trusts the CA bundle written into the webhook configuration (`caBundle`);
the operator's replicas serve the certificate. Both live in one Secret that every replica
reads, so any replica answers under the same bundle.

Renewal, decided on every check:
- the serving certificate is issued again once two thirds of its life have passed, when
  it does not name every host the API server may call it by, or when the current CA did
  not sign it;
- the CA is replaced once two thirds of its life have passed. The bundle then holds the
  new CA and the old one until the old one expires, so a replica still serving a
  certificate of the old CA (until it reads the Secret again) is trusted meanwhile.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_LIFETIME = timedelta(days=3650)
SERVING_LIFETIME = timedelta(days=365)
# Issued this long before `now`, so that a clock slightly behind still accepts it.
BACKDATE = timedelta(minutes=5)

# The Secret's keys: kubernetes.io/tls's two, and the CA's.
TLS_CRT = "tls.crt"
TLS_KEY = "tls.key"
CA_CRT = "ca.crt"
CA_KEY = "ca.key"


@dataclass(frozen=True)
class WebhookCerts:
    """PEM texts: the CA bundle (current CA first), the CA's key, the serving pair."""

    ca_bundle: bytes
    ca_key: bytes
    cert: bytes
    key: bytes

    def to_data(self) -> dict[str, bytes]:
        return {CA_CRT: self.ca_bundle, CA_KEY: self.ca_key, TLS_CRT: self.cert, TLS_KEY: self.key}

    @classmethod
    def from_data(cls, data: Mapping[str, bytes]) -> WebhookCerts | None:
        try:
            return cls(data[CA_CRT], data[CA_KEY], data[TLS_CRT], data[TLS_KEY])
        except KeyError:
            return None

    def serving_not_after(self) -> datetime:
        return x509.load_pem_x509_certificate(self.cert).not_valid_after_utc


def renewed(
    current: WebhookCerts | None, hosts: Sequence[str], now: datetime
) -> tuple[WebhookCerts, str] | None:
    """New certificates and why, or None when ``current`` serves ``hosts`` as it is."""
    try:
        ca, ca_key, cas = _load_ca(current) if current else (None, None, [])
    except ValueError:
        ca, ca_key, cas = None, None, []
    if ca is None or ca_key is None:
        return _issue_all(hosts, now, cas=[]), "no valid CA was stored"
    if _aged(ca, now):
        return _issue_all(hosts, now, cas=cas), "the CA is two thirds through its life"
    assert current is not None  # a CA was loaded from it
    why = _serving_problem(current.cert, ca, hosts, now)
    if why is None:
        return None
    cert, key = _issue_serving(ca, ca_key, hosts, now)
    return WebhookCerts(current.ca_bundle, current.ca_key, cert, key), why


def _load_ca(
    current: WebhookCerts,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey, list[x509.Certificate]]:
    cas = x509.load_pem_x509_certificates(current.ca_bundle)
    key = serialization.load_pem_private_key(current.ca_key, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not cas:
        raise ValueError("not an EC CA")
    return cas[0], key, cas


def _aged(cert: x509.Certificate, now: datetime) -> bool:
    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    return now >= start + (end - start) * 2 / 3


def _serving_problem(
    pem: bytes, ca: x509.Certificate, hosts: Sequence[str], now: datetime
) -> str | None:
    try:
        cert = x509.load_pem_x509_certificate(pem)
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return "the serving certificate is missing, unreadable or not signed by the CA"
    if _aged(cert, now):
        return "the serving certificate is two thirds through its life"
    try:
        named = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return "the serving certificate names no host"
    missing = [h for h in hosts if _general_name(h) not in named]
    if missing:
        return f"the serving certificate does not name {', '.join(missing)}"
    return None


def _issue_all(hosts: Sequence[str], now: datetime, *, cas: list[x509.Certificate]) -> WebhookCerts:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mistral-operator webhook CA")])
    ca = (
        _builder(name, name, key.public_key(), now, CA_LIFETIME)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_usage(cert_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert, serving_key = _issue_serving(ca, key, hosts, now)
    # Older CAs stay trusted until they expire: a replica may still serve their certificates.
    kept = [c for c in cas if c.not_valid_after_utc > now]
    bundle = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in [ca, *kept])
    return WebhookCerts(bundle, _pem_key(key), cert, serving_key)


def _issue_serving(
    ca: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, hosts: Sequence[str], now: datetime
) -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])])
    lifetime = min(SERVING_LIFETIME, ca.not_valid_after_utc - now)
    cert = (
        _builder(subject, ca.subject, key.public_key(), now, lifetime)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_usage(cert_sign=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .add_extension(
            x509.SubjectAlternativeName([_general_name(h) for h in hosts]), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM), _pem_key(key)


def _builder(
    subject: x509.Name,
    issuer: x509.Name,
    public_key: ec.EllipticCurvePublicKey,
    now: datetime,
    lifetime: timedelta,
) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + lifetime)
    )


def _usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _general_name(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
