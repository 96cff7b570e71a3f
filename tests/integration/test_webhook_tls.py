"""The SSRF guard's transport over TLS (executors._guarded_transport): a real TLS server with a certificate for
`localhost` from a CA made here. The guard connects to the address it checked, and the TLS handshake still carries
the URL's hostname (SNI) and verifies the certificate against that name; the default context (certifi's CAs)
verifies too; a destination the guard refuses is never connected to. With OPSQ_WEBHOOK_PROXY, the same through a
real CONNECT proxy (tests.support.connect_proxy)."""

from __future__ import annotations

import http.server
import re
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
from executors.urlguard import AddressGuard, DestinationRefused, WebhookProxy
from tests.support.connect_proxy import ConnectProxy, start_connect_proxy

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


@pytest.fixture
def connect_proxy() -> Iterator[ConnectProxy]:
    proxy = start_connect_proxy()
    yield proxy
    proxy.close()


def test_through_a_proxy_the_tunnel_goes_to_the_checked_address(certs, tls_server, connect_proxy, monkeypatch):
    """OPSQ_WEBHOOK_PROXY: a CONNECT tunnel to the address the guard checked (the proxy is never given the name,
    so it makes no lookup of its own), TLS inside it with the URL's name; the destination is checked here before
    anything reaches the proxy; the proxy is trusted as configured without becoming a destination; HTTP(S)_PROXY
    are ignored."""
    trusting = ssl.create_default_context(cafile=str(certs / "ca.pem"))
    by_name = AddressGuard.parse("localhost")  # the destination and the proxy, allowed by name only
    proxy = WebhookProxy.parse(f"http://ops%40corp:s3cret@localhost:{connect_proxy.port}")
    assert proxy is not None

    def get(url: str, guard: AddressGuard, via: WebhookProxy | None) -> httpx.Response:
        transport = GuardedTransport(guard, LIMITS, trusting, proxy=via)
        with httpx.Client(transport=transport, trust_env=False, timeout=10) as client:
            return client.get(url)

    ok = get(f"https://localhost:{tls_server.port}/hook", by_name, proxy)
    assert ok.status_code == 200 and ok.text == "hello over tls"
    assert tls_server.sni == ["localhost"] and tls_server.peers == ["127.0.0.1"]
    # localhost may resolve to ::1 first (nothing listens there: the proxy answers 502 and the next is tried).
    assert connect_proxy.targets[-1] == f"127.0.0.1:{tls_server.port}"
    assert set(connect_proxy.targets) <= {f"127.0.0.1:{tls_server.port}", f"[::1]:{tls_server.port}"}
    assert set(connect_proxy.authorizations) == {"Basic b3BzQGNvcnA6czNjcmV0"}  # ops@corp:s3cret
    tried = len(connect_proxy.targets)

    # Destinations the guard refuses are refused here: the proxy is not even asked.
    for url in (f"https://127.0.0.1:{tls_server.port}/hook", "http://169.254.169.254/latest/meta-data/"):
        with pytest.raises(DestinationRefused, match="webhook destination refused"):
            get(url, by_name, proxy)
    assert len(connect_proxy.targets) == tried
    # The proxy is trusted as configured, not through the destinations' allow-list: one named by an address the
    # guard refuses as a destination carries the call...
    via_address = get(f"https://localhost:{tls_server.port}/hook", by_name,
                      WebhookProxy("127.0.0.1", connect_proxy.port))
    assert via_address.status_code == 200 and len(connect_proxy.targets) > tried
    tried = len(connect_proxy.targets)
    # ...and configuring it does not make its own address a destination (through it, or straight).
    for via in (proxy, None):
        with pytest.raises(DestinationRefused, match="webhook destination refused"):
            get(f"http://127.0.0.1:{connect_proxy.port}/", by_name, via)
    assert len(connect_proxy.targets) == tried

    # The environment's proxies are not used (so none carries webhooks by accident): straight to the server.
    for name in ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "https_proxy", "http_proxy", "all_proxy"):
        monkeypatch.setenv(name, f"http://127.0.0.1:{connect_proxy.port}")
    assert get(f"https://localhost:{tls_server.port}/hook", LOOPBACK, None).status_code == 200
    assert len(connect_proxy.targets) == tried


@pytest.mark.parametrize(("url", "error"), [
    ("https://proxy.corp:3128", "must be an http:// URL"),
    ("socks5://proxy.corp:1080", "must be an http:// URL"),
    ("http://proxy.corp:31x8", "the port is not a number"),
    ("http://proxy.corp:3128/path", "must be http://[user:password@]host:port, nothing more"),
])
def test_a_proxy_setting_that_cannot_be_used_is_refused_by_name(url, error):
    with pytest.raises(ValueError, match=re.escape(error)) as info:
        WebhookProxy.parse(url)
    assert str(info.value).startswith("OPSQ_WEBHOOK_PROXY")
    assert WebhookProxy.parse("") is None and WebhookProxy.parse(None) is None
