"""Tests of the replacement timelines, on pod histories recorded from a cluster.

``tests/data/healing/two-kills.jsonl`` holds every watch event of a
three-replica catalog while one pod was deleted with its grace period and
then another with a grace period of 0; ``two-kills.meta.json`` says which
pod each kill deleted, when, and which pods were there before it. The tests
marked ``cluster`` kill a pod on the embedded cluster ``local`` when it is up.
"""

import json
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness import clusters, deploying, healing
from harness.deploying import Shop
from harness.traffic import read_records

DATA = Path(__file__).parent / "data" / "healing"


def _history() -> list[healing.Sighting]:
    return healing.read_history(DATA / "two-kills.jsonl")


def _kills() -> list[dict[str, Any]]:
    loaded: list[dict[str, Any]] = json.loads(
        (DATA / "two-kills.meta.json").read_text()
    )
    return loaded


def _replacement(kill: dict[str, Any], history: list[healing.Sighting]) -> Any:
    return healing.replacement(
        history,
        killed_uid=kill["killed_uid"],
        killed_at=kill["killed_at"],
        grace=kill["grace"],
        known_uids=kill["known_uids"],
    )


@pytest.mark.parametrize(
    "index",
    [pytest.param(0, id="graceful"), pytest.param(1, id="forced")],
)
def test_the_replacement_is_the_first_new_pod_after_the_kill(index: int) -> None:
    history = _history()
    kill = _kills()[index]
    new_after_kill = [
        s
        for s in history
        if s.arrived_at >= kill["killed_at"] and s.uid not in kill["known_uids"]
    ]

    found = _replacement(kill, history)

    assert found.replacement == new_after_kill[0].name == kill["replacement"]
    assert found.created_s == new_after_kill[0].arrived_at - kill["killed_at"]
    assert found.killed == next(s.name for s in history if s.uid == kill["killed_uid"])


@pytest.mark.parametrize(
    "index",
    [pytest.param(0, id="graceful"), pytest.param(1, id="forced")],
)
def test_the_stages_of_a_replacement_come_in_their_order(index: int) -> None:
    found = _replacement(_kills()[index], _history())

    stages = [found.created_s, found.scheduled_s, found.running_s, found.ready_s]
    assert all(stage is not None for stage in stages)
    assert stages == sorted(stages)
    assert found.gone_s is not None


@pytest.mark.parametrize(
    "index",
    [pytest.param(0, id="graceful"), pytest.param(1, id="forced")],
)
def test_no_watch_event_arrives_before_the_second_the_api_stamped(index: int) -> None:
    found = _replacement(_kills()[index], _history())

    assert found.ready_by_api_s is not None
    assert found.created_by_api_s is not None
    assert found.ready_s >= found.ready_by_api_s
    assert found.created_s >= found.created_by_api_s
    # The API's stamps drop the fraction of a second, no more.
    assert found.created_by_api_s > -1.0


def test_a_kill_before_the_history_shows_its_replacement_has_no_stages() -> None:
    kill = _kills()[0]
    cut = [
        s
        for s in _history()
        if s.arrived_at < kill["killed_at"] or s.uid in kill["known_uids"]
    ]

    found = _replacement(kill, cut)

    assert found.replacement is None
    assert [found.created_s, found.scheduled_s, found.running_s, found.ready_s] == [
        None
    ] * 4


def test_the_second_kill_is_not_mistaken_for_the_first_ones_replacement() -> None:
    first, second = _kills()
    history = _history()

    one = _replacement(first, history)
    two = _replacement(second, history)

    assert one.replacement_uid in second["known_uids"]
    assert two.replacement is not None
    assert two.replacement_uid not in second["known_uids"]
    assert two.replacement != one.replacement


def test_the_kill_record_keeps_the_stages_and_the_first_answer() -> None:
    kill = _kills()[1]
    found = _replacement(kill, _history())

    recorded = found.kill(first_request_s=2.5)

    assert recorded.pod == found.killed
    assert recorded.killed_at.timestamp() == pytest.approx(kill["killed_at"])
    assert recorded.ready_s == found.ready_s
    assert recorded.grace == 0
    assert recorded.first_request_s == 2.5


def test_the_first_answer_of_a_pod_is_found_in_the_load_records() -> None:
    records = read_records(DATA / "requests.jsonl")
    pods = sorted({r.served_by for r in records if r.served_by})
    pod = pods[-1]
    middle = records[len(records) // 2].t

    first = healing.first_served(records, pod=pod)
    later = healing.first_served(records, pod=pod, after=middle)

    assert first == min(r.t for r in records if r.served_by == pod)
    assert later is None or later >= middle
    assert healing.first_served(records, pod="catalog-nobody") is None


# On the embedded cluster.


@pytest.fixture
def shop() -> Iterator[Shop]:
    from harness.cluster import local
    from harness.cluster.settings import ClusterSettings

    settings = ClusterSettings()
    if not local.status(settings).healthy:
        pytest.skip("cluster local is not up: `harness cluster up` to run these")
    target = clusters.Target(
        kind="local", kubeconfig=settings.layout.admin_kubeconfig, started=False
    )
    api = clusters.api_client(target)
    shop = Shop(api, namespace=f"harness-test-{secrets.token_hex(3)}")
    shop.create_namespace()
    try:
        manifests = [
            m
            for m in deploying.read_manifests()
            if m["metadata"]["name"] in ("kube-harness-settings", "catalog")
        ]
        shop.apply(manifests)
        shop.wait_for_rollouts(["catalog"])
        yield shop
    finally:
        shop.delete_namespace()
        api.close()  # type: ignore[no-untyped-call]


@pytest.mark.cluster
@pytest.mark.parametrize(
    "grace", [pytest.param(None, id="graceful"), pytest.param(0, id="forced")]
)
def test_a_killed_pod_is_replaced_and_its_replacement_timed(
    shop: Shop, grace: int | None
) -> None:
    with healing.PodHistory(shop, app="catalog") as history:
        victim = shop.serving_pods("catalog")[0]

        found = healing.kill(
            shop, history, pod=victim, replicas=2, grace_period_seconds=grace
        )
        pods = history.pods()

    assert found.killed == deploying.name_of(victim)
    assert found.replacement in {deploying.name_of(p) for p in pods}
    assert found.ready_s is not None
    assert found.gone_s is not None
    assert healing.serving_count(pods) == 2
    assert found.killed not in {deploying.name_of(p) for p in pods}
