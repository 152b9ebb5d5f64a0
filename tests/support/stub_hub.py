"""A stub Hugging Face Hub on 127.0.0.1 serving files a test generates.

It answers the URLs huggingface_hub (and `mistral-operator cachefill`) use:

- `GET /api/models/{org}/{repo}/revision/{rev}[?blobs=true]`: `sha` and `siblings`
  (with `size`, `blobId` and `lfs` when `blobs=true`);
- `HEAD` and `GET /{org}/{repo}/resolve/{rev}/{path}`: `X-Repo-Commit`, `ETag`
  (git blob sha1, or the sha256 for LFS files), `X-Linked-Etag` and
  `X-Linked-Size` for LFS files, `Content-Length`, `Accept-Ranges`, and `Range:
  bytes=a-[b]` answered with 206.

Errors as the Hub gives them: 401 when a token is required and missing or wrong,
404 with `X-Error-Code` (RepoNotFound, RevisionNotFound, EntryNotFound), and any
status for every request while `fail_status` is set (503 for failover tests).
`rate` (bytes per second, shared by all responses) slows file bodies down, and
`served` counts the body bytes written per file, for resume tests. `corrupt`
flips a byte of what is served while the declared hashes stay those of the
true file. `declare_size` lists a file bigger than it is (for a disk too small).

Knobs for what the real Hub (or a mirror) does that a kind stub would not:

- `cdn_redirect`: resolve answers LFS files with a 302 to `/cdn/<sha256>` on
  another host name (`localhost`, same port), as the Hub redirects to its CDN;
  like a presigned CDN URL, `/cdn/` refuses a request that carries a token (400).
- `ignore_range`: file bodies are sent whole with 200 whatever `Range` asks for.
- `listing_blobs = False`: the revision API leaves out sizes and hashes even for
  `?blobs=true` (a mirror without it), so a filler must `HEAD` each file.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import json
import re
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

HOST = "127.0.0.1"
PIECE = 64 * 1024  # bytes per write; small enough that a slow body is smooth
_RANGE = re.compile(r"^bytes=(\d+)-(\d*)$")


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()


@dataclass
class StubFile:
    data: bytes
    lfs: bool
    sha256: str = field(init=False)
    blob_sha1: str = field(init=False)

    def __post_init__(self) -> None:
        self.sha256 = hashlib.sha256(self.data).hexdigest()
        self.blob_sha1 = git_blob_sha1(self.data)


@dataclass
class StubRepo:
    repo_id: str
    commit: str
    files: dict[str, StubFile]
    refs: dict[str, str]  # branch or tag name -> commit

    @property
    def total_bytes(self) -> int:
        return sum(len(f.data) for f in self.files.values())


class _Throttle:
    """A byte budget shared by every response: `rate` bytes per second in all.

    A piece sent at most `SLACK` seconds after its slot (a sleep that overslept, a
    busy CPU) starts from that slot, so the lateness is made up and a fast limit is
    met; after a longer pause the budget starts afresh, with no burst.
    """

    SLACK = 0.02

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._next = 0.0

    def wait(self, n: int, rate: float) -> None:
        with self._lock:
            now = time.monotonic()
            late = now - self._next
            start = self._next if 0 < late < self.SLACK else max(now, self._next)
            self._next = start + n / rate
        delay = self._next - time.monotonic()
        if delay > 0:
            time.sleep(delay)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        # A client killed mid-body (the resume tests do that) is expected, not news.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)  # type: ignore[arg-type]


class StubHub:
    """The hub's state; tests change `fail_status`, `rate`, `token` while it runs."""

    def __init__(self, *, token: str | None = None) -> None:
        self.repos: dict[str, StubRepo] = {}
        self.token = token
        self.fail_status: int | None = None
        self.rate: float | None = None
        self.cdn_redirect = False
        self.ignore_range = False
        self.listing_blobs = True
        self.served: collections.Counter[str] = collections.Counter()  # "repo/path" -> bytes
        self.requests: list[tuple[str, str]] = []
        self._corrupt: dict[str, int] = {}
        self._declared: dict[str, int] = {}
        self._lock = threading.Lock()
        self._throttle = _Throttle()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- setup --------------------------------------------------------------------

    def add_repo(
        self,
        repo_id: str,
        files: Mapping[str, bytes],
        *,
        refs: tuple[str, ...] = ("main",),
        lfs: tuple[str, ...] = (".safetensors", ".bin"),
    ) -> StubRepo:
        """Serve files under repo_id at a commit derived from their content."""
        stub_files = {p: StubFile(d, p.endswith(lfs)) for p, d in sorted(files.items())}
        commit = hashlib.sha1(
            json.dumps({p: f.sha256 for p, f in stub_files.items()}).encode(),
            usedforsecurity=False,
        ).hexdigest()
        repo = StubRepo(repo_id, commit, stub_files, dict.fromkeys(refs, commit))
        self.repos[repo_id] = repo
        return repo

    def heal(self, repo_id: str, path: str) -> None:
        """Serve path as it is again."""
        self._corrupt.pop(f"{repo_id}/{path}", None)

    def declare_size(self, repo_id: str, path: str, size: int) -> None:
        """List path with this size (a shard bigger than any test disk); served as it is."""
        self._declared[f"{repo_id}/{path}"] = size

    def listed_size(self, repo_id: str, path: str, actual: int) -> int:
        return self._declared.get(f"{repo_id}/{path}", actual)

    def corrupt(self, repo_id: str, path: str, offset: int = 0) -> None:
        """Serve path with the byte at offset flipped; its declared hashes stay the true ones."""
        self._corrupt[f"{repo_id}/{path}"] = offset

    # -- observation --------------------------------------------------------------

    def bytes_served(self, repo_id: str | None = None) -> int:
        with self._lock:
            return sum(
                n for k, n in self.served.items() if repo_id is None or k.startswith(repo_id + "/")
            )

    def count(self, key: str, n: int) -> None:
        with self._lock:
            self.served[key] += n

    # -- serving ------------------------------------------------------------------

    @property
    def url(self) -> str:
        assert self._server is not None, "start() the hub first"
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> StubHub:
        hub = self

        class Handler(_Handler):
            stub = hub

        self._server = _Server((HOST, 0), Handler)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},  # so stop() returns quickly
            name="stub-hub",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def throttle(self, n: int) -> None:
        rate = self.rate
        if rate:
            self._throttle.wait(n, rate)

    def body(self, repo: StubRepo, path: str) -> bytes:
        data = repo.files[path].data
        offset = self._corrupt.get(f"{repo.repo_id}/{path}")
        if offset is None or not data:
            return data
        flipped = bytearray(data)
        flipped[offset] ^= 0xFF
        return bytes(flipped)


class _Handler(BaseHTTPRequestHandler):
    stub: StubHub
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass  # the test's output stays readable; `stub.requests` keeps the record

    def do_GET(self) -> None:
        self._handle(head=False)

    def do_HEAD(self) -> None:
        self._handle(head=True)

    def _error(self, status: int, message: str, code: str = "") -> None:
        body = json.dumps({"error": message}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        if code:
            self.send_header("X-Error-Code", code)
        self.send_header("X-Error-Message", message)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _handle(self, *, head: bool) -> None:
        stub = self.stub
        url = urlsplit(self.path)
        path = url.path
        with stub._lock:
            stub.requests.append((self.command, self.path))
        if stub.fail_status is not None:
            self._error(stub.fail_status, "the stub hub is failing on purpose")
            return
        cdn = re.match(r"^/cdn/([0-9a-f]{64})$", path)
        if cdn:
            if self.headers.get("Authorization") is not None:
                self._error(400, "Only one auth mechanism allowed (a token reached the CDN)")
                return
            self._cdn(cdn[1], head=head)
            return
        if stub.token is not None and self.headers.get("Authorization") != f"Bearer {stub.token}":
            self._error(401, "Invalid credentials in Authorization header")
            return
        api = re.match(r"^/api/models/([^/]+/[^/]+)/revision/(.+)$", path)
        if api:
            self._revision(api[1], unquote(api[2]), blobs="blobs=true" in url.query, head=head)
            return
        resolve = re.match(r"^/([^/]+/[^/]+)/resolve/([^/]+)/(.+)$", path)
        if resolve:
            self._resolve(resolve[1], unquote(resolve[2]), unquote(resolve[3]), head=head)
            return
        self._error(404, f"no route for {path}")

    def _repo_at(self, repo_id: str, rev: str) -> StubRepo | None:
        repo = self.stub.repos.get(repo_id)
        if repo is None:
            self._error(404, f"Repository {repo_id} not found", "RepoNotFound")
            return None
        if rev != repo.commit and rev not in repo.refs:
            self._error(404, f"Invalid rev id: {rev}", "RevisionNotFound")
            return None
        return repo

    def _revision(self, repo_id: str, rev: str, *, blobs: bool, head: bool) -> None:
        repo = self._repo_at(repo_id, rev)
        if repo is None:
            return
        siblings = []
        for name, f in repo.files.items():
            sibling: dict[str, object] = {"rfilename": name}
            if blobs and self.stub.listing_blobs:
                size = self.stub.listed_size(repo_id, name, len(f.data))
                sibling["size"] = size
                sibling["blobId"] = f.blob_sha1
                if f.lfs:
                    sibling["lfs"] = {"sha256": f.sha256, "size": size, "pointerSize": 134}
            siblings.append(sibling)
        body = json.dumps(
            {"id": repo_id, "modelId": repo_id, "sha": repo.commit, "siblings": siblings}
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _resolve(self, repo_id: str, rev: str, name: str, *, head: bool) -> None:
        repo = self._repo_at(repo_id, rev)
        if repo is None:
            return
        f = repo.files.get(name)
        if f is None:
            self._error(404, f"Entry not found: {name}", "EntryNotFound")
            return
        if f.lfs and self.stub.cdn_redirect:
            # Another host name for the same server: a client must drop the token.
            port = urlsplit(self.stub.url).port
            self.send_response(302)
            self.send_header("X-Repo-Commit", repo.commit)
            self.send_header("ETag", f'"{f.sha256}"')
            self.send_header("X-Linked-Etag", f'"{f.sha256}"')
            self.send_header("X-Linked-Size", str(len(f.data)))
            self.send_header("Location", f"http://localhost:{port}/cdn/{f.sha256}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self._send_file(repo, name, head=head)

    def _cdn(self, sha256: str, *, head: bool) -> None:
        for repo in self.stub.repos.values():
            for name, f in repo.files.items():
                if f.lfs and f.sha256 == sha256:
                    self._send_file(repo, name, head=head)
                    return
        self._error(404, f"no object {sha256}")

    def _send_file(self, repo: StubRepo, name: str, *, head: bool) -> None:
        """The file's bytes (or those Range asks for) with the Hub's resolve headers."""
        f = repo.files[name]
        data = self.stub.body(repo, name)
        start, end = 0, len(data) - 1
        wanted = None if self.stub.ignore_range else self.headers.get("Range")
        status = 200
        if wanted:
            match = _RANGE.match(wanted.strip())
            if match is None or int(match[1]) >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            start = int(match[1])
            end = min(int(match[2]), end) if match[2] else end
            status = 206
        self.send_response(status)
        self.send_header("X-Repo-Commit", repo.commit)
        self.send_header("Accept-Ranges", "none" if self.stub.ignore_range else "bytes")
        self.send_header("Content-Type", "application/octet-stream")
        if f.lfs:
            self.send_header("ETag", f'"{f.sha256}"')
            self.send_header("X-Linked-Etag", f'"{f.sha256}"')
            self.send_header("X-Linked-Size", str(len(f.data)))
        else:
            self.send_header("ETag", f'"{f.blob_sha1}"')
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
        self.send_header("Content-Length", str(end - start + 1))
        self.end_headers()
        if head:
            return
        key = f"{repo.repo_id}/{name}"
        view = memoryview(data)[start : end + 1]
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            for i in range(0, len(view), PIECE):
                piece = view[i : i + PIECE]
                self.stub.throttle(len(piece))
                self.wfile.write(piece)
                self.stub.count(key, len(piece))


@contextlib.contextmanager
def run_stub_hub(*, token: str | None = None) -> Iterator[StubHub]:
    """A started stub hub, stopped when the block ends."""
    hub = StubHub(token=token).start()
    try:
        yield hub
    finally:
        hub.stop()
