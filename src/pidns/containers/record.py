"""A container as pidns reports it: one record shape for ls, ps, which and the JSON output."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

_HEX = re.compile(r"[0-9a-f]{13,}")


@dataclass(frozen=True, slots=True)
class Container:
    runtime: str  # docker | podman | containerd | crio | cri | machine | lxc
    id: str  # the runtime's container id (machines and LXC: their name)
    name: str | None = None
    pod: str | None = None
    pod_namespace: str | None = None
    pod_uid: str | None = None
    sandbox: bool = False  # a pod's sandbox (pause) container; not part of the JSON

    def to_json(self) -> dict[str, Any]:
        return {
            "runtime": self.runtime,
            "id": self.id,
            "name": self.name,
            "pod": self.pod,
            "pod_namespace": self.pod_namespace,
            "pod_uid": self.pod_uid,
        }

    @property
    def short_id(self) -> str:
        """The id as runtimes print it: 12 characters of a long hex id, else whole."""
        return self.id[:12] if _HEX.fullmatch(self.id) else self.id

    @property
    def label(self) -> str:
        """`podman:web`, `docker:3f2a9c0e11aa`, `k8s:shop/cart-7f9/app`: a designator for it."""
        if self.pod is not None:
            where = f"{self.pod_namespace}/{self.pod}" if self.pod_namespace else self.pod
            inner = "" if self.sandbox or not self.name else f"/{self.name}"
            return f"k8s:{where}{inner}"
        return f"{self.runtime}:{self.name or self.short_id}"

    def matches(self, text: str) -> bool:
        """Whether `ps --container TEXT` selects it: its name, an id prefix, its label, or its
        pod's name."""
        return bool(text) and (
            text in (self.name, self.label, self.pod) or self.id.startswith(text)
        )
