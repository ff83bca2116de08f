"""The deployment files stay consistent with the code and the config (Docker does not run here)."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import yaml

from finegate.core.config import PROJECT_ROOT, load_config
from finegate.flows.nightly import nightly, nightly_deployment

DEPLOY = PROJECT_ROOT / "deploy"


def compose() -> dict:
    return yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())


def test_compose_has_the_whole_stack_from_one_image() -> None:
    services = compose()["services"]
    assert set(services) == {"postgres", "prefect-server", "prefect-worker", "mlflow",
                             "dask-scheduler", "dask-worker-1", "dask-worker-2"}
    for name, service in services.items():
        if name != "postgres":
            assert service["build"]["dockerfile"] == "deploy/Dockerfile", name
            assert service["image"] == "finegate:latest", name
    assert services["prefect-server"]["ports"] == ["4200:4200"]
    assert services["mlflow"]["ports"] == ["5000:5000"]
    assert "8786:8786" in services["dask-scheduler"]["ports"]
    for worker in ("dask-worker-1", "dask-worker-2"):
        assert services[worker]["command"].startswith("dask worker tcp://dask-scheduler:8786")
        assert "lake:/data/lake" in services[worker]["volumes"]


def test_compose_databases_and_urls_agree() -> None:
    services = compose()["services"]
    created = set(re.findall(r"CREATE DATABASE (\w+);", (DEPLOY / "postgres-init.sql").read_text()))
    prefect_url = services["prefect-server"]["environment"]["PREFECT_API_DATABASE_CONNECTION_URL"]
    assert prefect_url.startswith("postgresql+asyncpg://") and prefect_url.endswith("/prefect")
    # the driver the image installs (psycopg2-binary), named: SQLAlchemy 2.1's default driver
    # for a bare postgresql:// is psycopg 3, which is not installed
    assert "postgresql+psycopg2://" in services["mlflow"]["command"]
    assert {"prefect", "mlflow"} <= created
    worker_env = services["prefect-worker"]["environment"]
    assert worker_env["PREFECT_API_URL"] == "http://prefect-server:4200/api"


def test_stack_config_points_at_the_compose_services() -> None:
    config = load_config(DEPLOY / "finegate.yaml", env={})
    services = compose()["services"]
    host, port = config.dask.scheduler_address.removeprefix("tcp://").split(":")
    assert host in services and f"{port}:{port}" in services[host]["ports"]
    host, port = config.tracking_uri().removeprefix("http://").split(":")
    assert host in services and f"{port}:{port}" in services[host]["ports"]
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert "COPY deploy/finegate.yaml /etc/finegate/finegate.yaml" in dockerfile
    assert services["prefect-worker"]["environment"]["FINEGATE_CONFIG"] == \
        "/etc/finegate/finegate.yaml"
    for package in ("finegate", "flows", "tasks", "expectations", "deploy"):
        assert f"COPY {package} ./{package}" in dockerfile


def test_prefect_yaml_deploys_the_nightly_flow_nightly_one_at_a_time() -> None:
    spec = yaml.safe_load((DEPLOY / "prefect.yaml").read_text())
    [deployment] = spec["deployments"]
    module, name = deployment["entrypoint"].split(":")  # the installed package's module
    assert getattr(importlib.import_module(module), name) is nightly
    assert deployment["concurrency_limit"]["limit"] == 1
    [schedule] = deployment["schedules"]
    stack = load_config(DEPLOY / "finegate.yaml", env={}).schedule
    assert (schedule["cron"], schedule["timezone"]) == (stack.cron, stack.timezone)
    env = deployment["work_pool"]["job_variables"]["env"]
    assert env["FINEGATE_CONFIG"] == "/etc/finegate/finegate.yaml"


def test_served_deployment_has_cron_timezone_and_concurrency_one(tmp_path: Path) -> None:
    deployment = nightly_deployment("30 1 * * *", "Europe/Paris")
    [schedule] = deployment.schedules
    assert schedule.schedule.cron == "30 1 * * *"
    assert schedule.schedule.timezone == "Europe/Paris"
    assert deployment.concurrency_limit == 1
    assert deployment.parameters == {}  # runs load their config (and secrets) themselves


def test_prefect_yaml_names_the_installed_prefect_version() -> None:
    import prefect

    spec = yaml.safe_load((DEPLOY / "prefect.yaml").read_text())
    assert spec["prefect-version"] == prefect.__version__, \
        "deploy/prefect.yaml's prefect-version differs from the installed Prefect: update it"
