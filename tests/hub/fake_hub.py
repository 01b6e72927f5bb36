"""A stand-in for the few Hub endpoints `create_repo` + `upload_folder` call, on 127.0.0.1 only.

It records every request (method, path, JSON or NDJSON body) so a test can assert what a push sent, and answers:
repo creation, pre-upload (every file "regular", i.e. sent inline in the commit, so no LFS/Xet storage is needed)
and the commit itself. Anything else gets a 404 that the test can see in the record.
"""

from __future__ import annotations

import base64
import gzip
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

COMMIT_OID = "0123456789abcdef0123456789abcdef01234567"


def card_metadata_errors(content: str) -> list[str]:
    """What the Hub's YAML validation would refuse, as far as huggingface_hub can tell locally: front matter that
    does not parse, and a model-index that does not convert to eval results."""
    from huggingface_hub import ModelCard
    from huggingface_hub.repocard_data import model_index_to_eval_results

    try:
        card = ModelCard(content, ignore_metadata_errors=False)
        metadata = card.data.to_dict()
        if "model-index" in metadata:
            model_index_to_eval_results(metadata["model-index"])
    except Exception as error:  # any parse/validation failure is the error reported to the client
        return [f"{type(error).__name__}: {error}"]
    return []


class FakeHub:
    def __init__(self):
        self.requests: list[dict] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self.server.timeout = 5
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)

    def committed_files(self) -> dict[str, bytes]:
        """{path: content} of every file the recorded commits carried inline."""
        files = {}
        for request in self.requests:
            if "/commit/" in request["path"]:
                for line in request["body"]:
                    if line.get("key") == "file":
                        files[line["value"]["path"]] = base64.b64decode(line["value"]["content"])
        return files

    def _handler_class(self):
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep pytest output clean
                pass

            def _body(self):
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.headers.get("Content-Encoding") == "gzip":
                    raw = gzip.decompress(raw)
                text = raw.decode("utf-8") if raw else ""
                try:
                    return json.loads(text) if text else None
                except json.JSONDecodeError:  # the commit body is NDJSON: one JSON object per line
                    return [json.loads(line) for line in text.splitlines() if line.strip()]

            def _reply(self, status: int, payload: dict):
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _handle(self, method: str):
                body = self._body() if method == "POST" else None
                hub.requests.append({"method": method, "path": self.path, "body": body,
                                     "authorization": self.headers.get("Authorization")})
                if method == "POST" and self.path == "/api/repos/create":
                    repo = f"{body.get('organization') or 'user'}/{body['name']}" if "/" not in body["name"] else body["name"]
                    return self._reply(200, {"url": f"{hub.endpoint}/{repo}", "name": repo})
                if method == "POST" and self.path == "/api/validate-yaml":
                    errors = card_metadata_errors(body["content"])
                    return self._reply(400 if errors else 200, {"errors": [{"message": e} for e in errors], "warnings": []})
                if method == "POST" and re.match(r"^/api/models/[^/]+/[^/]+/preupload/", self.path):
                    files = [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in body["files"]]
                    return self._reply(200, {"files": files})
                if method == "POST" and re.match(r"^/api/models/[^/]+/[^/]+/commit/", self.path):
                    repo = "/".join(self.path.split("/")[3:5])
                    return self._reply(200, {"commitUrl": f"{hub.endpoint}/{repo}/commit/{COMMIT_OID}",
                                             "commitOid": COMMIT_OID, "pullRequestUrl": None})
                return self._reply(404, {"error": f"fake hub: no route for {method} {self.path}"})

            def do_GET(self):
                self._handle("GET")

            def do_POST(self):
                self._handle("POST")

            def do_HEAD(self):
                self._handle("HEAD")

        return Handler
