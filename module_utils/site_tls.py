# Copyright: llm-onprem contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Checks of a site's TLS certificate chain and key files on the control node.

Plain functions, unit-tested in tests/unit/test_site_tls.py; the filter plugin
plugins/filter/llm_onprem.py (``llm_onprem_site_tls_errors``) runs them in the gateway
role's tasks/validate_inventory.yml before any host is contacted. They need the
``cryptography`` package of the control node (requirements.txt). No message ever
contains the key's contents.
"""

from __future__ import annotations

import datetime
import ipaddress
import re


def _read(path, what):
    try:
        with open(path, "rb") as handle:
            return handle.read(), None
    except FileNotFoundError:
        return None, f"{what} ({path}) does not exist on the control node"
    except IsADirectoryError:
        return None, f"{what} ({path}) is a directory, not a PEM file"
    except PermissionError:
        return None, f"{what} ({path}) is not readable by the user running Ansible on the control node"
    except OSError as exc:
        return None, f"{what} ({path}) cannot be read: {exc.strerror}"


def name_matches(name, pattern):
    """True when host name ``name`` is covered by certificate name ``pattern`` (RFC 6125: one-label wildcard)."""
    name, pattern = name.lower().rstrip("."), pattern.lower().rstrip(".")
    if pattern.startswith("*."):
        head, _, rest = name.partition(".")
        return bool(head) and rest == pattern[2:] and "." in pattern[2:]
    return name == pattern


def certificate_names(cert):
    """(DNS names, IP addresses) of a certificate: its subjectAltName, or its CN when it has none."""
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        return san.get_values_for_type(x509.DNSName), [str(a) for a in san.get_values_for_type(x509.IPAddress)]
    except x509.ExtensionNotFound:
        return [a.value for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)], []


def covers(names, ips, host):
    """True when the certificate's names or addresses cover ``host`` (a DNS name or an IP address)."""
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        return any(name_matches(host, n) for n in names)
    return any(ipaddress.ip_address(i) == addr for i in ips)


def check_site_tls(cert_file, key_file, hosts, now=None):
    """Messages for what is wrong with a site certificate chain and key; [] when they are fine.

    ``hosts`` are the names clients use (each must be covered by the certificate).
    The messages name gateway_tls_cert_file / gateway_tls_key_file and never the key.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    errors = []
    cert_pem, err = _read(cert_file, "gateway_tls_cert_file")
    if err:
        errors.append(err)
    key_pem, err = _read(key_file, "gateway_tls_key_file")
    if err:
        errors.append(err)
    if errors:
        return errors
    blocks = re.findall(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", cert_pem, re.S)
    if not blocks:
        return [f"gateway_tls_cert_file ({cert_file}) holds no PEM certificate (-----BEGIN CERTIFICATE-----)"]
    try:
        cert = x509.load_pem_x509_certificate(blocks[0])
    except ValueError:
        return [f"gateway_tls_cert_file ({cert_file}) does not start with a valid PEM certificate"]
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except TypeError:
        return [f"gateway_tls_key_file ({key_file}) is encrypted: nginx needs the key without a passphrase "
                "(openssl pkey -in KEY -out KEY.plain)"]
    except (ValueError, serialization.UnsupportedAlgorithm):
        return [f"gateway_tls_key_file ({key_file}) is not a PEM private key"]
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(serialization.Encoding.DER, spki) != \
            cert.public_key().public_bytes(serialization.Encoding.DER, spki):
        errors.append(f"gateway_tls_key_file ({key_file}) is not the key of gateway_tls_cert_file ({cert_file})")
    now = now or datetime.datetime.now(datetime.UTC)
    if cert.not_valid_after_utc <= now:
        errors.append(f"gateway_tls_cert_file ({cert_file}) expired on {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC")
    elif cert.not_valid_before_utc > now:
        errors.append(f"gateway_tls_cert_file ({cert_file}) is not valid before "
                      f"{cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC (check the control node's clock)")
    names, ips = certificate_names(cert)
    missing = [h for h in hosts if not covers(names, ips, str(h))]
    if missing:
        errors.append(f"gateway_tls_cert_file ({cert_file}) is for {', '.join(names + ips) or 'no name'}, which does not "
                      f"cover {', '.join(missing)} (gateway_server_names, default the inventory hostname)")
    return errors
