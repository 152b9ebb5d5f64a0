"""Parse a cache-fill source string into where to read the files from.

Sources, as `spec.model.source` spells them:

- `hf://org/repo` or `hf://org/repo@rev`: the Hugging Face Hub at `HF_ENDPOINT`
  (default https://huggingface.co; a comma-separated list names mirrors to fail
  over to, in order).
- `https://mirror/prefix/org/repo` (or http://): a Hugging Face-compatible mirror
  serving the Hub's URL layout under `https://mirror/prefix`.
- `pvc://claim/path`: weights already on a claim the Job mounts at
  `<pvc-mount>/<claim>`; copied locally.
- an absolute directory path: a local directory copy (what tests use for pvc://).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import PurePosixPath

from mistral_operator.cachefill.errors import UsageError

DEFAULT_ENDPOINT = "https://huggingface.co"
DEFAULT_REVISION = "main"
_NAME = r"[A-Za-z0-9][-A-Za-z0-9_.]*"
_REPO = re.compile(rf"^{_NAME}/{_NAME}$")


@dataclass(frozen=True)
class HubSource:
    """A repository served under the Hub's URL layout by one or more endpoints."""

    repo: str
    endpoints: tuple[str, ...]
    revision: str


@dataclass(frozen=True)
class LocalSource:
    """A directory whose files are copied as they are."""

    root: str
    revision: str


Source = HubSource | LocalSource


def parse_endpoints(value: str | None) -> tuple[str, ...]:
    """`HF_ENDPOINT`: one URL or a comma-separated list, tried in order on failure."""
    endpoints = tuple(e.strip().rstrip("/") for e in (value or "").split(",") if e.strip())
    for endpoint in endpoints:
        if not endpoint.startswith(("http://", "https://")):
            raise UsageError(f"HF_ENDPOINT entry {endpoint!r} is not an http(s) URL")
    return endpoints or (DEFAULT_ENDPOINT,)


def _revision(from_source: str | None, from_flag: str | None) -> str:
    if from_source and from_flag and from_source != from_flag:
        raise UsageError(
            f"the source names revision {from_source!r} but --revision is {from_flag!r}"
        )
    return from_source or from_flag or DEFAULT_REVISION


def parse_source(
    source: str,
    revision: str | None,
    *,
    hf_endpoint: str | None = None,
    pvc_mount: str = "/mnt/source",
) -> Source:
    """The source to read, with the revision settled between the source and --revision."""
    if source.startswith("hf://"):
        repo, _, at = source.removeprefix("hf://").partition("@")
        if not _REPO.match(repo):
            raise UsageError(f"{source!r}: expected hf://<org>/<repo>[@<revision>]")
        return HubSource(repo, parse_endpoints(hf_endpoint), _revision(at or None, revision))
    if source.startswith(("https://", "http://")):
        scheme, _, rest = source.partition("://")
        parts = rest.rstrip("/").split("/")
        if len(parts) < 3 or not _REPO.match("/".join(parts[-2:])):
            raise UsageError(f"{source!r}: expected {scheme}://<mirror>[/<prefix>]/<org>/<repo>")
        endpoint = f"{scheme}://{'/'.join(parts[:-2])}"
        return HubSource("/".join(parts[-2:]), (endpoint,), _revision(None, revision))
    if source.startswith("pvc://"):
        claim, _, path = source.removeprefix("pvc://").partition("/")
        if not claim:
            raise UsageError(f"{source!r}: expected pvc://<claim>[/<path>]")
        root = PurePosixPath(pvc_mount) / claim / path.strip("/")
        return LocalSource(str(root), _revision(None, revision))
    if source.startswith("/"):
        return LocalSource(source, _revision(None, revision))
    raise UsageError(
        f"{source!r}: cachefill reads hf://, https:// mirror, pvc:// and local directory "
        "sources (s3:// is not built yet)"
    )
