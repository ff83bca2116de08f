"""The stack of ``docker-compose.yml`` on this host without Docker (``make stack``, and the test).

Everything is read from the deployment files, never repeated here: the services, their commands,
environment, ports, volumes and start order from ``docker-compose.yml``, the databases from
``postgres-init.sql``, the working directory from the ``Dockerfile``, the flow's config from
``finegate.yaml`` and the deployment from ``prefect.yaml``. Each service's command runs as a local
process on loopback, in one folder: container host names become ``127.0.0.1``, container paths
become folders under the stack's root (``/data/landing`` -> ``<root>/landing``, ``/opt/finegate``
-> this checkout), and ports stay as in the compose file or, for tests, become free ones.

Postgres is the one service that is an image, not a command: it runs from the PostgreSQL server
binaries on the PATH (``initdb``, ``postgres``). Postgres refuses to run as root, so as root its
processes run as the ``postgres`` system user, with a data folder that user owns.

Every process is started in its own process group and stopped by that id at the end.
"""

from __future__ import annotations

import contextlib
import copy
import os
import pwd
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import httpx
import yaml

DEPLOY = Path(__file__).resolve().parent
REPO = DEPLOY.parent
BIN = Path(sys.executable).parent
LOOPBACK = "127.0.0.1"
POSTGRES_PORT = 5432  # the image's port: the compose file names it only inside URLs
POSTGRES_BINARIES = ("initdb", "postgres")
# Local changes to the compose commands, for one small host: everything on loopback, and one
# MLflow web worker instead of four.
LOCAL_ARGS = {"mlflow": ["--workers", "1"], "dask-scheduler": ["--host", LOOPBACK]}
LOCAL_WORKER_ARGS = ["--host", LOOPBACK]
QUIET_ENV = {"HF_HUB_OFFLINE": "1", "GX_ANALYTICS_ENABLED": "false",
             "MLFLOW_ENABLE_TELEMETRY": "false", "DO_NOT_TRACK": "true",
             "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}


def compose() -> dict[str, Any]:
    """``docker-compose.yml``, with its anchors and merge keys resolved."""
    return yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())


def free_port() -> int:
    """A TCP port nothing listens on now."""
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def postgres_binary(name: str) -> str | None:
    """A PostgreSQL server binary: on the PATH, else where Debian's ``postgresql`` package puts
    it (``/usr/lib/postgresql/<version>/bin``, which is not on the PATH)."""
    found = shutil.which(name)
    if found is None:
        versions = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"),
                          key=lambda path: int(path.parts[-3]) if path.parts[-3].isdigit() else 0)
        found = str(versions[-1]) if versions else None
    return found


def missing_requirements() -> list[str]:
    """What this host lacks to run the stack: PostgreSQL server binaries, and as root the
    ``postgres`` system user (Postgres refuses to run as root)."""
    missing = [name for name in POSTGRES_BINARIES if postgres_binary(name) is None]
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            missing.append("the postgres system user (as root, Postgres runs as that user)")
    return missing


def wait_until(check: Callable[[], bool], what: str, timeout: float = 180,
               process: subprocess.Popen | None = None, log: Path | None = None) -> None:
    """Poll ``check`` until it is true; fail early, with the log's tail, if ``process`` died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            tail = log.read_text()[-3000:] if log and log.exists() else ""
            raise RuntimeError(f"{what} exited with code {process.returncode}:\n{tail}")
        try:
            if check():
                return
        except (httpx.HTTPError, OSError):
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{what} did not come up within {timeout:.0f} s (log: {log})")


def port_open(address: str) -> bool:
    host, port = address.rsplit("/", 1)[-1].rsplit(":", 1)
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex((host, int(port))) == 0


class Stack:
    """The compose stack as local processes under ``root``; ``ports="free"`` for tests."""

    def __init__(self, root: Path, *, ports: str = "compose",
                 config_overrides: Mapping[str, Any] | None = None,
                 env: Mapping[str, str] | None = None) -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.logs = self.root / "logs"
        self.logs.mkdir(exist_ok=True)
        self.spec = compose()
        self.services: dict[str, dict[str, Any]] = self.spec["services"]
        self.config_overrides = dict(config_overrides or {})
        self.extra_env = dict(env or {})
        self.processes: dict[str, subprocess.Popen] = {}
        self._pg_dir: Path | None = None
        self.dask_dashboard = ""  # the scheduler's dashboard link, once it answers
        self.port_map = {port: (free_port() if ports == "free" else port)
                         for port in self._compose_ports()}
        self.path_map = self._path_map()
        # service names, and localhost: the published ports as a browser on the host sees them
        self.hosts = set(self.services) | {"0.0.0.0", "localhost"}
        self.config_path = Path(self.localize(
            self.services["prefect-worker"]["environment"]["FINEGATE_CONFIG"]))
        for folder in ("landing", "lake"):
            Path(self.localize(f"/data/{folder}")).mkdir(parents=True, exist_ok=True)

    # -- container names -> this host ---------------------------------------------------------

    def _compose_ports(self) -> list[int]:
        ports = {POSTGRES_PORT}
        for service in self.services.values():
            ports |= {int(entry.split(":")[-1]) for entry in service.get("ports", [])}
        return sorted(ports)

    def _path_map(self) -> dict[str, str]:
        """Container path -> host path: named volumes, the image's working directory (this
        checkout) and the config file the image bakes in."""
        paths: dict[str, str] = {}
        for service in self.services.values():
            for volume in service.get("volumes", []):
                name, target = volume.split(":")[:2]
                if not name.startswith((".", "/")):  # a named volume, not a bind mount
                    paths[target] = str(self.root / name)
        workdir = re.search(r"^WORKDIR\s+(\S+)", (DEPLOY / "Dockerfile").read_text(), re.M)
        paths[workdir.group(1)] = str(REPO)
        config = self.services["prefect-worker"]["environment"]["FINEGATE_CONFIG"]
        paths[config] = str(self.root / "finegate.yaml")
        return paths

    def localize(self, text: str) -> str:
        """A compose string with ``${VAR:-default}`` expanded and container host names, ports
        and paths replaced by this host's."""
        text = re.sub(r"\$\{(\w+):-([^}]*)\}",
                      lambda m: os.environ.get(m.group(1), m.group(2)), text)
        hosts = "|".join(sorted(map(re.escape, self.hosts), key=len, reverse=True))
        text = re.sub(rf"(?<![\w.-])({hosts}):(\d+)",
                      lambda m: f"{LOOPBACK}:{self.port_map.get(int(m.group(2)), m.group(2))}",
                      text)
        text = re.sub(r"(?<![\w.])0\.0\.0\.0(?![\w.])", LOOPBACK, text)  # --host 0.0.0.0
        for container, host in sorted(self.path_map.items(), key=lambda kv: -len(kv[0])):
            text = re.sub(rf"(?<![\w/]){re.escape(container)}(?=/|\b|$)", host, text)
        return text

    def command(self, name: str) -> list[str]:
        """A service's compose command for this host (ports, hosts, executables)."""
        args = [self.localize(arg) for arg in shlex.split(self.services[name]["command"])]
        for i, arg in enumerate(args[:-1]):
            if arg == "--port" and int(args[i + 1]) in self.port_map:
                args[i + 1] = str(self.port_map[int(args[i + 1])])
            if arg == "--dashboard-address" and args[i + 1].startswith(":"):
                args[i + 1] = f"{LOOPBACK}:{self.port_map[int(args[i + 1][1:])]}"
        if (BIN / args[0]).exists():
            args[0] = str(BIN / args[0])
        extra = LOCAL_ARGS.get(name, LOCAL_WORKER_ARGS if args[1:2] == ["worker"]
                               and Path(args[0]).name == "dask" else [])
        return args + extra

    def environment(self, name: str) -> dict[str, str]:
        env = {**os.environ, **QUIET_ENV, "PREFECT_HOME": str(self.root / "prefect-home"),
               "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO),
                                                           os.environ.get("PYTHONPATH")]))}
        env.update({key: self.localize(str(value))
                    for key, value in (self.services[name].get("environment") or {}).items()})
        return {**env, **self.extra_env}

    # -- addresses ------------------------------------------------------------------------------

    @property
    def prefect_api(self) -> str:
        return self.environment("prefect-worker")["PREFECT_API_URL"]

    @property
    def prefect_ui(self) -> str:
        return self.prefect_api.removesuffix("/api")

    @property
    def mlflow_url(self) -> str:
        return self.flow_config()["mlflow_tracking_uri"]

    @property
    def dask_scheduler(self) -> str:
        return self.flow_config()["dask"]["scheduler_address"]

    @property
    def landing(self) -> Path:
        return Path(self.flow_config()["landing_path"])

    @property
    def lake(self) -> Path:
        return Path(self.flow_config()["lake_path"])

    def flow_config(self) -> dict[str, Any]:
        """``finegate.yaml`` for this host, with the overrides given (tests: a tiny model)."""
        config = yaml.safe_load(self.localize((DEPLOY / "finegate.yaml").read_text()))
        return deep_merge(config, self.config_overrides)

    # -- processes ------------------------------------------------------------------------------

    def spawn(self, name: str, args: list[str], env: Mapping[str, str] | None = None,
              user: str | None = None) -> subprocess.Popen:
        log = self.logs / f"{name}.log"
        process = subprocess.Popen(args, stdout=log.open("w"), stderr=subprocess.STDOUT,
                                   env=dict(env or os.environ), cwd=REPO if user is None else "/",
                                   start_new_session=True, **_as_user(user))
        self.processes[name] = process
        return process

    def start(self) -> Stack:
        """Start the services in the order of the compose file's ``depends_on`` (Postgres; the
        servers, together; the Dask workers; the Prefect worker) and wait until each answers."""
        try:
            self._start_postgres()
            for name in ("prefect-server", "mlflow", "dask-scheduler"):
                self.spawn(name, self.command(name), self.environment(name))
            wait_until(lambda: port_open(self.dask_scheduler), "dask scheduler", 120,
                       self.processes["dask-scheduler"], self.logs / "dask-scheduler.log")
            workers = [name for name, service in self.services.items()
                       if "dask-scheduler" in service.get("depends_on", [])
                       and name != "prefect-worker"]
            for name in workers:
                self.spawn(name, self.command(name), self.environment(name))
            self._wait(f"{self.prefect_api}/health", "prefect-server")
            self._wait(f"{self.mlflow_url}/health", "mlflow")
            self.config_path.write_text(yaml.safe_dump(self.flow_config(), sort_keys=False))
            self.spawn("prefect-worker", self.command("prefect-worker"),
                       self.environment("prefect-worker"))
            pool = self.command("prefect-worker")[self.command("prefect-worker").index("--pool")
                                                  + 1]
            wait_until(lambda: httpx.get(f"{self.prefect_api}/work_pools/{pool}").status_code
                       == 200, "prefect worker's pool", 120, self.processes["prefect-worker"],
                       self.logs / "prefect-worker.log")
            self._wait_dask_workers(len(workers))
        except BaseException:
            self.stop()
            raise
        return self

    def _start_postgres(self) -> None:
        """initdb + postgres as the ``postgres`` user when root; user, password and databases
        from the compose file and ``postgres-init.sql``."""
        service = self.services["postgres"]
        user = self.localize(service["environment"]["POSTGRES_USER"])
        password = self.localize(service["environment"]["POSTGRES_PASSWORD"])
        run_as = "postgres" if os.geteuid() == 0 else None
        # as root, a folder of its own that the postgres user owns and can reach
        self._pg_dir = Path(tempfile.mkdtemp(prefix="finegate-pg-")) if run_as else \
            self.root / "postgres"
        self._pg_dir.mkdir(exist_ok=True)
        (self._pg_dir / "password").write_text(password + "\n")
        if run_as:
            owner = pwd.getpwnam(run_as)
            for path in (self._pg_dir, self._pg_dir / "password"):
                os.chown(path, owner.pw_uid, owner.pw_gid)
        data = self._pg_dir / "data"
        subprocess.run([postgres_binary("initdb"), "-D", str(data), "-U", user, "-E", "UTF8",
                        "--auth=scram-sha-256", f"--pwfile={self._pg_dir / 'password'}",
                        "--no-sync"], check=True, capture_output=True, cwd="/",
                       **_as_user(run_as))
        port = self.port_map[POSTGRES_PORT]
        process = self.spawn("postgres", [postgres_binary("postgres"), "-D", str(data), "-p",
                                          str(port), "-h", LOOPBACK, "-k", str(self._pg_dir)],
                             user=run_as)
        import psycopg2

        def connect():
            return psycopg2.connect(host=LOOPBACK, port=port, user=user, password=password,
                                    dbname="postgres")

        def ready() -> bool:
            try:
                connect().close()
            except psycopg2.OperationalError:  # not accepting connections yet
                return False
            return True

        wait_until(ready, "postgres", 60, process, self.logs / "postgres.log")
        init = next(v.split(":")[0] for v in service["volumes"] if v.endswith(".sql:ro"))
        connection = connect()
        connection.autocommit = True  # CREATE DATABASE cannot run in a transaction
        with connection.cursor() as cursor:
            for statement in filter(None, (s.strip() for s in re.sub(
                    r"--[^\n]*", "", (DEPLOY / init).read_text()).split(";"))):
                cursor.execute(statement)
        connection.close()

    def _wait(self, url: str, name: str) -> None:
        wait_until(lambda: httpx.get(url, timeout=5).status_code == 200, name, 240,
                   self.processes[name], self.logs / f"{name}.log")

    def _wait_dask_workers(self, count: int) -> None:
        from distributed import Client

        with Client(self.dask_scheduler, timeout=60) as client:
            client.wait_for_workers(count, timeout=120)
            self.dask_dashboard = client.dashboard_link

    def stop(self, grace: float = 15) -> None:
        """Stop every process this stack started, newest first, by its process group id:
        SIGTERM (Postgres: SIGINT, its fast shutdown), SIGKILL after ``grace`` seconds; what
        the group still holds (flow runs, web workers) goes with it."""
        for name, process in reversed(list(self.processes.items())):
            began = time.monotonic()
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGINT if name == "postgres" else signal.SIGTERM)
            try:
                process.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
            with (self.logs / "stop.log").open("a") as log:
                log.write(f"{name} (pid {process.pid}) stopped in "
                          f"{time.monotonic() - began:.1f} s, exit code {process.returncode}\n")
        if self._pg_dir is not None and self._pg_dir != self.root / "postgres":
            shutil.rmtree(self._pg_dir, ignore_errors=True)

    # -- the deployment ------------------------------------------------------------------------

    def prefect(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        """The ``prefect`` CLI against this stack's server."""
        result = subprocess.run([str(BIN / "prefect"), "--no-prompt", *args], cwd=REPO,
                                env=self.environment("prefect-worker"), capture_output=True,
                                text=True, timeout=timeout)
        if result.returncode:
            raise RuntimeError(f"prefect {' '.join(args)} failed:\n{result.stdout[-3000:]}"
                               f"\n{result.stderr[-3000:]}")
        return result

    def deploy(self) -> str:
        """``prefect deploy --prefect-file deploy/prefect.yaml --all``, with its container paths
        made this host's; returns the deployment's name (flow/deployment)."""
        spec = yaml.safe_load(self.localize((DEPLOY / "prefect.yaml").read_text()))
        prefect_file = self.root / "prefect.yaml"
        prefect_file.write_text(yaml.safe_dump(spec, sort_keys=False))
        self.prefect("deploy", "--prefect-file", str(prefect_file), "--all")
        [deployment] = spec["deployments"]
        flow = httpx.post(f"{self.prefect_api}/deployments/filter", json={
            "deployments": {"name": {"any_": [deployment["name"]]}}}).json()[0]["flow_id"]
        flow_name = httpx.get(f"{self.prefect_api}/flows/{flow}").json()["name"]
        return f"{flow_name}/{deployment['name']}"

    def trigger(self, deployment: str) -> str:
        """``prefect deployment run``; returns the new flow run's id."""
        out = self.prefect("deployment", "run", deployment).stdout
        return re.search(r"UUID:\s*([0-9a-f-]{36})", out).group(1)

    def flow_run(self, run_id: str) -> dict[str, Any]:
        return httpx.get(f"{self.prefect_api}/flow_runs/{run_id}").json()


def deep_merge(base: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _as_user(user: str | None) -> dict[str, Any]:
    if user is None:
        return {}
    return {"user": user, "group": pwd.getpwnam(user).pw_gid, "extra_groups": []}


def main() -> None:
    """``make stack``: the stack in ./stack-workspace with the demo drops, deployed and run
    once; the UIs stay up until Ctrl-C."""
    from finegate.demo import prepare_demo_landing

    if missing := missing_requirements():
        sys.exit(f"make stack needs PostgreSQL's server: missing {', '.join(missing)} "
                 "(Debian: apt-get install postgresql)")
    root = Path(sys.argv[1] if len(sys.argv) > 1 else "stack-workspace")
    if (root / "lake").exists() and any((root / "lake").iterdir()):
        sys.exit(f"{root}/lake is not empty: remove {root} first (the stack's Postgres is new "
                 "each time, so an old lake would not match its registry)")
    stack = Stack(root)
    print(f"starting the stack in {stack.root} (logs: {stack.logs}) ...", flush=True)
    stack.start()
    try:
        prepare_demo_landing(stack.landing, stack.root / "golden.jsonl")
        deployment = stack.deploy()
        run_id = stack.trigger(deployment)
        print(f"deployed {deployment}; triggered flow run {run_id}\n"
              f"  Prefect  {stack.prefect_ui}/runs/flow-run/{run_id}\n"
              f"  MLflow   {stack.mlflow_url}\n"
              f"  Dask     {stack.dask_dashboard}\n"
              f"Ctrl-C stops every process.", flush=True)
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        signal.sigwait({signal.SIGINT, signal.SIGTERM})
    finally:
        print("stopping ...", flush=True)
        stack.stop()


if __name__ == "__main__":
    main()
