"""An mTLS client built with `spiffetls.dial` on an `X509Source` from $SPIFFE_ENDPOINT_SOCKET.

It presents the SVID of --id (picked from what the Workload API served this process), trusts only
the bundles the Workload API served, and authorizes exactly the server SPIFFE ID --authorize.
Connects to --connect HOST:PORT, sends "hello from <own ID>", reads the answer and prints
{"peer_spiffe_id": ..., "received": ...}. A refused handshake or a connection closed by the server
prints {"error": {...}, "stage": "handshake" | "exchange"} and exits 4; a Workload API failure
exits 3.
"""

import argparse
import sys

from OpenSSL import SSL
from spiffe import SpiffeId
from spiffetls import dial
from spiffetls.errors import TLSConnectionError
from spiffetls.tlsconfig.authorize import authorize_id

from workload_common import emit, error_view, open_source, peer_spiffe_id, read_line


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--id", required=True, help="own SPIFFE ID (the SVID to present)")
    parser.add_argument("--authorize", required=True, help="the server SPIFFE ID to accept")
    parser.add_argument("--connect", required=True, help="HOST:PORT of the server")
    parser.add_argument("--timeout", type=float, default=60.0)
    args = parser.parse_args()
    try:
        source = open_source(args.id, args.timeout)
    except Exception as err:
        emit({"error": error_view(err), "stage": "workload_api"})
        return 3
    with source:
        try:
            conn = dial(args.connect, source, authorize_fn=authorize_id(SpiffeId(args.authorize)))
        except (TLSConnectionError, ConnectionError) as err:
            emit({"error": error_view(err), "stage": "handshake"})
            return 4
        try:
            peer = peer_spiffe_id(conn)
            conn.sendall(("hello from %s\n" % args.id).encode())
            received = read_line(conn)
            if not received:
                raise ConnectionError("the server closed the connection without an answer")
        except (SSL.Error, OSError) as err:
            emit({"error": error_view(err), "stage": "exchange"})
            return 4
        finally:
            conn.close()
    emit({"peer_spiffe_id": peer, "received": received, "spiffe_id": args.id})
    return 0


if __name__ == "__main__":
    sys.exit(main())
