"""Checks a WIT-SVID served by the agent with PyJWT alone, and uses its key like a workload would.

Given the WIT-SVID, its private key (`wit_svid_key`, a private JWK) and the WIT bundle (a JWK Set
from FetchWITBundles), it:
1. verifies the WIT-SVID's signature with the bundle key named by its `kid` (header `typ` must be
   `wit+jwt`) and reads its claims (`sub`, `exp`, `cnf.jwk`);
2. checks that the private key is the one `cnf.jwk` names;
3. signs a Workload Proof Token with that key (`typ: wpt+jwt`, `aud`, `exp`, `iat`, `jti`, `wth`
   = base64url(SHA-256(WIT))), for the Rust side to verify with signet-sdk;
4. with --wpt, verifies a WPT made by the Rust side against `cnf.jwk` (signature, audience, `wth`).

Prints one JSON document; exits 4 when a check fails.
"""

import argparse
import base64
import hashlib
import json
import secrets
import sys
import time

import jwt
from jwt import PyJWK, PyJWKSet

from workload_common import emit, error_view


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--wit", required=True)
    parser.add_argument("--key", required=True, help="the wit_svid_key (private JWK)")
    parser.add_argument("--jwks", required=True, help="the WIT bundle (JWK Set)")
    parser.add_argument("--audience", required=True)
    parser.add_argument("--wpt", help="a WPT to verify")
    args = parser.parse_args()
    doc = {}
    try:
        header = jwt.get_unverified_header(args.wit)
        doc["wit_header"] = header
        if header.get("typ") != "wit+jwt":
            raise ValueError("typ is %r, not wit+jwt" % header.get("typ"))
        keys = {k.key_id: k for k in PyJWKSet.from_json(args.jwks).keys}
        bundle_key = keys[header["kid"]]
        claims = jwt.decode(
            args.wit,
            key=bundle_key.key,
            algorithms=[header["alg"]],
            options={"require": ["exp", "sub"], "verify_aud": False},
        )
        doc["wit_claims"] = claims
        cnf = claims["cnf"]["jwk"]
        private = json.loads(args.key)
        same = all(private.get(k) == cnf.get(k) for k in ("kty", "crv", "x", "y", "alg"))
        doc["key_matches_cnf"] = same
        if not same:
            raise ValueError("wit_svid_key is not the key in cnf.jwk")
        signing = PyJWK(private)
        now = int(time.time())
        doc["python_wpt"] = jwt.encode(
            {
                "aud": args.audience,
                "iat": now,
                "exp": now + 30,
                "jti": b64(secrets.token_bytes(16)),
                "wth": b64(hashlib.sha256(args.wit.encode("ascii")).digest()),
            },
            signing.key,
            algorithm=cnf["alg"],
            headers={"typ": "wpt+jwt"},
        )
        if args.wpt:
            wpt_header = jwt.get_unverified_header(args.wpt)
            doc["rust_wpt_header"] = wpt_header
            holder = PyJWK(cnf).key
            wpt_claims = jwt.decode(
                args.wpt, key=holder, algorithms=[cnf["alg"]], audience=args.audience
            )
            doc["rust_wpt_claims"] = wpt_claims
            doc["rust_wpt_wth_ok"] = wpt_claims["wth"] == b64(
                hashlib.sha256(args.wit.encode("ascii")).digest()
            )
    except Exception as err:
        emit(dict(doc, error=error_view(err)))
        return 4
    emit(doc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
