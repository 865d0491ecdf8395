"""``deploysim view``: browse the runs under a folder, on 127.0.0.1 only.

Run names are looked up, never joined from the URL; only loopback Host headers are answered (DNS rebinding
gets 403). Reports are built on request and cached until the run's verdicts change.
"""

from __future__ import annotations

import html
import threading
import urllib.parse
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import cast, Any

from deploysim.core.store import POINTS, VERDICTS

HOST = "127.0.0.1"
#: Host-header names this server answers to (DNS rebinding defence).
LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "::1"})


def host_allowed(header: str | None, port: int) -> bool:
    """Whether a request's Host header names this server: a loopback name, with this port or none."""
    if not header or any(c in header for c in "/?#@ \t"):
        return False
    try:
        parts = urllib.parse.urlsplit(f"//{header.strip()}")
        given = parts.port
    except ValueError:
        return False
    name = (parts.hostname or "").rstrip(".")
    return name in LOOPBACK_NAMES and given in (None, port)


def list_runs(runs_dir: Path) -> dict[str, Path]:
    """Run directories (with points and verdicts) directly under ``runs_dir``, or ``runs_dir`` itself."""
    runs_dir = Path(runs_dir)
    found: dict[str, Path] = {}
    candidates = [runs_dir, *sorted(p for p in runs_dir.iterdir() if p.is_dir())] if runs_dir.is_dir() else []
    for path in candidates:
        if POINTS.path(path).is_file() and VERDICTS.path(path).is_file():
            found[path.name] = path
    return found


def _index(runs: dict[str, Path]) -> str:
    items = "".join(
        f'<li><a href="/run/{urllib.parse.quote(name, safe="")}">{html.escape(name)}</a></li>' for name in runs)
    empty = "" if runs else "<p>No finished, graded runs here.</p>"
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>deploysim runs</title>"
        "<meta http-equiv='Content-Security-Policy' content=\"default-src 'none'; style-src 'unsafe-inline'\">"
        "<style>body{font:15px system-ui,sans-serif;margin:30px}li{margin:6px 0}</style></head><body>"
        f"<h1>deploysim runs</h1>{empty}<ul>{items}</ul></body></html>"
    )


def make_server(runs_dir: Path, port: int = 0) -> ThreadingHTTPServer:
    """A server bound to 127.0.0.1 (port 0 = any free port); call ``serve_forever`` on it."""
    from deploysim.evaluate.report.html import build_report

    cache: dict[str, tuple[float, bytes]] = {}
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
            return

        def _send(self, status: int, body: bytes, ctype: str = "text/html; charset=utf-8") -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("X-Content-Type-Options", "nosniff")
            self.send_header("Referrer-Policy", "no-referrer")
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:  # noqa: N802 - stdlib name
            if not host_allowed(self.headers.get("Host"), cast("tuple[str, int]", self.server.server_address)[1]):
                self._send(HTTPStatus.FORBIDDEN, b"<!doctype html><p>forbidden: unknown Host</p>")
                return
            runs = list_runs(runs_dir)
            path = urllib.parse.urlsplit(self.path).path
            if path == "/":
                self._send(HTTPStatus.OK, _index(runs).encode())
                return
            if path.startswith("/run/"):
                name = urllib.parse.unquote(path[len("/run/"):].rstrip("/"))
                run = runs.get(name)
                if run is not None:
                    mtime = VERDICTS.path(run).stat().st_mtime
                    with lock:
                        hit = cache.get(name)
                        if hit is None or hit[0] != mtime:
                            try:
                                body = build_report(run).encode()
                            except Exception as exc:  # a broken run must not take the viewer down
                                msg = f"<!doctype html><p>cannot build report: {html.escape(str(exc))}</p>"
                                self._send(HTTPStatus.INTERNAL_SERVER_ERROR, msg.encode())
                                return
                            hit = cache[name] = (mtime, body)
                    self._send(HTTPStatus.OK, hit[1])
                    return
            self._send(HTTPStatus.NOT_FOUND, b"<!doctype html><p>not found</p>")

    return ThreadingHTTPServer((HOST, port), Handler)
