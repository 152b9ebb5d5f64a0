"""The stub hub answers as the Hugging Face Hub does: revision API, resolve, Range, errors."""

from __future__ import annotations

import http.client
import json
import time
import urllib.error
import urllib.request
from urllib.parse import urlsplit

from tests.support.stub_hub import git_blob_sha1, run_stub_hub

FILES = {"w.safetensors": bytes(range(256)) * 40, "config.json": b'{"a": 1}\n'}


def call(
    url: str, *, method: str = "GET", headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status), dict(response.headers), bytes(response.read())
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def test_revision_api_and_resolve_headers() -> None:
    with run_stub_hub() as hub:
        repo = hub.add_repo("org/m", FILES)
        status, _, body = call(f"{hub.url}/api/models/org/m/revision/main?blobs=true")
        assert status == 200
        info = json.loads(body)
        assert info["sha"] == repo.commit
        by_name = {s["rfilename"]: s for s in info["siblings"]}
        assert by_name["w.safetensors"]["lfs"]["sha256"] == repo.files["w.safetensors"].sha256
        assert by_name["config.json"]["blobId"] == git_blob_sha1(FILES["config.json"])
        assert "lfs" not in by_name["config.json"]

        status, headers, body = call(
            f"{hub.url}/org/m/resolve/{repo.commit}/w.safetensors", method="HEAD"
        )
        assert status == 200
        assert body == b""
        assert headers["X-Linked-Etag"] == f'"{repo.files["w.safetensors"].sha256}"'
        assert (
            headers["X-Linked-Size"]
            == headers["Content-Length"]
            == str(len(FILES["w.safetensors"]))
        )
        assert headers["X-Repo-Commit"] == repo.commit
        _, headers, _ = call(f"{hub.url}/org/m/resolve/main/config.json", method="HEAD")
        assert headers["ETag"] == f'"{git_blob_sha1(FILES["config.json"])}"'
        assert "X-Linked-Etag" not in headers


def test_range_and_byte_counter() -> None:
    with run_stub_hub() as hub:
        hub.add_repo("org/m", FILES)
        url = f"{hub.url}/org/m/resolve/main/w.safetensors"
        status, headers, body = call(url, headers={"Range": "bytes=10000-"})
        assert status == 206
        assert body == FILES["w.safetensors"][10000:]
        assert headers["Content-Range"] == f"bytes 10000-10239/{len(FILES['w.safetensors'])}"
        assert call(url, headers={"Range": "bytes=999999-"})[0] == 416
        assert hub.served["org/m/w.safetensors"] == 240
        assert hub.bytes_served("org/m") == 240


def test_errors_as_the_hub_gives_them() -> None:
    with run_stub_hub(token="secret") as hub:
        hub.add_repo("org/m", FILES)
        url = f"{hub.url}/org/m/resolve/main/config.json"
        assert call(url)[0] == 401
        assert call(url, headers={"Authorization": "Bearer wrong"})[0] == 401
        assert call(url, headers={"Authorization": "Bearer secret"})[0] == 200
        auth = {"Authorization": "Bearer secret"}
        for path, code in [
            ("/org/other/resolve/main/x", "RepoNotFound"),
            ("/org/m/resolve/nope/config.json", "RevisionNotFound"),
            ("/org/m/resolve/main/missing.json", "EntryNotFound"),
        ]:
            status, headers, _ = call(hub.url + path, headers=auth)
            assert (status, headers["X-Error-Code"]) == (404, code)
        hub.fail_status = 503
        assert call(url, headers=auth)[0] == 503


def test_slow_mode_and_corruption() -> None:
    with run_stub_hub() as hub:
        hub.add_repo("org/m", FILES)
        hub.corrupt("org/m", "w.safetensors", offset=3)
        hub.rate = 40_000.0  # bytes per second
        started = time.monotonic()
        _, _, body = call(f"{hub.url}/org/m/resolve/main/w.safetensors")
        elapsed = time.monotonic() - started
        assert elapsed >= 0.2  # 10,240 bytes at 40 kB/s is a quarter of a second
        assert body[3] == FILES["w.safetensors"][3] ^ 0xFF
        assert body[:3] + body[4:] == FILES["w.safetensors"][:3] + FILES["w.safetensors"][4:]


def test_unkind_modes_of_the_real_hub() -> None:
    with run_stub_hub(token="secret") as hub:
        repo = hub.add_repo("org/m", FILES)
        auth = {"Authorization": "Bearer secret"}
        url = f"{hub.url}/org/m/resolve/main/w.safetensors"
        hub.ignore_range = True
        status, headers, body = call(url, headers={**auth, "Range": "bytes=10000-"})
        assert (status, body) == (200, FILES["w.safetensors"])
        assert headers["Accept-Ranges"] == "none"
        hub.ignore_range = False

        hub.cdn_redirect = True
        sha256 = repo.files["w.safetensors"].sha256
        conn = http.client.HTTPConnection(urlsplit(hub.url).netloc, timeout=5)
        conn.request("HEAD", "/org/m/resolve/main/w.safetensors", headers=auth)
        answer = conn.getresponse()
        conn.close()
        assert answer.status == 302
        assert answer.getheader("X-Linked-Size") == str(len(FILES["w.safetensors"]))
        cdn = f"http://localhost:{urlsplit(hub.url).port}/cdn/{sha256}"
        assert answer.getheader("Location") == cdn
        # urllib keeps the token across the redirect; the CDN refuses it, as S3 does.
        assert call(url, headers=auth)[0] == 400
        status, _, body = call(cdn, headers={"Range": "bytes=10000-"})
        assert (status, body) == (206, FILES["w.safetensors"][10000:])

        hub.listing_blobs = False
        _, _, body = call(f"{hub.url}/api/models/org/m/revision/main?blobs=true", headers=auth)
        assert all(set(s) == {"rfilename"} for s in json.loads(body)["siblings"])


def test_a_declared_size_is_listed_while_the_file_is_served_as_it_is() -> None:
    with run_stub_hub() as hub:
        repo = hub.add_repo("org/m", FILES)
        hub.declare_size("org/m", "w.safetensors", 2**50)
        _, _, body = call(f"{hub.url}/api/models/org/m/revision/main?blobs=true")
        by_name = {s["rfilename"]: s for s in json.loads(body)["siblings"]}
        assert by_name["w.safetensors"]["size"] == by_name["w.safetensors"]["lfs"]["size"] == 2**50
        assert by_name["config.json"]["size"] == len(FILES["config.json"])
        _, _, data = call(f"{hub.url}/org/m/resolve/{repo.commit}/w.safetensors")
        assert data == FILES["w.safetensors"]
