"""Fetches this process's X509-SVID from the Workload API at $SPIFFE_ENDPOINT_SOCKET with py-spiffe.

Modes:
  source (default)  `spiffe.X509Source`: the long-lived source real services use (a stream with
                    retries), waiting at most --timeout seconds for its first update.
  once              `spiffe.WorkloadApiClient.fetch_x509_context`: one call, no retry, so a refusal
                    (PermissionDenied, InvalidArgument) is reported with its gRPC code and details.

Prints one JSON line: the default SVID (spiffe_id, serial in hex, not_before/not_after in Unix
seconds, chain_pem, key_matches_leaf), svid_ids, bundle_trust_domains and bundles (trust domain ->
PEM authorities). On failure prints {"error": {...}} and exits 3.
"""

import argparse
import sys

from spiffe import WorkloadApiClient

from workload_common import context_view, emit, error_view, open_source


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mode", choices=["source", "once"], default="source")
    parser.add_argument("--timeout", type=float, default=30.0)
    args = parser.parse_args()
    try:
        if args.mode == "source":
            with open_source(None, args.timeout) as source:
                doc = context_view(source.get_x509_context())
        else:
            with WorkloadApiClient() as client:
                doc = context_view(client.fetch_x509_context(timeout=args.timeout))
    except Exception as err:  # reported to the test, which decides
        emit({"error": error_view(err)})
        return 3
    doc["mode"] = args.mode
    emit(doc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
