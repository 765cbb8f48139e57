"""A TLS-terminating relay: HTTPS in front of a local plain-HTTP server (the Kinesis stand-in,
moto), so that a client talks TLS as it does to AWS, with a certificate authority made here.

    python -m bike_local.tls_relay --cert-dir DIR --upstream 127.0.0.1:4567 [--port 0]

On start it makes, in DIR unless they are there already, a self-signed certificate authority
(`ca.pem`, its key is kept only in memory) and a server certificate for `127.0.0.1`, `::1` and
`localhost` signed by it (`server.pem`, `server.key`), both ECDSA P-256 and valid for one day.
Point a client at `ca.pem` to trust it:
  the Rust SDK (rustls-native-certs)   SSL_CERT_FILE=DIR/ca.pem (replaces the system store)
  the AWS CLI, boto3                   AWS_CA_BUNDLE=DIR/ca.pem

Then it listens on 127.0.0.1 only, and for each connection completes the TLS handshake,
opens a plain TCP connection to the upstream and copies bytes both ways until either side
closes. It does not parse HTTP, so keep-alive, pipelining and any body size pass through.
Both sides have Nagle's algorithm off: a relay that held small writes back for the peer's
delayed ACK would add tens of milliseconds the real service does not.
One thread per direction per connection; the standard library plus `cryptography` (pinned in
scripts/local/requirements.txt) to make the certificates.
"""

import argparse
import datetime
import ipaddress
import pathlib
import socket
import ssl
import sys
import threading

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALIDITY = datetime.timedelta(days=1)
CHUNK = 64 * 1024


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_certificates(cert_dir: pathlib.Path) -> None:
    """Writes ca.pem, server.pem and server.key into cert_dir unless all three are there."""
    files = [cert_dir / name for name in ("ca.pem", "server.pem", "server.key")]
    if all(path.exists() for path in files):
        return
    cert_dir.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc)
    # A little in the past: a client whose clock is a second behind still accepts it.
    not_before, not_after = now - datetime.timedelta(minutes=5), now + VALIDITY

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("bike_local test CA")
    ca = (x509.CertificateBuilder()
          .subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number())
          .not_valid_before(not_before).not_valid_after(not_after)
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(
              digital_signature=False, content_commitment=False, key_encipherment=False,
              data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
              encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
                         critical=False)
          .sign(ca_key, hashes.SHA256()))

    key = ec.generate_private_key(ec.SECP256R1())
    server = (x509.CertificateBuilder()
              .subject_name(_name("localhost")).issuer_name(ca_name)
              .public_key(key.public_key())
              .serial_number(x509.random_serial_number())
              .not_valid_before(not_before).not_valid_after(not_after)
              .add_extension(x509.SubjectAlternativeName([
                  x509.DNSName("localhost"),
                  x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                  x509.IPAddress(ipaddress.ip_address("::1"))]), critical=False)
              .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
              .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                             critical=False)
              .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                  ca_key.public_key()), critical=False)
              .sign(ca_key, hashes.SHA256()))

    pem = serialization.Encoding.PEM
    (cert_dir / "server.key").write_bytes(key.private_bytes(
        pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    (cert_dir / "server.key").chmod(0o600)
    (cert_dir / "server.pem").write_bytes(server.public_bytes(pem))
    (cert_dir / "ca.pem").write_bytes(ca.public_bytes(pem))


def _pump(source: socket.socket, sink: socket.socket) -> None:
    """Copies source to sink until source ends or either fails, then closes both."""
    try:
        while data := source.recv(CHUNK):
            sink.sendall(data)
    except OSError:
        pass
    finally:
        for sock in (source, sink):
            try:
                sock.close()
            except OSError:
                pass


def _serve_connection(raw: socket.socket, context: ssl.SSLContext,
                      upstream: tuple[str, int]) -> None:
    raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        client = context.wrap_socket(raw, server_side=True)
    except (ssl.SSLError, OSError) as error:
        # A client that does not trust the CA ends here; say so, as a server's log would.
        print(f"tls_relay: handshake failed: {error}", file=sys.stderr, flush=True)
        raw.close()
        return
    try:
        backend = socket.create_connection(upstream)
    except OSError as error:
        print(f"tls_relay: upstream {upstream[0]}:{upstream[1]}: {error}", file=sys.stderr,
              flush=True)
        client.close()
        return
    backend.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    threading.Thread(target=_pump, args=(backend, client), daemon=True).start()
    _pump(client, backend)


def serve(listener: socket.socket, context: ssl.SSLContext, upstream: tuple[str, int]) -> None:
    """Accepts on listener forever, one handshake thread per connection."""
    while True:
        raw, _ = listener.accept()
        threading.Thread(target=_serve_connection, args=(raw, context, upstream),
                         daemon=True).start()


def server_context(cert_dir: pathlib.Path) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert_dir / "server.pem", cert_dir / "server.key")
    return context


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"not HOST:PORT: {text}")
    return host, int(port)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cert-dir", required=True, type=pathlib.Path,
                        help="where ca.pem, server.pem and server.key are (made if missing)")
    parser.add_argument("--upstream", required=True, type=_address, help="HOST:PORT, plain TCP")
    parser.add_argument("--port", type=int, default=0, help="default: a free one")
    args = parser.parse_args(argv)
    make_certificates(args.cert_dir)
    context = server_context(args.cert_dir)
    listener = socket.create_server(("127.0.0.1", args.port))
    port = listener.getsockname()[1]
    print(f"tls_relay: https://127.0.0.1:{port} -> {args.upstream[0]}:{args.upstream[1]}, "
          f"CA {args.cert_dir / 'ca.pem'}", file=sys.stderr, flush=True)
    try:
        serve(listener, context, args.upstream)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
