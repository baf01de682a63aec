"""Helpers shared by the end-to-end Python workloads (tests/python/*.py).

The scripts talk to the Signet agent only through the third-party `spiffe` (py-spiffe) and
`spiffe-tls` packages; this module only formats what those packages return as JSON for the Rust
tests (tests/tests/python_clients.rs, tests/tests/workload_isolation.rs) to check.
"""

import json
import sys
from typing import Any, Dict, List, Optional

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from spiffe import WorkloadApiClient, X509Source
from spiffe.svid.x509_svid import X509Svid
from spiffe.workloadapi.x509_context import X509Context


def emit(doc: Dict[str, Any]) -> None:
    """Prints one JSON document on its own line of stdout, flushed at once."""
    sys.stdout.write(json.dumps(doc, sort_keys=True) + "\n")
    sys.stdout.flush()


def pem(cert: x509.Certificate) -> str:
    """One certificate as PEM text."""
    return cert.public_bytes(serialization.Encoding.PEM).decode("ascii")


def svid_view(svid: X509Svid) -> Dict[str, Any]:
    """What the tests check about an X509-SVID, as py-spiffe parsed it."""
    leaf = svid.leaf
    return {
        "spiffe_id": str(svid.spiffe_id),
        "serial": format(leaf.serial_number, "x"),
        "not_before": int(leaf.not_valid_before_utc.timestamp()),
        "not_after": int(leaf.not_valid_after_utc.timestamp()),
        "chain_pem": [pem(c) for c in svid.cert_chain],
        "key_matches_leaf": svid.private_key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        == leaf.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
    }


def context_view(ctx: X509Context) -> Dict[str, Any]:
    """The default SVID, every SVID's ID, and the bundles (trust domain -> PEM authorities)."""
    bundles = {
        str(b.trust_domain): sorted(pem(c) for c in b.x509_authorities)
        for b in ctx.x509_bundle_set.bundles
    }
    doc = svid_view(ctx.default_svid)
    doc["svid_ids"] = [str(s.spiffe_id) for s in ctx.x509_svids]
    doc["bundle_trust_domains"] = sorted(bundles)
    doc["bundles"] = bundles
    return doc


def picker(spiffe_id: Optional[str]):
    """An `X509Source` SVID picker choosing the SVID of `spiffe_id` (None: the default SVID)."""
    if spiffe_id is None:
        return None

    def pick(svids: List[X509Svid]) -> X509Svid:
        for s in svids:
            if str(s.spiffe_id) == spiffe_id:
                return s
        raise ValueError(
            "the Workload API served no SVID for %s (served: %s)"
            % (spiffe_id, ", ".join(str(s.spiffe_id) for s in svids))
        )

    return pick


class SourceFailed(Exception):
    """The X509Source could not start; `diagnosis` is what one direct call answered."""

    def __init__(self, err: Exception, diagnosis: Optional[Dict[str, Any]]) -> None:
        super().__init__(str(err))
        self.diagnosis = diagnosis


def open_source(spiffe_id: Optional[str], timeout: float) -> X509Source:
    """An `X509Source` on $SPIFFE_ENDPOINT_SOCKET holding the SVID of `spiffe_id`.

    The source retries most errors silently until its timeout; when it fails, one direct
    `fetch_x509_context` call tells what the Workload API actually answers (`SourceFailed`).
    """
    try:
        return X509Source(timeout_in_seconds=timeout, svid_picker=picker(spiffe_id))
    except Exception as err:
        diagnosis: Optional[Dict[str, Any]] = None
        try:
            with WorkloadApiClient() as client:
                client.fetch_x509_context(timeout=5)
        except Exception as direct:
            diagnosis = error_view(direct)
        raise SourceFailed(err, diagnosis) from err


def error_view(err: BaseException) -> Dict[str, Any]:
    """An exception as JSON; the gRPC status code and details when a gRPC error caused it."""
    doc: Dict[str, Any] = {"type": type(err).__name__, "message": str(err)}
    if isinstance(err, SourceFailed):
        doc["type"] = type(err.__cause__).__name__
        doc["direct_fetch"] = err.diagnosis
        return doc
    if err.__cause__ is not None:
        doc["cause"] = str(err.__cause__)
    cause: Optional[BaseException] = err
    while cause is not None:
        if isinstance(cause, grpc.Call):
            doc["grpc_code"] = cause.code().name
            doc["grpc_details"] = cause.details()
            break
        cause = cause.__cause__ or cause.__context__
    return doc


def peer_spiffe_id(conn) -> Optional[str]:
    """The SPIFFE ID (the one URI SAN) of the certificate the TLS peer presented, if any."""
    cert = conn.get_peer_certificate(as_cryptography=True)
    if cert is None:
        return None
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    return uris[0] if len(uris) == 1 else None


def read_line(conn, limit: int = 4096) -> str:
    """Reads from a pyOpenSSL connection up to a newline (or EOF), at most `limit` bytes."""
    data = b""
    while b"\n" not in data and len(data) < limit:
        chunk = conn.recv(limit - len(data))
        if not chunk:
            break
        data += chunk
    return data.decode("utf-8", "replace").rstrip("\n")
