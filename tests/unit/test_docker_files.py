"""docker/Dockerfile and docker/compose.yaml, checked without a Docker engine."""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "docker"


def _instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with continuations joined and comments dropped."""
    logical: list[str] = []
    pending = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued line"
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in logical]


def _exec_form(arguments: str) -> list[str]:
    value = json.loads(arguments)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value)
    return value


@pytest.fixture(scope="module")
def dockerfile() -> list[tuple[str, str]]:
    return _instructions(DOCKER / "Dockerfile")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load((DOCKER / "compose.yaml").read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def pyproject() -> dict[str, Any]:
    return tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))


def _env(dockerfile: list[tuple[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for instruction, arguments in dockerfile:
        if instruction == "ENV":
            env.update(item.split("=", 1) for item in shlex.split(arguments))
    return env


def test_dockerfile_builds_on_python_slim_with_the_cpu_torch_pin(
    dockerfile: list[tuple[str, str]], pyproject: dict[str, Any]
) -> None:
    assert dockerfile[0] == ("FROM", "python:3.11-slim")
    runs = [arguments for instruction, arguments in dockerfile if instruction == "RUN"]
    requirement = Requirement(
        next(d for d in pyproject["project"]["dependencies"] if d.startswith("torch"))
    )
    torch_run = next(i for i, r in enumerate(runs) if "torch" in r)
    assert "--index-url https://download.pytorch.org/whl/cpu" in runs[torch_run]
    pinned = next(w for w in runs[torch_run].split() if w.startswith("torch=="))
    assert requirement.specifier.contains(pinned.removeprefix("torch=="))
    package_run = next(i for i, r in enumerate(runs) if '".[server]"' in r)
    assert torch_run < package_run  # the requirement is met before pip resolves the package


def test_dockerfile_copies_everything_the_package_installs(
    dockerfile: list[tuple[str, str]], pyproject: dict[str, Any]
) -> None:
    copied = {
        source.rstrip("/")
        for instruction, arguments in dockerfile
        if instruction == "COPY"
        for source in arguments.split()[:-1]
    }
    package_dirs = set(pyproject["tool"]["setuptools"]["package-dir"].values())
    top_level = {Path(d).parts[0] for d in package_dirs}
    assert top_level | {"pyproject.toml", pyproject["project"]["readme"]} <= copied
    text = (DOCKER / "Dockerfile.dockerignore").read_text(encoding="utf-8")
    ignore = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert ignore[0] == "*"  # .venv and data never enter the build context
    assert {f"!{c}" for c in copied} <= {line.rstrip("/") for line in ignore}


def test_dockerfile_runs_the_server_as_a_non_root_user(
    dockerfile: list[tuple[str, str]],
) -> None:
    instructions = [instruction for instruction, _ in dockerfile]
    users = [arguments for instruction, arguments in dockerfile if instruction == "USER"]
    assert users and users[-1] not in {"root", "0", "0:0"}
    assert instructions.index("USER") > max(
        i for i, instruction in enumerate(instructions) if instruction == "RUN"
    )
    cmd = [arguments for instruction, arguments in dockerfile if instruction == "CMD"]
    assert _exec_form(cmd[-1]) == ["hybridsearch", "serve"]
    env = _env(dockerfile)
    assert env["HYBRIDSEARCH_HOST"] == "0.0.0.0"  # reachable from outside the container
    expose = [arguments for instruction, arguments in dockerfile if instruction == "EXPOSE"]
    assert expose == [env["HYBRIDSEARCH_PORT"]]
    healthcheck = next(
        arguments for instruction, arguments in dockerfile if instruction == "HEALTHCHECK"
    )
    probe = _exec_form(healthcheck.split(" CMD ", 1)[1])
    assert "/health" in probe[-1] and "HYBRIDSEARCH_PORT" in probe[-1]


def test_compose_runs_database_migration_and_api(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {"db", "migrate", "admin-key", "api"}
    assert re.fullmatch(r"pgvector/pgvector:pg1[78]", services["db"]["image"])
    assert "pg_isready" in " ".join(services["db"]["healthcheck"]["test"])

    migrate, api = services["migrate"], services["api"]
    assert migrate["command"] == ["hybridsearch", "db", "upgrade"]
    assert migrate["depends_on"] == {"db": {"condition": "service_healthy"}}
    assert migrate["restart"] == "no"
    assert api["depends_on"] == {
        "db": {"condition": "service_healthy"},
        "migrate": {"condition": "service_completed_successfully"},
        "admin-key": {"condition": "service_completed_successfully"},
    }
    assert "/ready" in api["healthcheck"]["test"][-1]
    assert api["ports"][0].endswith(":8000")
    assert (
        migrate["build"]
        == api["build"]
        == services["admin-key"]["build"]
        == {"context": "..", "dockerfile": "docker/Dockerfile"}
    )
    assert (DOCKER / api["build"]["context"] / api["build"]["dockerfile"]).is_file()


def test_compose_configures_everything_through_environment_variables(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    db_env = services["db"]["environment"]
    url = services["api"]["environment"]["HYBRIDSEARCH_DATABASE_URL"]
    assert services["migrate"]["environment"]["HYBRIDSEARCH_DATABASE_URL"] == url
    assert re.fullmatch(r"postgresql://\$\{POSTGRES_USER.*\}:\$\{POSTGRES_PASSWORD.*\}@db:5432/"
                        r"\$\{POSTGRES_DB.*\}", url)  # fmt: skip
    assert db_env["POSTGRES_PASSWORD"].startswith("${POSTGRES_PASSWORD:?")  # no default password

    known = set()
    for module in ("config.py", "server_cli.py", "server_options.py"):
        source = (REPO / "hybridsearch" / module).read_text(encoding="utf-8")
        known |= set(re.findall(r'"(HYBRIDSEARCH_[A-Z_]+)"', source))
    for name, service in services.items():
        for variable in service.get("environment", {}):
            if variable.startswith("HYBRIDSEARCH_"):
                assert variable in known, f"{name}: {variable} is not a hybridsearch setting"


def test_compose_api_requires_an_admin_key_from_the_environment(compose: dict[str, Any]) -> None:
    services = compose["services"]
    admin_key, api = services["admin-key"], services["api"]
    # registered from the environment, with no default: compose refuses to start without it
    command = admin_key["command"]
    assert command[:5] == ["hybridsearch", "keys", "create", "--scope", "admin"]
    variable = command[command.index("--key-from-env") + 1]
    assert admin_key["environment"][variable].startswith(f"${{{variable}:?")
    assert admin_key["depends_on"] == {"migrate": {"condition": "service_completed_successfully"}}
    assert admin_key["restart"] == "no"
    # the API requires keys whatever the key table holds, and its healthcheck carries one
    assert api["environment"]["HYBRIDSEARCH_REQUIRE_AUTH"] == "1"
    assert api["environment"][variable] == admin_key["environment"][variable]
    probe = api["healthcheck"]["test"][-1]
    assert "/ready" in probe and f"'Bearer ' + os.environ['{variable}']" in probe
