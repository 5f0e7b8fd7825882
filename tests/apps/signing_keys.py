"""A private key, its self-signed certificate and a store trusting it, for signed_app.

Made with ``cryptography`` (in the test extra), as Celery's examples/security expects them.
"""

from __future__ import annotations

import datetime
from pathlib import Path


def make_keys(folder: Path) -> dict[str, str]:
    """A private key, its self-signed certificate and a store trusting it (as examples/security)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "celery-probe-test")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    store = folder / "store"
    store.mkdir(parents=True)
    pem = cert.public_bytes(serialization.Encoding.PEM)
    (folder / "worker.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption()))
    (folder / "worker.pem").write_bytes(pem)
    (store / "worker.pem").write_bytes(pem)
    return {"PROBE_TEST_SECURITY_KEY": str(folder / "worker.key"),
            "PROBE_TEST_SECURITY_CERT": str(folder / "worker.pem"),
            "PROBE_TEST_SECURITY_STORE": str(store)}
