"""The catalog scales 1 → 3 → 5 → 2 under load without losing a request.

Each pod a scale-up adds must answer its first request soon after it is
Ready: the endpoint controller and kube-proxy have to put it into the
forwarding rules, which takes about a second. Scaling down must lose no
request: a pod that goes stops getting new connections before it stops.
"""

import time
from typing import Any

from harness import healing
from harness.deploying import Shop, wait_until_served
from harness.plugin import ExperimentDraft, FrontDoor, Metrics, Traffic
from harness.traffic import Load

STEPS = (1, 3, 5, 2)
USERS = 4
#: Each user pauses up to this long between requests: a steady load of about
#: 170 requests a second, well within what the front door sustains with a new
#: connection per request (see test_load_balancing.py).
WAIT_S = 0.04
#: A bound on the load run; it is stopped once the last step has settled.
RUN_TIME_S = 150.0
#: Seconds from Ready to a new pod's first answered request, at most.
MAX_FIRST_REQUEST_AFTER_READY_S = 10.0
#: Seconds of load kept up after the scale-down, to catch late failures.
AFTER_SCALE_DOWN_S = 2.0


def test_new_pods_serve_soon_after_ready_and_scaling_down_loses_no_request(
    experiment: ExperimentDraft,
    deployment: Shop,
    front_door: FrontDoor,
    traffic: Traffic,
    metrics: Metrics,
) -> None:
    experiment.parameters.update(
        steps=list(STEPS),
        users=USERS,
        wait_s=WAIT_S,
        scenario="catalog-item",
        max_first_request_after_ready_s=MAX_FIRST_REQUEST_AFTER_READY_S,
    )
    first = deployment.scale(name="catalog", replicas=STEPS[0])
    wait_until_served(front_door.url_of("/catalog/1"), pods=first)

    steps: list[dict[str, Any]] = []
    added: dict[str, str] = {}
    load = Load(
        users=USERS,
        spawn_rate=USERS,
        run_time_s=RUN_TIME_S,
        scenario="catalog-item",
        connections="new",
        max_failure_ratio=1.0,
        wait_s=WAIT_S,
    )
    start = time.time()
    with (
        healing.PodHistory(deployment, app="catalog") as history,
        traffic.start(load) as running,
    ):
        metrics.wait_for_rise("catalog", at_least=20)
        scale_down_at = None
        for replicas in STEPS[1:]:
            known = {p["metadata"]["uid"] for p in history.pods()}
            began = time.time()
            if replicas < len(known):
                scale_down_at = began
            names = deployment.scale(name="catalog", replicas=replicas)
            fresh = {
                p["metadata"]["name"]: p["metadata"]["uid"]
                for p in history.pods()
                if p["metadata"]["uid"] not in known
            }
            added.update(fresh)
            steps.append(
                {
                    "replicas": replicas,
                    "began": began,
                    "settled_s": time.time() - began,
                    "pods": names,
                }
            )
            if fresh:
                metrics.wait_for_rise(
                    "catalog",
                    pods=sorted(fresh),
                    timeout=MAX_FIRST_REQUEST_AFTER_READY_S,
                )
            else:
                time.sleep(AFTER_SCALE_DOWN_S)
        running.stop()
        result = running.wait()
        sightings = history.sightings()
    experiment.add_series("scaling", result, start=start)

    first_after_ready = {}
    for name, uid in added.items():
        ready = healing.ready_at(sightings, uid=uid)
        served = healing.first_served(result.records, pod=name)
        first_after_ready[name] = (
            None if ready is None or served is None else served - ready
        )
    lost_in_scale_down = [
        r
        for r in result.records
        if r.error is not None and scale_down_at is not None and r.t >= scale_down_at
    ]
    experiment.statistics.update(
        steps=steps,
        requests=result.requests,
        failures=result.failures,
        failed_after_scale_down=len(lost_in_scale_down),
        first_request_after_ready_s=first_after_ready,
    )

    assert [step["pods"] for step in steps][-1] == sorted(
        p["metadata"]["name"] for p in deployment.serving_pods("catalog")
    )
    assert [len(step["pods"]) for step in steps] == list(STEPS[1:])
    assert len(added) == STEPS[2] - STEPS[0]
    for name, seconds in first_after_ready.items():
        assert seconds is not None, f"pod {name} served nothing"
        assert seconds <= MAX_FIRST_REQUEST_AFTER_READY_S, (name, seconds)
    assert scale_down_at is not None
    assert lost_in_scale_down == []
