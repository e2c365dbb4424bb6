"""Serve a folder on loopback with the headers a page needs for WebAssembly threads (cross-origin isolation:
COOP ``same-origin`` + COEP ``require-corp``); what it serves may also be fetched from other origins (CORS and
CORP), so one instance can host a page and another the images it reads. The standard library only: the web
target copies this file into its folder as ``serve.py`` (``python serve.py [--port N]``), and ``srdeploy serve DIR``
runs it."""
from __future__ import annotations

import argparse
import functools
import http.server
import sys
import threading
from pathlib import Path

ISOLATION = {"Cross-Origin-Opener-Policy": "same-origin", "Cross-Origin-Embedder-Policy": "require-corp",
             "Cross-Origin-Resource-Policy": "cross-origin", "Access-Control-Allow-Origin": "*"}


class IsolatedHandler(http.server.SimpleHTTPRequestHandler):
    """Static files with ``ISOLATION`` headers, no caching, ``.mjs`` as JavaScript and ``.wasm`` as WebAssembly."""

    extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map, ".mjs": "text/javascript",
                      ".js": "text/javascript", ".wasm": "application/wasm", ".onnx": "application/octet-stream"}

    def end_headers(self) -> None:
        for key, value in ISOLATION.items():
            self.send_header(key, value)
        self.send_header("Cache-Control", "no-store")
        super().end_headers()

    def log_message(self, *args) -> None:  # quiet: a page fetches dozens of files
        pass


class _Server(http.server.ThreadingHTTPServer):
    allow_reuse_port = False  # a port another server holds is refused, not shared
    daemon_threads = True


def server(folder: str | Path, port: int = 0, host: str = "127.0.0.1") -> http.server.ThreadingHTTPServer:
    """A server of ``folder`` on ``host:port`` (0: a free port; ``server_address`` says which), not yet started."""
    if not Path(folder).is_dir():
        raise NotADirectoryError(f"{folder} is not a folder")
    return _Server((host, port), functools.partial(IsolatedHandler, directory=str(folder)))


def in_background(folder: str | Path, port: int = 0) -> tuple[http.server.ThreadingHTTPServer, str]:
    """``server`` started on a daemon thread; (the server, its base URL). ``shutdown()`` stops it."""
    httpd = server(folder, port)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd, f"http://{httpd.server_address[0]}:{httpd.server_address[1]}/"


def serve(folder: str | Path, port: int = 8000, announce: bool = True) -> None:
    """Serve ``folder`` until Ctrl-C, printing its URL while ``announce``; OSError where the port cannot be opened."""
    httpd = server(folder, port)
    if announce:
        print(f"serving {Path(folder).resolve()} at http://127.0.0.1:{httpd.server_address[1]}/ (Ctrl-C stops)", flush=True)
    with httpd:
        try:
            httpd.serve_forever()
        except KeyboardInterrupt:
            pass


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve this folder on loopback with the COOP/COEP headers that "
                                     "WebAssembly threads need.")
    parser.add_argument("folder", nargs="?", default=str(Path(__file__).resolve().parent))
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args(argv)
    try:
        serve(args.folder, args.port)
    except OSError as exc:
        raise SystemExit(f"error: {args.folder} cannot be served on port {args.port} ({exc.strerror or exc}): "
                         "choose another --port or folder") from None


if __name__ == "__main__":
    main(sys.argv[1:])
