"""Serves a folder on 127.0.0.1 with HTTP range requests (as object stores do)."""

import functools
import http.server
import os
import re
import sys


class RangeHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def _range(self):
        path = self.translate_path(self.path)
        if not os.path.isfile(path):
            self.send_error(404)
            return None
        size = os.path.getsize(path)
        m = re.match(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
        start, end = (
            (int(m.group(1)), min(int(m.group(2) or size - 1), size - 1)) if m else (0, size - 1)
        )
        self.send_response(206 if m else 200)
        self.send_header("Content-Length", str(end - start + 1))
        self.send_header("Accept-Ranges", "bytes")
        if m:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.end_headers()
        return path, start, end

    def do_HEAD(self):
        self._range()

    def do_GET(self):
        found = self._range()
        if found:
            path, start, end = found
            with open(path, "rb") as f:
                f.seek(start)
                self.wfile.write(f.read(end - start + 1))


server = http.server.ThreadingHTTPServer(
    ("127.0.0.1", 0), functools.partial(RangeHandler, directory=sys.argv[1])
)
print(server.server_address[1], flush=True)
server.serve_forever()
