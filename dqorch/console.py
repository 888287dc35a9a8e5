"""The web console's static files (dqorch/ui/), served on the API port under /ui/, with
`GET /` sent there. The page reads only the public JSON API, like any client; this
module only hands out the files.

Rule 1: only the files in UI_FILES, read once, each with a Content-Security-Policy that
allows nothing but this origin (no inline script or style, no framing), so a job id or
payload with HTML in it can never run. The files hold no data: they are served
without a token (the page asks for one when the API answers 401).
"""
from __future__ import annotations

import os

UI_DIR = os.path.join(os.path.dirname(__file__), "ui")
UI_FILES = {"index.html": "text/html; charset=utf-8",
            "app.js": "text/javascript; charset=utf-8",
            "style.css": "text/css; charset=utf-8"}
PATHS = frozenset({"/", "/ui/"} | {f"/ui/{name}" for name in UI_FILES})
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")


def serve(app):
    """WSGI: the console's paths here, everything else to `app`."""
    cache: dict[str, bytes] = {}

    def console(environ, start_response):
        path = environ.get("PATH_INFO", "")
        if path not in PATHS or environ.get("REQUEST_METHOD") not in ("GET", "HEAD"):
            return app(environ, start_response)
        if path == "/":
            start_response("302 Found", [("Location", "/ui/"), ("Content-Length", "0")])
            return [b""]
        name = path[len("/ui/"):] or "index.html"
        body = cache.get(name)
        if body is None:
            try:
                with open(os.path.join(UI_DIR, name), "rb") as f:
                    body = cache[name] = f.read()
            except OSError:
                return app(environ, start_response)       # its JSON 404
        start_response("200 OK", [
            ("Content-Type", UI_FILES[name]), ("Content-Length", str(len(body))),
            ("Content-Security-Policy", CSP), ("X-Content-Type-Options", "nosniff"),
            ("Referrer-Policy", "no-referrer"), ("Cache-Control", "no-cache")])
        return [b"" if environ["REQUEST_METHOD"] == "HEAD" else body]
    return console
