"""Fetches a JWT-SVID with py-spiffe's `JwtSource` from $SPIFFE_ENDPOINT_SOCKET and verifies it
with PyJWT, twice: with the JWT authority that `FetchJWTBundles` delivered (through the source's
bundle for the token's trust domain), and, with --discovery, with the key found through the OIDC
discovery document of the issuer (`jwt.PyJWKClient` on its `jwks_uri`), checking `iss` too.

Prints one JSON document: the token, its header, the claims each verification returned, the
discovery document, and whether a wrong audience was refused by each path. Exits 3 when the
Workload API fails, 4 when a verification fails.
"""

import argparse
import json
import ssl
import sys
import urllib.request

import jwt
from spiffe import JwtSource, SpiffeId, TrustDomain

from workload_common import emit, error_view

ALGORITHMS = ["RS256", "RS384", "RS512", "ES256", "ES384", "ES512", "PS256", "PS384", "PS512"]


def wrong_audience_refused(token: str, key, algorithms, **kwargs) -> bool:
    try:
        jwt.decode(token, key=key, algorithms=algorithms, audience="not-" + kwargs.pop("audience"), **kwargs)
    except jwt.InvalidAudienceError:
        return True
    return False


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--audience", required=True)
    parser.add_argument("--spiffe-id", help="the identity to fetch (default: the default one)")
    parser.add_argument("--discovery", help="URL of the OIDC discovery document")
    parser.add_argument("--ca-file", help="PEM CA certificates for the discovery URL")
    parser.add_argument("--issuer", help="expected `iss` (and discovery `issuer`)")
    parser.add_argument("--timeout", type=float, default=60.0)
    args = parser.parse_args()

    try:
        source = JwtSource(timeout_in_seconds=args.timeout)
    except Exception as err:
        emit({"error": error_view(err), "stage": "workload_api"})
        return 3
    doc = {}
    with source:
        try:
            subject = SpiffeId(args.spiffe_id) if args.spiffe_id else None
            svid = source.fetch_svid(audience={args.audience}, subject=subject, timeout=args.timeout)
        except Exception as err:
            emit({"error": error_view(err), "stage": "fetch_svid"})
            return 3
        token = svid.token
        header = jwt.get_unverified_header(token)
        doc.update(
            {
                "spiffe_id": str(svid.spiffe_id),
                "audience": sorted(svid.audience),
                "expiry": svid.expiry,
                "token": token,
                "header": header,
                "bundle_trust_domains": sorted(str(b.trust_domain) for b in source.bundles),
            }
        )
        # 1. The key from FetchJWTBundles (the bundle of the token's own trust domain).
        bundle = source.get_bundle_for_trust_domain(TrustDomain(svid.spiffe_id.trust_domain.name))
        key = bundle.get_jwt_authority(header["kid"]) if bundle else None
        if key is None:
            emit(dict(doc, error={"message": "no JWT authority %s in the bundle" % header["kid"]}, stage="bundle"))
            return 4
        try:
            doc["bundle_claims"] = jwt.decode(token, key=key, algorithms=ALGORITHMS, audience=args.audience)
        except jwt.PyJWTError as err:
            emit(dict(doc, error=error_view(err), stage="verify_bundle"))
            return 4
        doc["bundle_wrong_audience_refused"] = wrong_audience_refused(
            token, key, ALGORITHMS, audience=args.audience
        )

    # 2. The key found through OIDC discovery.
    if args.discovery:
        context = ssl.create_default_context(cafile=args.ca_file)
        try:
            with urllib.request.urlopen(args.discovery, context=context, timeout=args.timeout) as r:
                discovery = json.load(r)
                doc["discovery_content_type"] = r.headers.get("Content-Type")
            doc["discovery"] = discovery
            client = jwt.PyJWKClient(discovery["jwks_uri"], cache_keys=False, ssl_context=context)
            signing_key = client.get_signing_key_from_jwt(token)
            algorithms = discovery["id_token_signing_alg_values_supported"]
            doc["oidc_claims"] = jwt.decode(
                token,
                key=signing_key.key,
                algorithms=algorithms,
                audience=args.audience,
                issuer=args.issuer,
            )
        except Exception as err:
            emit(dict(doc, error=error_view(err), stage="verify_oidc"))
            return 4
        doc["oidc_wrong_audience_refused"] = wrong_audience_refused(
            token, signing_key.key, algorithms, audience=args.audience, issuer=args.issuer
        )
    emit(doc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
