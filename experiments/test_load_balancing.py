"""Requests through the front door spread evenly over every catalog pod.

kube-proxy picks a pod per connection. With a new connection per request,
from the client to Apache and from Apache to the catalog Service, every
request is an independent pick, so the counts per pod must pass a
chi-squared test against an even split. Each pod's own counter must agree,
request for request, with what the client saw in ``X-Served-By``.

With connections kept alive on both legs the picks are few and last long:
the spread is recorded to show the pinning, and not judged.
"""

import time

from harness import statistics
from harness.deploying import Shop, wait_for_answer, wait_until_served
from harness.plugin import ExperimentDraft, FrontDoor, HarnessOptions, Metrics, Traffic
from harness.scraping import Rise, rises
from harness.traffic import Connections, Load, TrafficResult

ITEM = "/catalog/<int:item_id>"
SETTINGS = "kube-harness-settings"
USERS = 8
#: Each user pauses up to this long between requests, which keeps the load
#: steady near 250 requests a second. Apache opens a new connection to the
#: catalog for every request, and each closed one holds its source port in
#: TIME_WAIT for a minute: well above about 450 a second, sustained, the front
#: door's pod runs out of ports and the figures measure that instead.
WAIT_S = 0.06
#: A bound on each measurement; the request count ends it much sooner.
RUN_TIME_S = 120.0


def _measure(
    connections: Connections,
    *,
    requests: int,
    traffic: Traffic,
    metrics: Metrics,
    experiment: ExperimentDraft,
) -> tuple[TrafficResult, list[Rise]]:
    before = metrics.scrape("catalog")
    start = time.time()
    result = traffic.run(
        Load(
            users=USERS,
            spawn_rate=USERS,
            run_time_s=RUN_TIME_S,
            scenario="catalog-item",
            connections=connections,
            max_requests=requests,
            wait_s=WAIT_S,
        )
    )
    after = metrics.scrape("catalog")
    experiment.add_series(connections, result, start=start)
    return result, rises(before, after)


def _counts(pod_rises: list[Rise]) -> dict[str, int]:
    return {r.pod: r.total(route=ITEM, method="GET") for r in pod_rises}


def test_requests_spread_evenly_over_the_catalog_pods_and_match_their_counters(
    experiment: ExperimentDraft,
    deployment: Shop,
    front_door: FrontDoor,
    traffic: Traffic,
    metrics: Metrics,
    harness_options: HarnessOptions,
) -> None:
    replicas = harness_options.catalog_replicas
    requests = harness_options.requests
    experiment.parameters.update(
        replicas=replicas,
        requests=requests,
        users=USERS,
        wait_s=WAIT_S,
        scenario="catalog-item",
        route=ITEM,
    )
    pods = deployment.scale(name="catalog", replicas=replicas)
    wait_until_served(front_door.url_of("/catalog/1"), pods=pods)

    # A new connection per request on both legs: the default settings.
    result, pod_rises = _measure(
        "new",
        requests=requests,
        traffic=traffic,
        metrics=metrics,
        experiment=experiment,
    )
    counts = experiment.tally(
        pod_rises, client_counts=result.per_pod, route=ITEM, method="GET"
    )
    spread = statistics.spread(counts)
    judgement = spread.judge()
    experiment.statistics["new"] = {
        **spread.as_dict(),
        "passed": judgement.passed,
        "reasons": list(judgement.reasons),
        "requests": result.requests,
        "failures": result.failures,
        "requests_per_second": result.requests_per_second,
    }

    assert result.requests == requests, result.output_tail
    assert result.failures == 0, result.output_tail
    assert not [r.pod for r in pod_rises if r.new_pod or r.restarted]
    assert sorted(counts) == pods
    assert all(count > 0 for count in counts.values()), counts
    assert set(result.per_pod) == set(pods)
    assert {pod: result.per_pod.get(pod, 0) for pod in pods} == counts
    assert judgement.passed, judgement.reasons

    # Kept-alive connections on both legs, to show how they pin requests.
    before = deployment.config_map_data(name=SETTINGS)
    try:
        deployment.patch_config_map(name=SETTINGS, data={"PROXY_REUSE": "on"})
        deployment.rollout_restart(name="apache")
        wait_for_answer(front_door.url_of("/catalog/1"))
        kept, kept_rises = _measure(
            "keepalive",
            requests=requests,
            traffic=traffic,
            metrics=metrics,
            experiment=experiment,
        )
    finally:
        deployment.patch_config_map(
            name=SETTINGS, data={"PROXY_REUSE": before["PROXY_REUSE"]}
        )
        deployment.rollout_restart(name="apache")
    kept_counts = _counts(kept_rises)
    kept_spread = statistics.spread(kept_counts)
    kept_judgement = kept_spread.judge()
    experiment.statistics["keepalive"] = {
        **kept_spread.as_dict(),
        "passed": kept_judgement.passed,
        "reasons": list(kept_judgement.reasons),
        "requests": kept.requests,
        "failures": kept.failures,
        "requests_per_second": kept.requests_per_second,
        "pods": [
            {
                "name": r.pod,
                "uid": r.uid,
                "delta": kept_counts[r.pod],
                "client_count": kept.per_pod.get(r.pod, 0),
            }
            for r in kept_rises
        ],
    }

    assert kept.requests == requests, kept.output_tail
    assert kept.failures == 0, kept.output_tail
    assert {pod: kept.per_pod.get(pod, 0) for pod in kept_counts} == kept_counts
