"""Group events: one per reconcile for the groups it created or saw start serving."""

from __future__ import annotations

import copy

from mistral_operator.core.group_events import LISTED, groups_created, groups_serving
from mistral_operator.core.reconcile import plan_reconcile
from tests.unit.reconcile_fixtures import converge, example, observed


def test_one_group_reads_as_before() -> None:
    event = groups_created([("g0", ["n1", "n2"])], "created", "abc")
    assert (event.type, event.reason) == ("Normal", "GroupCreated")
    assert event.message == "group g0 created on nodes n1, n2 (revision abc)"
    assert groups_serving([("g3", ["n4"])]).message == "group g3 is ready and serving on n4"


def test_several_groups_are_one_event_naming_each_with_its_nodes() -> None:
    event = groups_created([("g0", ["n1"]), ("g1", ["n2", "n3"])], "recreated", "abc")
    assert event.message == "2 groups recreated (revision abc): g0 on n1; g1 on n2, n3"
    serving = groups_serving([("g0", ["n1"]), ("g1", ["n2"])])
    assert serving.message == "2 groups are ready and serving: g0 on n1; g1 on n2"


def test_a_long_list_is_cut_and_counted() -> None:
    groups = [(f"g{i}", [f"n{i}"]) for i in range(LISTED + 5)]
    message = groups_created(groups, "created", "abc").message
    assert message.startswith(f"{LISTED + 5} groups created (revision abc): g0 on n0; ")
    assert message.endswith(f"g{LISTED - 1} on n{LISTED - 1}; and 5 more")


def test_a_reconcile_creating_or_serving_many_groups_posts_one_event_each_way() -> None:
    spec = copy.deepcopy(example("quickstart-h200.yaml")["spec"]) | {"replicas": 3}
    created = plan_reconcile(observed(spec))
    assert [e.reason for e in created.events] == ["GroupCreated"]
    assert created.events[0].message.startswith("3 groups created (revision ")
    # The next round sees the three running and ready: one GroupServing names them all.
    pods, status = converge(spec, rounds=1)
    served = plan_reconcile(observed(spec, pods=pods, status=status))
    (event,) = served.events
    assert event.reason == "GroupServing"
    assert event.message.startswith("3 groups are ready and serving: g0 on ")
    assert event.message.index("g1 on") < event.message.index("g2 on")
    pods, status = converge(spec, rounds=2)
    assert plan_reconcile(observed(spec, pods=pods, status=status)).events == []
