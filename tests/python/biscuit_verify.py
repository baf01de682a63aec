"""Verifies a Signet delegation token with biscuit-python (the Python wrapper of the Biscuit
reference implementation) and nothing but the issuer's published delegation keys, and prints what
the token says as one JSON document.

The keys document is the one the issuer publishes (`GET /delegation/keys`, the agent's
`FetchDelegationKeys`):

    {"keys": [{"root_key_id": 1, "algorithm": "ed25519", "public_key": "ed25519/<hex>", ...}],
     "sequence": 3}

The root key is picked by the token's `root_key_id`; every published key is also trusted as a
hop signer, so the chain is read from the authority block (`actor(0, ..)`, `subject(..)`,
`right(..)`) and from third-party blocks signed by a published key (`actor(n, ..)`,
`hop(n, token id, parent id)`, `delegated_by(n, ..)`, `hop_rights(n, [..])`, `hop_expires(n, ..)`).
Facts of any other block (an offline attenuation, a block signed by an unknown key) are ignored.

With --operation (and optionally --presenter and --now), the token is also authorized as a
resource server would: `time`, `operation` facts, the check that the operation is one of the
authority block's rights, and every check of every block (hop and attenuation narrowing, expiry).

Exit status: 0 verified (and authorized, with --operation); 2 unusable arguments or keys document;
3 the token names no published root key; 4 the token does not parse or a signature does not
verify; 5 the trusted facts do not form a Signet delegation chain; 6 not authorized. The JSON
document names the failure in `error` and `stage`. The token itself is never printed.
"""

import argparse
import datetime
import json
import sys

from biscuit_auth import (
    AuthorizerBuilder,
    Biscuit,
    PublicKey,
    Rule,
    UnverifiedBiscuit,
)

LIMITS = {"max_facts": 10_000, "max_iterations": 1_000, "max_time_ms": 200}


def emit(doc: dict) -> None:
    print(json.dumps(doc, sort_keys=True, default=str))


def fail(stage: str, status: int, err) -> int:
    emit({"verified": False, "stage": stage, "error": f"{type(err).__name__}: {err}"})
    return status


class ChainError(Exception):
    pass


def load_keys(path: str) -> dict:
    """root_key_id -> PublicKey, from the published document."""
    with open(path, "rb") as f:
        doc = json.load(f)
    keys = {}
    for i, info in enumerate(doc.get("keys", [])):
        text = info["public_key"]
        algorithm = info.get("algorithm")
        if not text.startswith(f"{algorithm}/"):
            raise ValueError(f"keys[{i}]: public_key {text!r} is not an {algorithm} key")
        kid = int(info["root_key_id"])
        if kid in keys:
            raise ValueError(f"keys[{i}]: root_key_id {kid} is used twice")
        keys[kid] = PublicKey(text)
    if not keys:
        raise ValueError("the keys document has no key")
    return keys


def set_limits(builder: AuthorizerBuilder) -> None:
    # Biscuit's default of 1 ms refuses valid tokens on a loaded machine: set them explicitly.
    limits = builder.limits()
    limits.max_facts = LIMITS["max_facts"]
    limits.max_iterations = LIMITS["max_iterations"]
    limits.max_time = datetime.timedelta(milliseconds=LIMITS["max_time_ms"])
    builder.set_limits(limits)


def trusting(keys: dict) -> tuple:
    """A `trusting` clause for the authority block and every published key, with its parameters."""
    names = {f"k{kid}": key for kid, key in sorted(keys.items())}
    clause = "trusting authority" + "".join(f", {{{n}}}" for n in names)
    return clause, names


def query(authorizer, rule: str, scope=None) -> list:
    return [f.terms for f in authorizer.query(Rule(rule, None, scope or {}))]


def unix(t: datetime.datetime) -> int:
    return int(t.timestamp())


def read_chain(token: Biscuit, keys: dict) -> dict:
    builder = AuthorizerBuilder("allow if true;")
    set_limits(builder)
    a = builder.build(token)
    authority = query(
        a,
        "data($id, $s, $k, $i, $d, $iat, $exp, $a) <- signet_delegation(1), token_id($id), "
        "subject($s), subject_type($k), subject_issuer($i), max_depth($d), issued_at($iat), "
        "expires_at($exp), actor(0, $a)",
    )
    if len(authority) != 1:
        raise ChainError(
            "the authority block lacks the Signet delegation facts (schema 1)"
            if not authority
            else "the authority block states its token id, subject, depth or expiry twice"
        )
    token_id, subject, kind, issuer, max_depth, issued_at, expires_at, first = authority[0]
    names = [t[0] for t in query(a, "data($n) <- subject_name($n)")]
    granted = {t[0] for t in query(a, "data($r) <- right($r)")}

    clause, scope = trusting(keys)
    actors = {n: actor for n, actor in query(a, f"data($n, $a) <- actor($n, $a) {clause}", scope)}
    hops = {
        n: (tid, parent, by)
        for n, tid, parent, by in query(
            a, f"data($n, $id, $p, $by) <- hop($n, $id, $p), delegated_by($n, $by) {clause}", scope
        )
    }
    # hop_rights holds a set, which biscuit-python does not convert: ask which of the
    # authority's rights each hop keeps instead.
    kept = query(
        a,
        f"data($n, $r) <- hop_rights($n, $set), right($r), $set.contains($r) {clause}",
        scope,
    )
    expiries = {n: e for n, e in query(a, f"data($n, $e) <- hop_expires($n, $e) {clause}", scope)}

    if actors.get(0) != first:
        raise ChainError("actor 0 is stated twice")
    if set(actors) != set(range(len(actors))) or set(hops) != set(range(1, len(actors))):
        raise ChainError(f"the hops are not 1..n without gaps: actors {sorted(actors)}, hops {sorted(hops)}")
    chain = [{"index": 0, "actor": first, "token_id": token_id}]
    remaining = set(granted)
    expiry = unix(expires_at)
    for n in range(1, len(actors)):
        tid, parent, by = hops[n]
        prev = chain[-1]
        if by != prev["actor"] or parent != prev["token_id"]:
            raise ChainError(f"hop {n} does not follow hop {n - 1}")
        rights = {r for m, r in kept if m == n}
        remaining &= rights
        if n in expiries:
            expiry = min(expiry, unix(expiries[n]))
        chain.append(
            {
                "index": n,
                "actor": actors[n],
                "delegated_by": by,
                "token_id": tid,
                "parent_token_id": parent,
                "rights": sorted(rights),
            }
        )
    return {
        "subject": subject,
        "subject_type": kind,
        "subject_issuer": issuer,
        "subject_name": names[0] if names else "",
        "actors": [h["actor"] for h in chain],
        "holder": chain[-1]["actor"],
        "hops": chain,
        "rights": sorted(remaining),
        "granted": sorted(granted),
        "token_id": chain[-1]["token_id"],
        "issued_at": unix(issued_at),
        "expires_at": expiry,
        "max_depth": max_depth,
        "depth": len(chain) - 1,
    }


def authorize(token: Biscuit, operation: str, now: datetime.datetime) -> None:
    builder = AuthorizerBuilder(
        "time({now}); operation({op}); check if operation($op), right($op); allow if true;",
        {"now": now, "op": operation},
    )
    set_limits(builder)
    builder.build(token).authorize()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("token", help="the token, base64url (`-` reads it from standard input)")
    parser.add_argument("--keys", required=True, help="the published delegation keys document (JSON file)")
    parser.add_argument("--operation", help="also authorize this operation (a right name)")
    parser.add_argument("--presenter", help="with --operation: the presenter, who must be the holder")
    parser.add_argument("--now", type=int, help="with --operation: the time, Unix seconds (default: now)")
    args = parser.parse_args()

    text = (sys.stdin.read() if args.token == "-" else args.token).strip()
    try:
        keys = load_keys(args.keys)
    except Exception as err:
        return fail("keys", 2, err)
    try:
        kid = UnverifiedBiscuit.from_base64(text).root_key_id()
    except Exception as err:
        return fail("parse", 4, err)
    if kid not in keys:
        return fail("root_key", 3, LookupError(f"root key id {kid!r} is not a published delegation key"))

    def root(requested):
        # Called by biscuit-python with the token's root_key_id.
        if requested != kid:
            raise LookupError(f"root key id {requested!r}")
        return keys[kid]

    try:
        token = Biscuit.from_base64(text, root)
    except Exception as err:
        return fail("signature", 4, err)
    try:
        doc = read_chain(token, keys)
    except Exception as err:
        return fail("chain", 5, err)
    doc.update(
        {
            "verified": True,
            "root_key_id": kid,
            "blocks": token.block_count(),
            "external_keys": [token.block_external_key(i) for i in range(token.block_count())],
            "revocation_ids": token.revocation_ids,
        }
    )
    if args.operation is not None:
        now = (
            datetime.datetime.fromtimestamp(args.now, datetime.timezone.utc)
            if args.now is not None
            else datetime.datetime.now(datetime.timezone.utc)
        )
        doc["operation"] = args.operation
        if args.presenter is not None and args.presenter != doc["holder"]:
            doc["authorized"] = False
            doc["error"] = f"presented by {args.presenter}, but the holder is {doc['holder']}"
            emit(doc)
            return 6
        try:
            authorize(token, args.operation, now)
        except Exception as err:
            doc["authorized"] = False
            doc["error"] = f"{type(err).__name__}: {err}"
            emit(doc)
            return 6
        doc["authorized"] = True
    emit(doc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
