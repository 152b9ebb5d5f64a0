"""Counting API writes from the local API server's audit log (see hack/audit-policy.yaml)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from tests.support.cluster import Cluster, hack_value

WRITE_VERBS = frozenset({"create", "update", "patch", "delete", "deletecollection"})


@dataclass
class AuditLog:
    path: Path
    offset: int = 0

    @classmethod
    def of(cls, cluster: Cluster) -> AuditLog:
        del cluster  # one local cluster: its log lives at a fixed place
        path = Path(hack_value("LOG_DIR")) / "audit.log"
        return cls(path, path.stat().st_size if path.exists() else 0)

    def mark(self) -> None:
        """Count only what is written after now."""
        self.offset = self.path.stat().st_size

    def writes(self, *, user: str, resource: str, namespace: str) -> list[str]:
        """`verb name` of each write by ``user`` to ``resource`` in ``namespace`` since the mark."""
        found = []
        with self.path.open("rb") as f:
            f.seek(self.offset)
            for line in f:
                event = json.loads(line)
                ref = event.get("objectRef") or {}
                if (
                    event.get("verb") in WRITE_VERBS
                    and event.get("user", {}).get("username") == user
                    and ref.get("resource") == resource
                    and ref.get("namespace") == namespace
                    and not ref.get("subresource")
                ):
                    found.append(f"{event['verb']} {ref.get('name', '')}")
        return found

    def requests(self, *, user: str, namespace: str | None = None) -> list[dict[str, str]]:
        """Every request by ``user`` since the mark (``namespace``: only those in it), as
        ``verb``, ``resource`` (with ``/subresource``), ``name`` and ``namespace``; the
        policy logs all of the operator's requests, reads included."""
        found = []
        seen: set[str] = set()  # a watch is logged as it starts and as it ends
        with self.path.open("rb") as f:
            f.seek(self.offset)
            for line in f:
                event = json.loads(line)
                ref = event.get("objectRef") or {}
                if event.get("user", {}).get("username") != user or event["auditID"] in seen:
                    continue
                seen.add(event["auditID"])
                if namespace is not None and ref.get("namespace") != namespace:
                    continue
                resource = ref.get("resource", "")
                if ref.get("subresource"):
                    resource += "/" + ref["subresource"]
                found.append(
                    {
                        "verb": str(event.get("verb", "")),
                        "resource": resource,
                        "name": str(ref.get("name", "")),
                        "namespace": str(ref.get("namespace", "")),
                    }
                )
        return found
