#!/usr/bin/env python3
"""Independent verifier of Signet's audit hash chain (see docs/datastore.md).

Usage: verify_audit.py sqlite PATH
       verify_audit.py rows < rows.jsonl   (one JSON array per line, columns as in QUERY)
Prints "ok N" and exits 0 when the chain verifies, else prints the first problem and exits 1.
Standard library only; store/tests/sqlite.rs runs it against a real store.
"""
import hashlib
import json
import sqlite3
import sys

QUERY = ("SELECT seq, time_ms, kind, actor, subject, outcome, details, prev_hash, hash "
         "FROM audit_events ORDER BY seq")


def verify(rows):
    prev, expected_seq, n = "0" * 64, 1, 0
    for seq, time_ms, kind, actor, subject, outcome, details, prev_hash, h in rows:
        event = dict(time_ms=time_ms, kind=kind, actor=actor, subject=subject,
                     outcome=outcome, details=json.loads(details))
        canonical = json.dumps(event, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        if seq != expected_seq:
            return f"seq gap: expected {expected_seq}, found {seq}"
        if prev_hash != prev:
            return f"broken link at seq {seq}"
        if hashlib.sha256((prev + canonical).encode()).hexdigest() != h:
            return f"seq {seq} was modified"
        prev, expected_seq, n = h, seq + 1, n + 1
    return f"ok {n}"


def main():
    if sys.argv[1:2] == ["sqlite"]:
        rows = sqlite3.connect(sys.argv[2]).execute(QUERY).fetchall()
    else:
        rows = [json.loads(line) for line in sys.stdin if line.strip()]
    result = verify(rows)
    print(result)
    sys.exit(0 if result.startswith("ok ") else 1)


if __name__ == "__main__":
    main()
