"""Unit tests of module_utils/site_tls.py (the gateway's site certificate checks on the control node)."""

from __future__ import annotations

import datetime
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT / "module_utils") not in sys.path:
    sys.path.insert(0, str(ROOT / "module_utils"))

import site_tls  # noqa: E402

NOW = datetime.datetime(2026, 6, 1, tzinfo=datetime.UTC)


def _pair(tmp_path, name, sans=("llm.site.internal",), cn="llm.site.internal", days=(-10, 30), password=None,
          ip_sans=()):
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
               .serial_number(1).not_valid_before(NOW + datetime.timedelta(days=days[0]))
               .not_valid_after(NOW + datetime.timedelta(days=days[1])))
    names = [x509.DNSName(s) for s in sans] + [x509.IPAddress(ipaddress.ip_address(i)) for i in ip_sans]
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    cert = builder.sign(key, hashes.SHA256())
    crt, pem = tmp_path / f"{name}.crt", tmp_path / f"{name}.key"
    crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM) + b"-----BEGIN CERTIFICATE-----\nintermediate\n")
    enc = serialization.BestAvailableEncryption(password) if password else serialization.NoEncryption()
    pem.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc))
    return str(crt), str(pem)


@pytest.mark.parametrize(
    ("kind", "hosts", "expect"),
    [
        ("good", ["llm.site.internal"], None),
        ("wildcard", ["llm.site.internal"], None),
        ("wildcard", ["a.b.site.internal"], "does not cover a.b.site.internal"),
        ("good", ["llm.other.internal"], "does not cover llm.other.internal"),
        ("ip", ["10.0.0.5"], None),
        ("ip", ["10.0.0.6"], "does not cover 10.0.0.6"),
        ("cn-only", ["llm.site.internal"], None),
        ("expired", ["llm.site.internal"], "expired on 2026-05-22"),
        ("future", ["llm.site.internal"], "is not valid before"),
        ("other-key", ["llm.site.internal"], "is not the key of gateway_tls_cert_file"),
        ("encrypted", ["llm.site.internal"], "is encrypted"),
        ("missing", ["llm.site.internal"], "does not exist on the control node"),
        ("not-pem", ["llm.site.internal"], "holds no PEM certificate"),
        ("directory", ["llm.site.internal"], "is a directory"),
    ],
)
def test_check_site_tls(tmp_path, kind, hosts, expect):
    crt, key = _pair(tmp_path, "site")
    if kind == "wildcard":
        crt, key = _pair(tmp_path, "w", sans=("*.site.internal",))
    elif kind == "ip":
        crt, key = _pair(tmp_path, "ip", sans=(), ip_sans=("10.0.0.5",))
    elif kind == "cn-only":
        crt, key = _pair(tmp_path, "cn", sans=())
    elif kind == "expired":
        crt, key = _pair(tmp_path, "old", days=(-40, -10))
    elif kind == "future":
        crt, key = _pair(tmp_path, "new", days=(5, 40))
    elif kind == "other-key":
        key = _pair(tmp_path, "other")[1]
    elif kind == "encrypted":
        crt, key = _pair(tmp_path, "enc", password=b"passphrase")
    elif kind == "missing":
        crt = str(tmp_path / "nothing.crt")
    elif kind == "not-pem":
        Path(crt).write_text("not a certificate\n")
    elif kind == "directory":
        key = str(tmp_path)
    errors = site_tls.check_site_tls(crt, key, hosts, now=NOW)
    if expect is None:
        assert errors == []
    else:
        assert len(errors) == 1 and expect in errors[0], errors


def test_no_message_holds_the_key(tmp_path):
    crt, key = _pair(tmp_path, "site", days=(-40, -10))
    other = _pair(tmp_path, "other")[1]
    secret = Path(other).read_text()
    text = " ".join(site_tls.check_site_tls(crt, other, ["x.invalid"], now=NOW))
    assert "is not the key" in text and "expired" in text and "does not cover" in text
    assert all(line not in text for line in secret.splitlines()[1:-1])


@pytest.mark.parametrize(
    ("name", "pattern", "ok"),
    [("a.example.org", "a.example.org", True), ("A.Example.org.", "a.example.org", True),
     ("a.example.org", "*.example.org", True), ("example.org", "*.example.org", False),
     ("a.b.example.org", "*.example.org", False), ("a.org", "*.org", False)],
)
def test_name_matches(name, pattern, ok):
    assert site_tls.name_matches(name, pattern) is ok
