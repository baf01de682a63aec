"""An mTLS server built with `spiffetls.listen` on an `X509Source` from $SPIFFE_ENDPOINT_SOCKET.

It presents the SVID of --id (picked from what the Workload API served this process), trusts only
the bundles the Workload API served, and authorizes exactly the client SPIFFE ID --authorize
(`spiffetls.tlsconfig.authorize.authorize_id`).

Prints {"listening": "HOST:PORT", "spiffe_id": ...} once the socket listens (the readiness signal),
then serves ONE connection: reads a line, answers "hello from <own ID>", and prints
{"peer_spiffe_id": ..., "received": ...}. A refused handshake prints {"error": {...}, "stage": ...}
and exits 4; a Workload API failure exits 3.
"""

import argparse
import select
import sys

from OpenSSL import SSL
from spiffe import SpiffeId
from spiffetls import ListenOptions, ServerTlsMode, listen
from spiffetls.tlsconfig.authorize import authorize_id

from workload_common import emit, error_view, open_source, peer_spiffe_id, read_line


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--id", required=True, help="own SPIFFE ID (the SVID to present)")
    parser.add_argument("--authorize", required=True, help="the client SPIFFE ID to accept")
    parser.add_argument("--listen", default="127.0.0.1:0")
    parser.add_argument("--timeout", type=float, default=60.0)
    args = parser.parse_args()
    try:
        source = open_source(args.id, args.timeout)
    except Exception as err:
        emit({"error": error_view(err), "stage": "workload_api"})
        return 3
    with source:
        options = ListenOptions(
            tls_mode=ServerTlsMode.MTLS,
            authorize_fn=authorize_id(SpiffeId(args.authorize)),
        )
        listener = listen(args.listen, source, options)
        host, port = listener.getsockname()[:2]
        emit({"listening": "%s:%d" % (host, port), "spiffe_id": args.id})
        ready, _, _ = select.select([listener], [], [], args.timeout)
        if not ready:
            emit({"error": {"message": "no connection within the timeout"}, "stage": "accept"})
            return 4
        conn, _addr = listener.accept()
        stage = "handshake"
        try:
            conn.do_handshake()
            stage = "exchange"
            received = read_line(conn)
            conn.sendall(("hello from %s\n" % args.id).encode())
            peer = peer_spiffe_id(conn)
            try:
                conn.shutdown()
            except SSL.Error:
                pass
        except (SSL.Error, OSError) as err:
            emit({"error": error_view(err), "stage": stage})
            return 4
        finally:
            conn.close()
            listener.close()
    emit({"peer_spiffe_id": peer, "received": received, "spiffe_id": args.id})
    return 0


if __name__ == "__main__":
    sys.exit(main())
