"""`make demo-load`: the demo's model scales on its queue, and you watch it.

Turns on the built-in autoscaler for the demo's model (short windows, so it is quick to
watch), serves an SGLang simulator at every leader, sends a burst of requests to the
leader, and prints the queue and the group count each second as the operator scales up,
the queue drains, and it scales back down. Run: `python -m tests.support.demo_load`.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import threading
import time
from typing import Any

from tests.support.rollout import routed_leader_ips, simulators
from tests.support.sglang_sim import send_load

AUTOSCALING = {
    "minReplicas": 1,
    "maxReplicas": 4,
    "targetQueuePerReplica": 4,
    "intervalSeconds": 2,
    "scaleDown": {"stabilizationWindowSeconds": 20, "maxGroupsPerStep": 1},
}


class Kubectl:
    """What tests.support.rollout needs of a cluster (pods as JSON), from a kubectl binary."""

    def __init__(self, binary: str, kubeconfig: str) -> None:
        self.base = [binary, "--kubeconfig", kubeconfig]

    def get_json(self, *args: str) -> Any:
        out = subprocess.run([*self.base, "get", *args, "-o", "json"], check=True,
                             capture_output=True, text=True).stdout  # fmt: skip
        return json.loads(out)

    def kubectl(self, *args: str, **_: Any) -> None:
        subprocess.run([*self.base, *args], check=True, capture_output=True, text=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kubectl", required=True)
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--namespace", default="mistral-demo")
    parser.add_argument("--model", default="mistral-small-4")
    parser.add_argument("--requests", type=int, default=16)
    args = parser.parse_args(argv)
    k = Kubectl(args.kubectl, args.kubeconfig)
    ns = ["-n", args.namespace]
    patch = json.dumps({"spec": {"autoscaling": AUTOSCALING}})
    k.kubectl("patch", "mm", args.model, *ns, "--type=merge", "-p", patch)
    print(f"autoscaling on: {json.dumps(AUTOSCALING)}")

    def status() -> dict[str, Any]:
        return dict(k.get_json("mm", args.model, *ns).get("status") or {})

    cluster: Any = k  # duck-typed: get_json is all the helpers use
    with simulators(cluster, args.namespace, service_time=1.5, max_running=1) as fleet:
        deadline = time.monotonic() + 30
        while not fleet.ips and time.monotonic() < deadline:
            time.sleep(0.5)
        leaders = routed_leader_ips(cluster, args.namespace)
        print(f"sending {args.requests} requests to {leaders[0]} (1 runs at a time, 1.5 s each)")
        url = f"http://{leaders[0]}:30000"
        load = (url, args.requests, args.requests, 120)
        burst = threading.Thread(target=send_load, args=load, daemon=True)
        burst.start()
        start = time.monotonic()
        seen_up = False
        while time.monotonic() - start < 180:
            s = status()
            scaling = s.get("autoscaling") or {}
            desired, ready = s.get("desiredReplicas"), s.get("readyReplicas")
            queue = scaling.get("queue", "?")
            print(f"{time.monotonic() - start:5.1f}s  queue {queue:>3}  groups desired "
                  f"{desired} ready {ready}  {scaling.get('message', '')}")  # fmt: skip
            seen_up = seen_up or (desired or 0) > 1
            if seen_up and desired == 1 and ready == 1:
                print("back to 1 group")
                break
            time.sleep(1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
