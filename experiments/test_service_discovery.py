"""Orders reach the catalog and the customer services by their Service names.

The order service knows its upstreams only as ``http://catalog:8080`` and
``http://customer:8080``: the cluster DNS resolves the names to the
Services, and kube-proxy picks a pod per connection. Every order placed
through the front door asks the customer service for the customer once
and the catalog once per distinct item, so the pods' own counters must
rise by exactly that much, and the catalog's calls must reach every one
of its pods.
"""

import random

from harness.deploying import Shop, wait_until_served
from harness.plugin import ExperimentDraft, FrontDoor, HarnessOptions, Metrics
from harness.scraping import rises

ORDERS = 60
ITEM = "/catalog/<int:item_id>"
CUSTOMER = "/customer/<int:customer_id>"
SETTINGS = "kube-harness-settings"
SEED = 20261203


def test_orders_reach_catalog_and_customer_through_their_service_names(
    experiment: ExperimentDraft,
    deployment: Shop,
    front_door: FrontDoor,
    metrics: Metrics,
    harness_options: HarnessOptions,
) -> None:
    replicas = max(2, harness_options.catalog_replicas)
    settings = deployment.config_map_data(name=SETTINGS)
    experiment.parameters.update(
        orders=ORDERS,
        catalog_replicas=replicas,
        catalog_url=settings["CATALOG_URL"],
        customer_url=settings["CUSTOMER_URL"],
    )
    pods = deployment.scale(name="catalog", replicas=replicas)
    wait_until_served(front_door.url_of("/catalog/1"), pods=pods)
    items = [int(item["id"]) for item in front_door.get("/catalog").json()]
    customers = [int(c["id"]) for c in front_door.get("/customer").json()]

    apps = ("catalog", "customer", "order")
    before = {app: metrics.scrape(app) for app in apps}
    picker = random.Random(SEED)
    statuses = []
    lines = 0
    for _ in range(ORDERS):
        chosen = picker.sample(items, k=picker.randint(1, 3))
        answer = front_door.post(
            "/order",
            {
                "customer_id": picker.choice(customers),
                "lines": [{"item_id": item, "count": 1} for item in chosen],
            },
        )
        statuses.append(answer.status)
        lines += len(chosen)
    after = {app: metrics.scrape(app) for app in apps}
    risen = {app: rises(before[app], after[app]) for app in apps}

    catalog = experiment.tally(risen["catalog"], route=ITEM, method="GET")
    customer = {r.pod: r.total(route=CUSTOMER, method="GET") for r in risen["customer"]}
    placed = {r.pod: r.total(route="/order", method="POST") for r in risen["order"]}
    experiment.statistics.update(
        order_lines=lines,
        catalog_calls=catalog,
        customer_calls=customer,
        orders_placed=placed,
        statuses={str(s): statuses.count(s) for s in sorted(set(statuses))},
    )

    assert settings["CATALOG_URL"] == "http://catalog:8080"
    assert settings["CUSTOMER_URL"] == "http://customer:8080"
    assert statuses == [201] * ORDERS
    assert sum(placed.values()) == ORDERS
    assert sum(customer.values()) == ORDERS
    assert sum(catalog.values()) == lines
    assert sorted(catalog) == pods
    assert all(calls > 0 for calls in catalog.values()), catalog
