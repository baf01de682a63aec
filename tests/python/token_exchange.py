"""An OAuth 2.0 Token Exchange (RFC 8693) client, written against the RFC with the standard
library, and PyJWT to verify the issued access token through the issuer's OIDC discovery JWKS.

Runs the travel scenario against the issuer's `POST /token`:
1. alice's ID token + the planner's JWT-SVID          -> a delegation token (planner acts for alice)
2. that token + the planner's JWT-SVID, audience search -> a hop: search acts for alice via planner
3. that token + search's JWT-SVID, requested JWT       -> an at+jwt for `flights-api` with nested act
and the refusals an RFC client must understand (each an OAuth error JSON with HTTP 400).

Prints one JSON document with every response; exits 4 when the access token does not verify.
"""

import argparse
import json
import ssl
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

import jwt

GRANT = "urn:ietf:params:oauth:grant-type:token-exchange"
ID_TOKEN = "urn:ietf:params:oauth:token-type:id_token"
JWT = "urn:ietf:params:oauth:token-type:jwt"
BISCUIT = "urn:signet:params:oauth:token-type:biscuit"


def post(url, ctx, params):
    body = urllib.parse.urlencode(params).encode()
    req = urllib.request.Request(
        url, data=body, headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=30) as r:
            return r.status, r.headers.get("Cache-Control"), json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Cache-Control"), json.loads(e.read())


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--issuer-url", required=True, help="https://host:port of the issuer")
    p.add_argument("--ca-file", required=True)
    p.add_argument("--id-token", required=True)
    p.add_argument("--planner-svid", required=True)
    p.add_argument("--search-svid", required=True)
    p.add_argument("--intruder-svid", required=True)
    p.add_argument("--search-id", required=True)
    a = p.parse_args()
    ctx = ssl.create_default_context(cafile=a.ca_file)
    url = a.issuer_url + "/token"
    out = {}

    def exchange(name, **params):
        started = time.monotonic()
        status, cache, doc = post(url, ctx, {"grant_type": GRANT, **params})
        out[name] = {"status": status, "cache_control": cache, "body": doc,
                     "seconds": round(time.monotonic() - started, 3)}
        return doc

    minted = exchange(
        "mint",
        subject_token=a.id_token,
        subject_token_type=ID_TOKEN,
        actor_token=a.planner_svid,
        actor_token_type=JWT,
        scope="flights:read",
    )
    hop = exchange(
        "hop",
        subject_token=minted.get("access_token", ""),
        subject_token_type=BISCUIT,
        actor_token=a.planner_svid,
        actor_token_type=JWT,
        audience=a.search_id,
    )
    access = exchange(
        "jwt",
        subject_token=hop.get("access_token", ""),
        subject_token_type=BISCUIT,
        actor_token=a.search_svid,
        actor_token_type=JWT,
        requested_token_type=JWT,
        audience="flights-api",
    )
    # Refusals.
    exchange("wrong_grant", **{"grant_type": "password"})
    exchange(
        "not_the_holder",
        subject_token=hop.get("access_token", ""),
        subject_token_type=BISCUIT,
        actor_token=a.intruder_svid,
        actor_token_type=JWT,
        requested_token_type=JWT,
        audience="flights-api",
    )
    exchange(
        "widening",
        subject_token=hop.get("access_token", ""),
        subject_token_type=BISCUIT,
        actor_token=a.search_svid,
        actor_token_type=JWT,
        requested_token_type=JWT,
        audience="flights-api",
        scope="flights:book",
    )
    exchange(
        "no_actor",
        subject_token=a.id_token,
        subject_token_type=ID_TOKEN,
    )
    exchange(
        "forged_actor",
        subject_token=a.id_token,
        subject_token_type=ID_TOKEN,
        actor_token=a.planner_svid[:-4] + ("AAAA" if not a.planner_svid.endswith("AAAA") else "BBBB"),
        actor_token_type=JWT,
    )

    # Verify the access token like any OIDC relying party: discovery, JWKS, signature, iss, aud.
    token = access.get("access_token", "")
    try:
        disc_req = urllib.request.urlopen(
            a.issuer_url + "/.well-known/openid-configuration", context=ctx, timeout=30
        )
        discovery = json.loads(disc_req.read())
        jwks_client = jwt.PyJWKClient(discovery["jwks_uri"], ssl_context=ctx)
        key = jwks_client.get_signing_key_from_jwt(token)
        claims = jwt.decode(
            token,
            key=key.key,
            algorithms=discovery.get("id_token_signing_alg_values_supported", ["ES256"]),
            audience="flights-api",
            issuer=discovery["issuer"],
        )
        out["verified_claims"] = claims
        out["verified_header"] = jwt.get_unverified_header(token)
    except Exception as err:  # noqa: BLE001 - report any verification failure
        out["verify_error"] = f"{type(err).__name__}: {err}"
        print(json.dumps(out))
        return 4
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
