"""The Hugging Face Hub's HTTP API, as huggingface_hub uses it, with mirror failover.

- `GET {endpoint}/api/models/{repo}/revision/{rev}?blobs=true` resolves the revision
  to a commit (`sha`) and lists its files (`siblings`, with `size`, `blobId` and
  `lfs.sha256` when the endpoint gives them).
- `HEAD {endpoint}/{repo}/resolve/{commit}/{path}` (not following the redirect to
  the CDN) gives what the listing left out: `X-Linked-Etag` (sha256 of an LFS
  file) or `ETag` (git blob sha1), `X-Linked-Size` or `Content-Length`.
- `GET` of the same URL with `Range: bytes=N-` fetches a file from byte N, and with
  `Range: bytes=N-M` one segment of a large file.

Each request goes to the endpoint that last worked; a connection error or a 5xx
moves on to the next endpoint, and after a round over all of them the request is
retried with exponential backoff. `Authorization: Bearer $HF_TOKEN` goes to the
endpoints only, never to the CDN a resolve URL redirects to.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import quote

import urllib3
from urllib3.exceptions import HTTPError as Urllib3Error

from mistral_operator import __version__
from mistral_operator.cachefill.errors import (
    FillError,
    RetryableError,
    SourceUnreachableError,
    status_error,
)
from mistral_operator.cachefill.layout import safe_relative
from mistral_operator.cachefill.remote import Revision
from mistral_operator.cachefill.sources import HubSource
from mistral_operator.cachefill.verify import FileSpec, spec_from_etag

log = logging.getLogger("mistral_operator.cachefill")
USER_AGENT = f"mistral-operator-cachefill/{__version__}"
Response = Any  # urllib3.BaseHTTPResponse; urllib3 is typed as Any in this project


def backoff(attempt: int, base: float) -> float:
    """Seconds to wait before retry round `attempt` (1-based): doubling, capped at 30 s."""
    return float(min(base * 2 ** (attempt - 1), 30.0))


class HubStream:
    def __init__(self, response: Response, start: int, what: str) -> None:
        self._response = response
        self.start = start
        self._what = what

    def read(self, n: int) -> bytes:
        try:
            # read1: whatever has arrived, up to n, so a kill loses little in flight.
            return bytes(self._response.read1(n))
        except Urllib3Error as exc:
            raise RetryableError(f"source unreachable: {self._what}: {exc}") from exc

    def close(self) -> None:
        self._response.release_conn()


class HubReader:
    def __init__(
        self,
        source: HubSource,
        token: str | None,
        *,
        retries: int = 4,
        retry_delay: float = 1.0,
        connect_timeout: float = 10.0,
        read_timeout: float = 60.0,
        pool_size: int = 8,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.source = source
        self.token = token
        self.retries = retries
        self.retry_delay = retry_delay
        self.sleep = sleep
        self.commit = ""  # set by resolve(); files are fetched by commit, not by branch
        self._preferred = 0
        self._lock = threading.Lock()
        headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
        self._pool = urllib3.PoolManager(
            num_pools=len(source.endpoints) + 4,
            maxsize=pool_size,
            headers=headers,
            timeout=urllib3.Timeout(connect=connect_timeout, read=read_timeout),
        )

    def close(self) -> None:
        self._pool.clear()

    # -- requests with failover -------------------------------------------------

    def _headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        headers = dict(extra or {})
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        return headers

    def request(
        self,
        method: str,
        path: str,
        *,
        what: str,
        headers: dict[str, str] | None = None,
        stream: bool = False,
        redirect: bool = True,
        path_in_repo: str | None = None,
    ) -> Response:
        """A response below 500 from the first endpoint that gives one; 4xx raise.

        `path_in_repo` names the file a request is for, carried by the error it raises.
        """
        endpoints = self.source.endpoints
        last = ""
        for attempt in range(self.retries + 1):
            if attempt:
                delay = backoff(attempt, self.retry_delay)
                log.warning("%s: retrying in %.1fs after: %s", what, delay, last)
                self.sleep(delay)
            with self._lock:
                first = self._preferred
            for step in range(len(endpoints)):
                index = (first + step) % len(endpoints)
                url = endpoints[index] + path
                retry = urllib3.Retry(
                    total=None,
                    connect=0,
                    read=0,
                    status=0,
                    other=0,
                    redirect=5 if redirect else 0,
                    raise_on_redirect=False,
                )
                try:
                    response = self._pool.request(
                        method,
                        url,
                        headers=self._headers(headers),
                        preload_content=not stream,
                        decode_content=False,
                        retries=retry,
                    )
                except Urllib3Error as exc:
                    last = f"{url}: {type(exc).__name__}: {exc}"
                    self._fail_over(index, last)
                    continue
                if response.status >= 500:
                    last = f"{url}: HTTP {response.status}"
                    response.drain_conn()
                    response.release_conn()
                    self._fail_over(index, last)
                    continue
                with self._lock:
                    self._preferred = index
                if response.status >= 400:
                    error = status_error(
                        response.status,
                        what,
                        token_sent=bool(self.token),
                        error_code=response.headers.get("X-Error-Code", ""),
                        path=path_in_repo,
                    )
                    response.drain_conn()
                    response.release_conn()
                    raise error
                return response
        raise SourceUnreachableError(
            f"source unreachable: {what} failed on {len(endpoints)} endpoint(s) after "
            f"{self.retries + 1} rounds; last: {last}"
        )

    def _fail_over(self, index: int, reason: str) -> None:
        endpoints = self.source.endpoints
        with self._lock:
            if self._preferred == index and len(endpoints) > 1:
                self._preferred = (index + 1) % len(endpoints)
                log.warning(
                    "failing over from %s to %s: %s",
                    endpoints[index],
                    endpoints[self._preferred],
                    reason,
                )

    # -- the API ----------------------------------------------------------------

    def _resolve_path(self, commit: str, path: str) -> str:
        return f"/{self.source.repo}/resolve/{commit}/{quote(path)}"

    def resolve(self) -> Revision:
        repo, rev = self.source.repo, self.source.revision
        what = f"{repo}@{rev}"
        response = self.request(
            "GET", f"/api/models/{repo}/revision/{quote(rev, safe='')}?blobs=true", what=what
        )
        try:
            info = json.loads(response.data)
            commit = str(info["sha"])
            siblings = list(info.get("siblings") or [])
        except (ValueError, KeyError, TypeError) as exc:
            raise FillError(f"unexpected revision API answer for {what}: {exc}") from exc
        specs: list[FileSpec | None] = [_sibling_spec(s) for s in siblings]
        missing = [i for i, s in enumerate(specs) if s is None]
        if missing:
            # The listing had no sizes or hashes: ask each file, as huggingface_hub does.
            with ThreadPoolExecutor(max_workers=8) as pool:
                heads = pool.map(
                    lambda i: self.head(commit, safe_relative(str(siblings[i]["rfilename"]))),
                    missing,
                )
                for i, spec in zip(missing, heads, strict=True):
                    specs[i] = spec
        self.commit = commit
        return Revision(commit, tuple(s for s in specs if s is not None))

    def head(self, commit: str, path: str) -> FileSpec:
        response = self.request(
            "HEAD",
            self._resolve_path(commit, path),
            what=f"{path}@{commit}",
            redirect=False,
            path_in_repo=path,
        )
        headers = response.headers
        size = headers.get("X-Linked-Size") or headers.get("Content-Length")
        etag = headers.get("X-Linked-Etag") or headers.get("ETag")
        if size is None:
            raise FillError(f"no size for {path}@{commit} in the resolve answer")
        return spec_from_etag(path, int(size), etag)

    def open(self, spec: FileSpec, offset: int, end: int | None = None) -> HubStream:
        headers = {}
        if end is not None and end < spec.size:
            headers["Range"] = f"bytes={offset}-{end - 1}"
        elif offset:
            headers["Range"] = f"bytes={offset}-"
        what = f"{spec.path}@{self.source.repo}"
        response = self.request(
            "GET",
            self._resolve_path(self.commit, spec.path),
            what=what,
            headers=headers,
            stream=True,
            path_in_repo=spec.path,
        )
        # 206: from the offset; 200: the server ignored Range, the file starts over.
        start = offset if response.status == 206 else 0
        return HubStream(response, start, what)


def _sibling_spec(sibling: dict[str, Any]) -> FileSpec | None:
    """A FileSpec from a `?blobs=true` sibling, or None when it lacks size or hash."""
    path = safe_relative(str(sibling["rfilename"]))
    lfs = sibling.get("lfs")
    if isinstance(lfs, dict) and lfs.get("sha256") and lfs.get("size") is not None:
        return FileSpec(path, int(lfs["size"]), sha256=str(lfs["sha256"]).lower())
    if sibling.get("size") is not None and sibling.get("blobId"):
        return FileSpec(path, int(sibling["size"]), git_sha1=str(sibling["blobId"]).lower())
    return None
