"""The sandbox: one local HTTP server that emulates Slack, Notion, Trello, Drive, Sheets and webhooks.

Each platform's emulator is an Emulator subclass with its `platform` in a module of this package, found
the way executors.registry finds executors (a new module is picked up). Each lives under /<platform> with
the real API's paths below it, so pointing an executor's base_url at http://host:port/<platform>
exercises exactly the requests it would send to the real service. Objects have real state (a created
card exists until it is deleted). Control endpoints under /_sandbox/ expose the request log and the
state, and inject faults (errors, latency, timeouts, 429s, and the ambiguous ones of issue 11: the request is
applied, then its answer is lost).
It needs nothing the executors do not, so it runs anywhere they run.
"""

from __future__ import annotations

import contextlib
import functools
import json
import random
import socket
import socketserver
import struct
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import parse_qs, unquote, urlencode, urlsplit

import httpx

import executors.sandbox as package
from executors.registry import PLATFORMS, discover
from executors.sandbox.client import SandboxClient
from executors.sandbox.common import ApiError, Call, Emulator, Headers, Reply, token_from_header
from executors.sandbox.slack import SlackEmulator
from executors.sandbox.slack import form_body as slack_form_body
from executors.sandbox.slack import interaction as slack_interaction
from executors.sandbox.slack import signed as slack_signed

__all__ = ["FAULT_MODES", "Sandbox", "SandboxClient", "SandboxServer", "emulator_classes", "serve_forever"]

#: Faults that apply the request to the emulator (the object exists) and then lose its answer: held past the
#: client's read timeout, the connection dropped without a response, or a gateway's 502. The client cannot
#: tell whether it acted: exactly the ambiguous outcomes the effect key is for (issue 11).
APPLIED_MODES = ("applied_timeout", "applied_reset", "applied_502")
FAULT_MODES = ("ok", "error", "timeout", "rate_limit", "auth", *APPLIED_MODES)
FAULT_FIELDS = frozenset({"platform", "mode", "status", "rate", "latency_ms", "retry_after", "times",
                          "match", "body_match"})
#: How long a `timeout` fault holds the request: far beyond any sane client read timeout.
TIMEOUT_FAULT_S = 30.0
#: The answer an `applied_timeout` fault holds back when it names no latency_ms: as long as `timeout`'s.
APPLIED_TIMEOUT_DEFAULT_S = TIMEOUT_FAULT_S
MAX_LOG = 10_000
MAX_BODY = 10 * 1024 * 1024
#: Query parameters that carry credentials on some platforms (Trello key/token, Google access_token).
SECRET_QUERY_KEYS = frozenset({"key", "token", "access_token"})


@functools.cache
def emulator_classes() -> dict[str, type[Emulator]]:
    """platform -> emulator class, for the modules of this package; in the registry's order of platforms."""
    rank = {platform: i for i, platform in enumerate(PLATFORMS)}
    found = discover(package, Emulator)
    return dict(sorted(found.items(), key=lambda item: (rank.get(item[0], len(rank)), item[0])))


@dataclass
class Dropped(Reply):
    """No answer at all: the handler closes the connection without writing a byte (`applied_reset`)."""


def _copy(value: Any) -> Any:
    """A deep, JSON-clean copy, taken under the lock so callers never see state mutate under them."""
    return json.loads(json.dumps(value))


@dataclass
class Fault:
    platform: str
    mode: str = "error"
    status: int = 503
    rate: float = 1.0
    latency_ms: float = 0
    retry_after: float = 1
    times: int | None = None
    match: str | None = None
    #: only requests whose body has these top-level fields with these values (a Slack message to one channel)
    body_match: dict[str, Any] | None = None
    remaining: int | None = None
    hits: int = 0

    @classmethod
    def parse(cls, body: Any, platforms: Mapping[str, Emulator]) -> Fault:
        if not isinstance(body, dict):
            raise ValueError("body must be a JSON object")
        unknown = set(body) - FAULT_FIELDS
        if unknown:
            raise ValueError(f"unknown fault fields: {', '.join(sorted(unknown))}")
        fault = cls(**body)
        if fault.platform not in platforms:
            raise ValueError(f"platform must be one of {', '.join(platforms)}")
        if fault.mode not in FAULT_MODES:
            raise ValueError(f"mode must be one of {', '.join(FAULT_MODES)}")
        if not isinstance(fault.status, int) or not 400 <= fault.status <= 599:
            raise ValueError("status must be an HTTP error status (400-599)")
        for name in ("rate", "latency_ms", "retry_after"):
            value = getattr(fault, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ValueError(f"{name} must be a non-negative number")
        if fault.rate > 1:
            raise ValueError("rate must be between 0 and 1")
        if fault.times is not None and (isinstance(fault.times, bool) or not isinstance(fault.times, int)
                                        or fault.times < 1):
            raise ValueError("times must be a positive integer or null")
        if fault.match is not None and not isinstance(fault.match, str):
            raise ValueError("match must be a string or null")
        if fault.body_match is not None and not isinstance(fault.body_match, dict):
            raise ValueError("body_match must be an object (fields of the request body) or null")
        fault.remaining = fault.times
        return fault


def _parse_body(raw: bytes, content_type: str) -> tuple[Any, bool]:
    """(body, understood): JSON, a form (Slack accepts both), or text that only webhooks accept."""
    if not raw:
        return None, True
    kind = content_type.split(";")[0].strip().lower()
    text = raw.decode("utf-8", "replace")
    if kind == "application/x-www-form-urlencoded":
        return {k: v[-1] for k, v in parse_qs(text, keep_blank_values=True).items()}, True
    try:
        return json.loads(text), True
    except ValueError:
        return text, False


class Sandbox:
    """Everything but the socket: emulators, request log and faults, behind one lock."""

    def __init__(self, *, seed: int | None = None) -> None:
        self.lock = threading.Lock()
        # Requests held by latency or timeout faults wait on this; reset and stop set it to let them go.
        self._release = threading.Event()
        self._stopped = False
        self.emulators: dict[str, Emulator] = {platform: cls() for platform, cls in emulator_classes().items()}
        self._log: list[dict[str, Any]] = []
        self._seq = 0
        self._faults: dict[str, Fault] = {}
        self._random = random.Random(seed)

    # -- the platforms ------------------------------------------------------------------------------

    def handle(self, method: str, target: str, headers: Headers, raw: bytes) -> Reply:
        parts = urlsplit(target)
        raw_path = parts.path or "/"
        query = parse_qs(parts.query, keep_blank_values=True)
        if raw_path == "/_sandbox" or raw_path.startswith("/_sandbox/"):
            try:
                return self._control(method, raw_path, query, raw, headers.get("Host"))
            except Exception as exc:
                return Reply(500, {"error": "sandbox_internal_error", "message": repr(exc)})
        # Split before unquoting: an encoded "/" (a Sheets tab title, say) stays inside its segment.
        raw_segments = raw_path.split("/")[1:]
        if len(raw_segments) > 1 and raw_segments[-1] == "":
            raw_segments.pop()
        platform = unquote(raw_segments[0]) if raw_segments else ""
        path = unquote(raw_path)
        body, understood = _parse_body(raw, headers.get("Content-Type") or "")
        # Only the scheme is kept: tests can see a credential was sent without the log ever holding it.
        scheme = (headers.get("Authorization") or "").strip().partition(" ")[0] or None
        # Not a credential, and what a test needs to tie a request to its action (the effect key, issue 11).
        entry = self._received(platform, method, path, query, body, scheme, headers.get("Idempotency-Key"))
        try:
            reply = self._dispatch(entry, method, raw_segments[1:], query, headers, body, understood)
        except Exception as exc:
            reply = Reply(500, {"error": "sandbox_internal_error", "message": repr(exc)})
        self._answered(entry, reply)
        return reply

    def _received(self, platform: str, method: str, path: str, query: dict[str, list[str]],
                  body: Any, auth: str | None, idempotency_key: str | None = None) -> dict[str, Any]:
        shown = {k: v[0] if len(v) == 1 else v
                 for k, v in query.items() if k.lower() not in SECRET_QUERY_KEYS}
        with self.lock:
            self._seq += 1
            entry = {"seq": self._seq, "platform": platform, "method": method, "path": path, "query": shown,
                     "body": _copy(body), "auth": auth, "status": None, "response": None, "fault": None,
                     "applied": None, "answer": None, "replayed": False, "applied_at": None,
                     "idempotency_key": idempotency_key,
                     "started": time.time(), "finished": None}
            self._log.append(entry)
            del self._log[:-MAX_LOG]
        return entry

    def _answered(self, entry: dict[str, Any], reply: Reply) -> None:
        with self.lock:
            dropped = isinstance(reply, Dropped)
            entry["status"] = None if dropped else reply.status
            entry["response"] = None if dropped else _copy(reply.body)
            # "applied": the emulator acted on it (False: a fault or the auth check answered first);
            # "answer": "lost" when an applied_* fault kept the emulator's answer from the client.
            if entry["applied"] is None:
                entry["applied"] = False
            if entry["answer"] is None:
                entry["answer"] = "none" if dropped else "sent"
            entry["finished"] = time.time()

    def _dispatch(self, entry: dict[str, Any], method: str, raw_segments: list[str],
                  query: dict[str, list[str]], headers: Headers, body: Any,
                  understood: bool) -> Reply:
        platform = entry["platform"]
        emulator = self.emulators.get(platform)
        if emulator is None:
            return Reply(404, {"error": "not_found", "message": f"no sandbox platform {platform!r} "
                                                                f"(known: {', '.join(self.emulators)})"})
        fault = self._take_fault(platform, entry["path"], body)
        if fault is not None and fault.mode in APPLIED_MODES:
            with self.lock:
                entry["fault"] = fault.mode
            reply = self._emulate(entry, emulator, method, raw_segments, query, headers, body, understood)
            return self._lose_answer(entry, emulator, fault, reply)
        if fault is not None:
            with self.lock:
                entry["fault"] = fault.mode
            if fault.latency_ms:
                self._hold(fault.latency_ms / 1000)
            if fault.mode == "timeout":
                self._hold(TIMEOUT_FAULT_S)
                return emulator.error(504, "gateway_timeout", "injected timeout")
            if fault.mode == "error":
                return emulator.failure(fault.status)
            if fault.mode == "rate_limit":
                return emulator.rate_limited(fault.retry_after, fault.status if fault.status in (403, 429) else 429)
            if fault.mode == "auth":
                return emulator.unauthorized("invalid_auth")
        return self._emulate(entry, emulator, method, raw_segments, query, headers, body, understood)

    def _emulate(self, entry: dict[str, Any], emulator: Emulator, method: str, raw_segments: list[str],
                 query: dict[str, list[str]], headers: Headers, body: Any, understood: bool) -> Reply:
        """The platform's own handling: its auth check, then the emulator (which changes its state)."""
        if not understood and emulator.requires_auth:
            return emulator.error(400, "invalid_json", "the request body is not valid JSON")
        token = token_from_header(headers.get("Authorization"))
        if emulator.requires_auth and token is None:
            return emulator.unauthorized("not_authed")
        if emulator.requires_auth and token == "invalid":
            return emulator.unauthorized("invalid_auth")
        segments = [unquote(s) for s in raw_segments]
        call = Call(method=method, path="/" + "/".join(segments), segments=segments,
                    query={k: v[0] for k, v in query.items()}, body=body, headers=headers, token=token)
        with self.lock:
            entry["applied"] = True
            # When it took effect: a request the sandbox was slow to reach can take effect after the client
            # gave up on it, even after the lookup that followed (the window a lookup cannot close).
            entry["applied_at"] = time.time()
            try:
                reply = emulator.handle(call)
            except ApiError as exc:
                reply = exc.reply
            # An emulator that answered a repeated Idempotency-Key with its first answer (webhook) says so,
            # from the moment it did (an applied_* fault may hold that answer long after).
            entry["replayed"] = reply.headers.get("Idempotent-Replayed") == "true"
            return reply

    def _lose_answer(self, entry: dict[str, Any], emulator: Emulator, fault: Fault, reply: Reply) -> Reply:
        """The request has been applied (`reply` is the emulator's answer, kept in the log as `applied_status`
        and `applied_response`); now the client must not get it. The hold is on this request's own thread,
        outside the lock, so other requests go on meanwhile."""
        with self.lock:
            entry["answer"] = "lost"
            entry["applied_status"] = reply.status
            entry["applied_response"] = _copy(reply.body)
        if fault.mode == "applied_timeout":
            # Answered, but only after the client's read timeout: by then nobody reads it.
            self._hold(fault.latency_ms / 1000 if fault.latency_ms else APPLIED_TIMEOUT_DEFAULT_S)
            return reply
        if fault.latency_ms:
            self._hold(fault.latency_ms / 1000)
        if fault.mode == "applied_reset":
            return Dropped(0)
        # applied_502: a proxy in front of the platform gave up on its upstream, which had acted.
        return emulator.failure(502)

    def _hold(self, seconds: float) -> None:
        with self.lock:
            release = self._release
        release.wait(seconds)

    def release_held(self, *, stopping: bool = False) -> None:
        """Answers every request a fault is holding now; after a stop, holds end at once."""
        with self.lock:
            self._release.set()
            self._stopped = self._stopped or stopping
            if not self._stopped:
                self._release = threading.Event()

    def _take_fault(self, platform: str, path: str, body: Any = None) -> Fault | None:
        with self.lock:
            fault = self._faults.get(platform)
            if fault is None or (fault.match and fault.match not in path):
                return None
            if fault.body_match and not (isinstance(body, dict)
                                         and all(body.get(k) == v for k, v in fault.body_match.items())):
                return None
            if fault.rate < 1 and self._random.random() >= fault.rate:
                return None
            fault.hits += 1
            if fault.remaining is not None:
                fault.remaining -= 1
                if fault.remaining <= 0:
                    del self._faults[platform]
            return Fault(**asdict(fault))

    # -- control ------------------------------------------------------------------------------------

    def _control(self, method: str, path: str, query: dict[str, list[str]], raw: bytes,
                 host: str | None = None) -> Reply:
        platform = query.get("platform", [None])[0]
        if platform is not None and platform not in self.emulators:
            return Reply(400, {"error": "bad_request", "message": f"unknown platform {platform!r}"})
        resource = path.removeprefix("/_sandbox").rstrip("/")
        match method, resource:
            case "GET", "/health":
                return Reply(200, {"ok": True})
            case "GET", "/requests":
                return Reply(200, {"requests": self.requests(platform)})
            case "DELETE", "/requests":
                self.clear_requests()
                return Reply(200, {"ok": True})
            case "GET", "/state":
                return Reply(200, {"state": self.state(platform)})
            case "DELETE", "/state":
                self.reset()
                return Reply(200, {"ok": True})
            case "GET", "/faults":
                return Reply(200, {"faults": self.faults()})
            case "POST", "/faults":
                try:
                    body = json.loads(raw or b"null")
                    fault = self.add_fault(body)
                except (ValueError, TypeError) as exc:
                    return Reply(400, {"error": "bad_request", "message": f"invalid fault: {exc}"})
                return Reply(200, {"ok": True, "fault": fault})
            case "DELETE", "/faults":
                self.clear_faults(platform)
                return Reply(200, {"ok": True})
            case "POST", "/slack/click":
                return self._click(raw, host)
            case "POST", "/slack/respond":
                slack = self.emulators["slack"]
                assert isinstance(slack, SlackEmulator)
                with self.lock:
                    return slack.respond(query.get("channel", [""])[0], query.get("ts", [""])[0],
                                         json.loads(raw or b"null"))
        return Reply(404, {"error": "not_found", "message": f"no sandbox control endpoint {method} {path}"})

    def _click(self, raw: bytes, host: str | None) -> Reply:
        """A person clicking a button of a posted message: Slack's signed block_actions request is posted to
        `url` (the app's interactivity URL), signed with `signing_secret` (or a wrong one: `bad_signature`), at
        `timestamp` (default now). Answers what the app answered, and the request as sent (to replay it)."""
        try:
            spec = json.loads(raw or b"null")
            slack = self.emulators["slack"]
            assert isinstance(slack, SlackEmulator)
            with self.lock:
                message = dict(slack.messages[(spec["channel"], spec["ts"])])
            response_url = (f"http://{host or '127.0.0.1'}/_sandbox/slack/respond?"
                            f"{urlencode({'channel': spec['channel'], 'ts': spec['ts']})}")
            body = slack_form_body(slack_interaction(message, user_id=spec["user_id"],
                                                     action_id=spec.get("action_id", "opsq_approve"),
                                                     response_url=response_url))
            secret = "not-the-signing-secret" if spec.get("bad_signature") else spec["signing_secret"]
            headers = slack_signed(body, secret, int(spec.get("timestamp") or time.time()))
        except (ValueError, KeyError, TypeError) as exc:
            return Reply(400, {"error": "bad_request", "message": f"invalid click: {exc!r}"})
        # Outside the lock: the app answers through response_url, which this same sandbox serves.
        answer = httpx.post(spec["url"], content=body, headers=headers, timeout=30)
        return Reply(200, {"status": answer.status_code, "body": answer.text,
                           "sent": {"headers": headers, "body": body.decode()}})

    def requests(self, platform: str | None = None) -> list[dict[str, Any]]:
        with self.lock:
            log: list[dict[str, Any]] = _copy([e for e in self._log if platform is None or e["platform"] == platform])
        return log

    def clear_requests(self) -> None:
        with self.lock:
            self._log.clear()

    def state(self, platform: str | None = None) -> dict[str, Any]:
        with self.lock:
            state: dict[str, Any] = _copy({name: e.snapshot() for name, e in self.emulators.items()
                                           if platform is None or name == platform})
        return state

    def reset(self) -> None:
        with self.lock:
            for emulator in self.emulators.values():
                emulator.reset()
            self._faults.clear()
        # A request still held by an old fault would otherwise answer (and log) in the middle of a later test.
        self.release_held()

    def add_fault(self, spec: Any) -> dict[str, Any]:
        fault = Fault.parse(spec, self.emulators)
        with self.lock:
            self._faults[fault.platform] = fault
            return asdict(fault)

    def faults(self) -> list[dict[str, Any]]:
        with self.lock:
            return [asdict(f) for f in self._faults.values()]

    def clear_faults(self, platform: str | None = None) -> None:
        with self.lock:
            if platform is None:
                self._faults.clear()
            else:
                self._faults.pop(platform, None)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, so httpx's connection pool is exercised as in production
    server_version = "opsq-sandbox/0.1"
    sys_version = ""
    server: _HTTPServer

    def setup(self) -> None:
        super().setup()
        # Headers and body leave in two writes; with Nagle on, the client's delayed ACK adds ~40 ms to each.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.track(self.connection, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.track(self.connection, add=False)

    def _serve(self) -> None:
        started = time.monotonic()
        try:
            raw = self._read_body()
        except (ValueError, OSError):
            self.close_connection = True
            self._send(Reply(400, {"error": "bad_request", "message": "unreadable request body"}))
            return
        reply = self.server.sandbox.handle(self.command, self.path, self.headers, raw)
        if isinstance(reply, Dropped):
            self._drop()
            return
        self._send(reply)
        if self.server.verbose:
            elapsed = (time.monotonic() - started) * 1000
            path = self.path.split("?")[0]
            sys.stderr.write(f"{self.command} {path} -> {reply.status} ({elapsed:.0f} ms)\n")

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            chunks: list[bytes] = []
            total = 0
            while True:
                size = int(self.rfile.readline(1024).split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                total += size
                if total > MAX_BODY:
                    raise ValueError("body too large")
                chunks.append(self.rfile.read(size))
                self.rfile.readline(1024)
        length = int(self.headers.get("Content-Length") or 0)
        if length < 0 or length > MAX_BODY:
            raise ValueError("bad Content-Length")
        return self.rfile.read(length) if length else b""

    def _drop(self) -> None:
        """Closes the connection without a response, with a reset (SO_LINGER 0) as a crashed upstream or a
        killed proxy would: the client sees the connection end while it waits for the answer."""
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()

    def _send(self, reply: Reply) -> None:
        data = b"" if reply.status == 204 or reply.body is None else json.dumps(reply.body).encode()
        try:
            self.send_response(reply.status)
            if reply.status != 204:
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.end_headers()
            if data:
                self.wfile.write(data)
        except OSError:
            # The client gave up (its read timeout fired during a fault); nothing left to tell it.
            self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:
        # /_sandbox/requests is the access log; stderr lines would only clutter test output.
        pass


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    block_on_close = False

    def __init__(self, address: tuple[str, int], sandbox: Sandbox, verbose: bool) -> None:
        self.sandbox = sandbox
        self.verbose = verbose
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the host's FQDN, which can stall for seconds without DNS.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that died (a SIGKILLed worker) or dropped its connection resets it, often while it sat idle
        # in a keep-alive pool: nothing went wrong in the sandbox, so no traceback on stderr.
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)

    def track(self, conn: socket.socket, *, add: bool) -> None:
        with self._connections_lock:
            if add:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)

    def close_connections(self) -> None:
        """Ends idle keep-alive connections, whose handler threads would otherwise outlive the server."""
        with self._connections_lock:
            conns = list(self._connections)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)


class SandboxServer:
    """The sandbox on a background thread: `SandboxServer(port=0).start()`, then `.url` and `.stop()`."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, verbose: bool = False) -> None:
        self.sandbox = Sandbox()
        self._httpd = _HTTPServer((host, port), self.sandbox, verbose)
        self._thread: threading.Thread | None = None
        self._serving = False
        self._stopped = False

    @property
    def host(self) -> str:
        return str(self._httpd.server_address[0])

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> Self:
        if self._thread is None:
            self._thread = threading.Thread(target=self.serve_forever, name=f"opsq-sandbox:{self.port}",
                                            daemon=True)
            self._serving = True
            self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serves on the calling thread until stop() (from another thread) or KeyboardInterrupt."""
        self._serving = True
        self._httpd.serve_forever(poll_interval=0.05)

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        self.sandbox.release_held(stopping=True)
        if self._serving:
            self._httpd.shutdown()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._httpd.close_connections()
        self._httpd.server_close()

    def client(self) -> SandboxClient:
        return SandboxClient(self.url)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve_forever(host: str = "127.0.0.1", port: int = 8765, *, verbose: bool = False) -> None:
    """The `opsq sandbox` command: serve in the foreground until Ctrl-C."""
    server = SandboxServer(host, port, verbose=verbose)
    print(f"opsq sandbox listening on {server.url}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
