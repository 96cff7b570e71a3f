"""The SSRF guard's transport over TLS (executors._guarded_transport): a real TLS server with a certificate for
`localhost` from a CA made here. The guard connects to the address it checked, and the TLS handshake still carries
the URL's hostname (SNI) and verifies the certificate against that name; the default context (certifi's CAs)
verifies too; a destination the guard refuses is never connected to."""

from __future__ import annotations

import http.server
import shutil
import ssl
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from executors._guarded_transport import GuardedTransport
from executors.urlguard import AddressGuard, DestinationRefused

pytestmark = pytest.mark.integration

LIMITS = httpx.Limits(max_connections=4, max_keepalive_connections=0)
LOOPBACK = AddressGuard.parse("127.0.0.1/32, ::1/128")


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make a test CA")
    d = tmp_path_factory.mktemp("tls")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
             "-subj", "/CN=opsq test CA", "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "leaf.key", "-out", "leaf.csr", "-subj",
             "/CN=localhost", cwd=d)
    (d / "leaf.ext").write_text("subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\n"
                                "extendedKeyUsage=serverAuth\nsubjectKeyIdentifier=hash\n"
                                "authorityKeyIdentifier=keyid,issuer\n")
    _openssl("x509", "-req", "-in", "leaf.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
             "-out", "leaf.pem", "-days", "2", "-extfile", "leaf.ext", cwd=d)
    return d


@dataclass
class TlsServer:
    port: int
    sni: list[str | None] = field(default_factory=list)
    peers: list[str] = field(default_factory=list)


@pytest.fixture
def tls_server(certs: Path) -> Iterator[TlsServer]:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certs / "leaf.pem", certs / "leaf.key")
    seen = TlsServer(port=0)
    context.sni_callback = lambda _sock, name, _ctx: seen.sni.append(name)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.peers.append(self.client_address[0])
            body = b"hello over tls"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    seen.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield seen
    server.shutdown()
    server.server_close()


def _get(url: str, guard: AddressGuard, context: ssl.SSLContext | None = None) -> httpx.Response:
    with httpx.Client(transport=GuardedTransport(guard, LIMITS, context), trust_env=False, timeout=10) as client:
        return client.get(url)


def test_tls_through_the_guard_keeps_sni_and_checks_the_certificate_against_the_name(certs, tls_server):
    trusting = ssl.create_default_context(cafile=str(certs / "ca.pem"))

    ok = _get(f"https://localhost:{tls_server.port}/hook", LOOPBACK, trusting)
    assert ok.status_code == 200 and ok.text == "hello over tls"
    assert tls_server.sni == ["localhost"] and tls_server.peers == ["127.0.0.1"]

    # The same server by its address: the certificate names localhost, not 127.0.0.1, so it is refused.
    with pytest.raises(httpx.ConnectError, match="certificate verify failed"):
        _get(f"https://127.0.0.1:{tls_server.port}/hook", LOOPBACK, trusting)
    # The default context (httpx.create_ssl_context: certifi's CAs) does not know this CA: verified, refused.
    with pytest.raises(httpx.ConnectError, match="certificate verify failed"):
        _get(f"https://localhost:{tls_server.port}/hook", LOOPBACK)
    assert tls_server.peers == ["127.0.0.1"]  # neither refused handshake got as far as a request


def test_a_refused_destination_is_never_connected_to(certs, tls_server):
    trusting = ssl.create_default_context(cafile=str(certs / "ca.pem"))
    with pytest.raises(DestinationRefused, match=r"localhost .* is a loopback address"):
        _get(f"https://localhost:{tls_server.port}/hook", AddressGuard(), trusting)
    assert tls_server.sni == [] and tls_server.peers == []
