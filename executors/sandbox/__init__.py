"""A local emulator of the platforms' APIs with real state and injectable faults (see server.py)."""

from executors.sandbox.client import SandboxClient
from executors.sandbox.server import Sandbox, SandboxServer, serve_forever

__all__ = ["Sandbox", "SandboxClient", "SandboxServer", "serve_forever"]
