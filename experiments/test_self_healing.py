"""Catalog pods that are deleted under load come back, and serve again.

Pods are deleted one at a time while shoppers browse the catalog: first
with the grace period the pod's spec gives (the pod stops on its own
terms: readiness turns false, ``preStop`` waits for the endpoint to go,
in-flight requests finish), then forced with a grace period of 0. Each
replacement is timed from the watch on the pods, and its first answer is
found in the load's records.

Graceful deletions must lose no request. A forced deletion kills the
container while kube-proxy may still send it connections, so a few requests
may fail; at most 1 % of those sent during the forced deletions.
"""

import time

from harness import healing, statistics
from harness.deploying import (
    Raw,
    Shop,
    is_serving,
    name_of,
    parse_time,
    wait_until_served,
)
from harness.plugin import ExperimentDraft, FrontDoor, HarnessOptions, Metrics, Traffic
from harness.traffic import Load

KILLS_PER_MODE = 3
USERS = 4
#: Each user pauses up to this long between requests: a steady load of about
#: 170 requests a second, well within what the front door sustains with a new
#: connection per request (see test_load_balancing.py).
WAIT_S = 0.04
#: A bound on each load run; the run is stopped once its kills are done.
RUN_TIME_S = 150.0
#: The share of requests that may fail while pods are killed with grace 0.
MAX_FORCED_FAILURE_RATIO = 0.01
MODES: tuple[tuple[str, int | None], ...] = (("graceful", None), ("forced", 0))


def _oldest_serving(pods: list[Raw]) -> Raw:
    serving = [p for p in pods if is_serving(p)]
    return min(
        serving,
        key=lambda p: (parse_time(p["metadata"]["creationTimestamp"]), name_of(p)),
    )


def test_killed_catalog_pods_are_replaced_and_serve_again(
    experiment: ExperimentDraft,
    deployment: Shop,
    front_door: FrontDoor,
    traffic: Traffic,
    metrics: Metrics,
    harness_options: HarnessOptions,
) -> None:
    replicas = max(2, harness_options.catalog_replicas)
    experiment.parameters.update(
        replicas=replicas,
        kills_per_mode=KILLS_PER_MODE,
        users=USERS,
        wait_s=WAIT_S,
        scenario="catalog",
        max_forced_failure_ratio=MAX_FORCED_FAILURE_RATIO,
    )
    pods = deployment.scale(name="catalog", replicas=replicas)
    wait_until_served(front_door.url_of("/catalog/1"), pods=pods)

    outcomes = {}
    with healing.PodHistory(deployment, app="catalog") as history:
        for mode, grace in MODES:
            load = Load(
                users=USERS,
                spawn_rate=USERS,
                run_time_s=RUN_TIME_S,
                scenario="catalog",
                connections="new",
                max_failure_ratio=1.0,
                wait_s=WAIT_S,
            )
            replaced = []
            start = time.time()
            with traffic.start(load) as running:
                metrics.wait_for_rise("catalog", at_least=20)
                for _ in range(KILLS_PER_MODE):
                    victim = _oldest_serving(history.pods())
                    done = healing.kill(
                        deployment,
                        history,
                        pod=victim,
                        replicas=replicas,
                        grace_period_seconds=grace,
                    )
                    replaced.append(done)
                    if done.replacement is not None:
                        metrics.wait_for_rise(
                            "catalog", pods=[done.replacement], timeout=20.0
                        )
                running.stop()
                result = running.wait()
            experiment.add_series(mode, result, start=start)
            outcomes[mode] = (replaced, result)

            first_requests = []
            for done in replaced:
                first = (
                    None
                    if done.replacement is None
                    else healing.first_served(
                        result.records, pod=done.replacement, after=done.killed_at
                    )
                )
                first_s = None if first is None else first - done.killed_at
                first_requests.append(first_s)
                experiment.kills.append(done.kill(first_request_s=first_s))
            ready = [d.ready_s for d in replaced if d.ready_s is not None]
            served = [s for s in first_requests if s is not None]
            experiment.statistics[mode] = {
                "requests": result.requests,
                "failures": result.failures,
                "failure_ratio": result.failures / max(1, result.requests),
                "ready_s": statistics.durations(ready).as_dict() if ready else None,
                "first_request_s": (
                    statistics.durations(served).as_dict() if served else None
                ),
                "replacements": {d.killed: d.replacement for d in replaced},
                "ready_lag_behind_api_s": [
                    d.ready_s - d.ready_by_api_s
                    for d in replaced
                    if d.ready_s is not None and d.ready_by_api_s is not None
                ],
            }
        final = history.pods()

    assert healing.serving_count(final) == replicas
    for mode, (replaced, result) in outcomes.items():
        assert len(replaced) == KILLS_PER_MODE
        for done in replaced:
            assert done.replacement is not None, f"{mode}: {done.killed} not replaced"
            assert done.ready_s is not None
            assert done.created_s is not None
            assert done.created_s <= done.ready_s
            # An event never arrives before the second the API stamped on it.
            assert done.ready_by_api_s is not None
            assert done.ready_s >= done.ready_by_api_s
            first = healing.first_served(
                result.records, pod=done.replacement, after=done.killed_at
            )
            assert first is not None, f"{mode}: {done.replacement} served nothing"
    graceful = outcomes["graceful"][1]
    assert graceful.failures == 0, [r for r in graceful.records if r.error is not None][
        :5
    ]
    forced = outcomes["forced"][1]
    assert forced.failures <= MAX_FORCED_FAILURE_RATIO * forced.requests, (
        forced.failures,
        forced.requests,
    )
