"""The starter the tests run the system with leaves nothing running behind it."""

from pathlib import Path

from tests.services.service_processes import ServiceStarter, children


def _running(pid: int) -> bool:
    """Tell whether ``pid`` is a process that has not exited."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    # The state follows the ")" that ends the name; Z is exited, not yet reaped.
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_stopping_the_starter_ends_every_process_and_child_it_started(
    tmp_path: Path,
) -> None:
    starter = ServiceStarter(tmp_path)
    try:
        catalog = starter.start("catalog")
        front_door = starter.start_front_door(
            CATALOG_URL=catalog.base_url,
            CUSTOMER_URL=catalog.base_url,
            ORDER_URL=catalog.base_url,
        )
        workers = children(front_door.process.pid)
        with front_door.client() as client:
            served_by = client.get("/catalog/1").headers["X-Served-By"]
    finally:
        starter.stop_all()

    assert served_by == f"catalog-{catalog.port}"
    assert catalog.process.poll() == 0
    assert front_door.process.poll() is not None
    assert workers
    assert not [pid for pid in workers if _running(pid)]
    assert not front_door.log_path.exists()
