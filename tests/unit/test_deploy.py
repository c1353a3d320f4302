"""The deployment files agree with the code, checked without Docker.

`docker-compose.yml` must follow the Compose Specification (its JSON Schema is vendored in
`deploy/compose-spec.json`), set only real `ServiceSettings`, run only declared console scripts,
and wait for healthy servers; the `Dockerfile` must expose and probe what the service serves.
Each check names the file to fix when it fails.
"""

from __future__ import annotations

import ast
import copy
import importlib.metadata
import json
import re
import shlex
import subprocess
import sys
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from accord_runtime.settings import ServiceSettings
from services.agreements.main import AgreementsSettings
from services.kpi.main import KpiSettings
from services.notifier.settings import NotifierSettings
from services.queries.main import QueriesSettings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
SCHEMA_FILE = ROOT / "deploy" / "compose-spec.json"
PYPROJECT = ROOT / "pyproject.toml"

ENV_PREFIX = str(ServiceSettings.model_config.get("env_prefix", ""))
REQUIRED_SETTINGS = ("database_url", "amqp_url", "service_name")
DEFAULT_PORT = ServiceSettings.model_fields["http_port"].default
LIVENESS_PATH = "/healthz"  # the image's own HEALTHCHECK: the process answers
READINESS_PATH = "/readyz"  # compose's healthcheck: database and broker reachable too

# ${NAME}, ${NAME:-default}, ${NAME-default}, and $$ (a literal $), as Compose interpolates them.
_VARIABLE = re.compile(
    r"\$(?:(?P<escaped>\$)|\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?-)(?P<default>[^}]*))?\})")
_URL = re.compile(r"https?://[^\s'\"]+")


# --- reading the files ---------------------------------------------------------------------------


def interpolate(value: Any, env: Mapping[str, str]) -> Any:
    """`value` with every string interpolated as Compose does, from `env` then the defaults."""
    if isinstance(value, dict):
        return {key: interpolate(item, env) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolate(item, env) for item in value]
    if not isinstance(value, str):
        return value

    def replace(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "$"
        name, op, default = match["name"], match["op"], match["default"]
        if op == ":-" and env.get(name):
            return env[name]
        if op == "-" and name in env:
            return env[name]
        if op is None:
            return env.get(name, "")  # as Compose does, with a warning; a test forbids it here
        return str(default)

    return _VARIABLE.sub(replace, value)


@cache
def compose_raw() -> dict[str, Any]:
    """docker-compose.yml as YAML (anchors and `<<` merges resolved), not yet interpolated."""
    data = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(data, dict), "docker-compose.yml is not a mapping"
    return data


@cache
def compose() -> dict[str, Any]:
    """docker-compose.yml as `docker compose up` sees it with no variable set: the defaults."""
    result: dict[str, Any] = interpolate(compose_raw(), {})
    return result


def services() -> dict[str, dict[str, Any]]:
    result: dict[str, dict[str, Any]] = compose()["services"]
    return result


def accord_services() -> dict[str, dict[str, Any]]:
    """The services built from this repository's Dockerfile (the others are third-party images)."""
    return {name: service for name, service in services().items() if "build" in service}


def environment(service: Mapping[str, Any]) -> dict[str, str]:
    """A service's `environment`, in either of Compose's forms, as strings."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        pairs = (item.partition("=") for item in env)
        return {key: value for key, _, value in pairs}
    return {key: _scalar(value) for key, value in env.items()}


def _scalar(value: object) -> str:
    if value is None:
        return ""
    return str(value).lower() if isinstance(value, bool) else str(value)


def command(value: str | list[str] | None) -> list[str]:
    if value is None:
        return []
    return shlex.split(value) if isinstance(value, str) else list(value)


def healthcheck_url(service_name: str, test: str | list[str]) -> str:
    found = _URL.findall(test if isinstance(test, str) else " ".join(test))
    assert len(found) == 1, f"{service_name}: the healthcheck should probe one URL, found {found}"
    return str(found[0])


@dataclass(frozen=True)
class Instruction:
    keyword: str
    arguments: str

    def exec_form(self) -> list[str]:
        """The arguments of CMD/ENTRYPOINT/HEALTHCHECK CMD as argv (JSON or shell form)."""
        text = self.arguments
        if self.keyword == "HEALTHCHECK":
            _, found, text = text.partition("CMD ")
            assert found, f"HEALTHCHECK without CMD: {self.arguments}"
        text = text.strip()
        if text.startswith("["):
            argv = json.loads(text)
            assert isinstance(argv, list)
            return [str(arg) for arg in argv]
        return ["/bin/sh", "-c", text]


@cache
def dockerfile() -> tuple[Instruction, ...]:
    """The Dockerfile's instructions, continuation lines joined and comments dropped."""
    instructions: list[Instruction] = []
    pending = ""
    for line in DOCKERFILE.read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        keyword, _, arguments = (pending + stripped).partition(" ")
        instructions.append(Instruction(keyword.upper(), arguments.strip()))
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued line"
    return tuple(instructions)


def final_stage() -> list[Instruction]:
    """The instructions of the last stage: what the image that runs is made of."""
    instructions = list(dockerfile())
    starts = [index for index, each in enumerate(instructions) if each.keyword == "FROM"]
    assert starts, "the Dockerfile has no FROM"
    return instructions[starts[-1]:]


def only(keyword: str, instructions: list[Instruction]) -> Instruction:
    found = [instruction for instruction in instructions if instruction.keyword == keyword]
    assert len(found) == 1, f"the Dockerfile's last stage needs 1 {keyword}, has {len(found)}"
    return found[0]


def image_environment() -> dict[str, str]:
    env: dict[str, str] = {}
    for instruction in dockerfile():
        if instruction.keyword == "ENV":
            for item in shlex.split(instruction.arguments):
                key, found, value = item.partition("=")
                assert found, f"use the ENV KEY=VALUE form: {instruction.arguments}"
                env[key] = value
    return env


@cache
def pyproject() -> dict[str, Any]:
    return tomllib.loads(PYPROJECT.read_text())


#: The packages the image installs (pyproject [tool.setuptools.packages.find]).
SHIPPED = ("accord_runtime", "business_time", "contracts", "services", "accord_cli")


def imported_modules() -> dict[str, set[str]]:
    """The top-level modules the shipped packages import, other than their own and the standard
    library's → the files that import them."""
    found: dict[str, set[str]] = {}
    for package in SHIPPED:
        for path in sorted((ROOT / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for top in {name.partition(".")[0] for name in names} - set(SHIPPED) - sys.stdlib_module_names:
                    found.setdefault(top, set()).add(str(path.relative_to(ROOT)))
    return found


def runtime_distributions() -> set[str]:
    """The distributions `pip install .` brings: pyproject's dependencies and, as installed here,
    theirs (with the extras asked for), without the dev extra."""
    wanted = [Requirement(line) for line in pyproject()["project"]["dependencies"]]
    seen: set[str] = set()
    while wanted:
        requirement = wanted.pop()
        name = canonicalize_name(requirement.name)
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = importlib.metadata.distribution(requirement.name).requires or []
        except importlib.metadata.PackageNotFoundError:
            continue  # not installed here (another platform's): nothing of it can be imported here either
        for line in requires:
            needed = Requirement(line)
            extras = requirement.extras or {""}
            if needed.marker is None or any(needed.marker.evaluate({"extra": extra}) for extra in extras):
                wanted.append(needed)
    return seen


def console_scripts() -> dict[str, str]:
    scripts: dict[str, str] = pyproject()["project"].get("scripts", {})
    return scripts


def service_commands() -> Iterator[tuple[str, list[str]]]:
    """Every command an Accord container runs: each compose service's and the image's default."""
    for name, service in accord_services().items():
        yield f"docker-compose.yml services.{name}.command", command(service.get("command"))
    yield "Dockerfile CMD", only("CMD", final_stage()).exec_form()


# Each service's settings class: the shared ServiceSettings, plus what a service adds of its own.
SERVICE_SETTINGS: dict[str, type[ServiceSettings]] = {
    "agreements": AgreementsSettings, "queries": QueriesSettings, "kpi": KpiSettings, "notifier": NotifierSettings,
}


def settings_errors(where: str, env: Mapping[str, str],
                    settings: type[ServiceSettings] = ServiceSettings) -> list[str]:
    """What is wrong with these ACCORD_* variables as the service's settings."""
    fields = settings.model_fields
    values = {key.removeprefix(ENV_PREFIX).lower(): value
              for key, value in env.items() if key.startswith(ENV_PREFIX)}
    errors = [f"{where}: {ENV_PREFIX}{name.upper()} is not a {settings.__name__} field "
              f"(fields: {', '.join(sorted(fields))})" for name in values if name not in fields]
    try:
        settings.model_validate({name: values[name] for name in values if name in fields})
    except ValueError as error:
        errors.append(f"{where}: the values are not valid settings: {error}")
    return errors


# --- (a) the Compose Specification ---------------------------------------------------------------


@cache
def compose_validator() -> jsonschema.Draft7Validator:
    schema = json.loads(SCHEMA_FILE.read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def schema_errors(document: Any) -> list[str]:
    return [f"{'.'.join(map(str, error.absolute_path)) or '(top)'}: {error.message}"
            for error in compose_validator().iter_errors(document)]


def test_compose_file_follows_the_compose_specification() -> None:
    assert schema_errors(compose()) == []


def test_the_vendored_schema_rejects_what_compose_rejects() -> None:
    """A schema that accepted anything would make the test above pass for nothing."""
    misspelt = copy.deepcopy(compose())
    postgres = misspelt["services"]["postgres"]
    postgres["helthcheck"] = postgres.pop("healthcheck")
    unknown_condition = copy.deepcopy(compose())
    name = next(iter(accord_services()))
    unknown_condition["services"][name]["depends_on"]["postgres"]["condition"] = "service_ready"
    assert schema_errors(misspelt)
    assert schema_errors(unknown_condition)


def test_every_variable_has_a_default_so_compose_up_needs_no_env_file() -> None:
    text = COMPOSE_FILE.read_text()
    found = _VARIABLE.finditer(text)
    bare = [variable["name"] for variable in found if variable["name"] and variable["op"] is None]
    assert bare == [], f"docker-compose.yml: give these a default, ${{NAME:-default}}: {bare}"


def test_interpolation_takes_the_environment_first() -> None:
    assert interpolate("x${A:-d}y", {"A": "v"}) == "xvy"
    assert interpolate("x${A:-d}y", {"A": ""}) == "xdy"
    assert interpolate("x${A-d}y", {"A": ""}) == "xy"
    assert interpolate("$${A}", {}) == "${A}"
    assert interpolate("${A}", {}) == ""


# --- (b) configuration parity with ServiceSettings -----------------------------------------------


def test_there_is_an_accord_service_in_compose() -> None:
    assert "agreements" in accord_services(), "docker-compose.yml: no agreements service"


@pytest.mark.parametrize("name", sorted(accord_services()))
def test_compose_sets_only_service_settings_and_every_required_one(name: str) -> None:
    where = f"docker-compose.yml services.{name}"
    env = environment(accord_services()[name])
    required = [f"{ENV_PREFIX}{field.upper()}" for field in REQUIRED_SETTINGS]
    assert [key for key in required if key not in env] == [], f"{where}: required settings not set"
    assert name in SERVICE_SETTINGS, f"{where}: add its settings class to SERVICE_SETTINGS"
    assert settings_errors(where, env, SERVICE_SETTINGS[name]) == []
    assert env[f"{ENV_PREFIX}SERVICE_NAME"] == name, f"{where}: SERVICE_NAME should be {name!r}"


@pytest.mark.parametrize("name", sorted(accord_services()))
def test_compose_services_wait_for_the_servers_their_urls_name(name: str) -> None:
    service = accord_services()[name]
    where = f"docker-compose.yml services.{name}"
    env = environment(service)
    hosts = {urlsplit(env[f"{ENV_PREFIX}{key}"]).hostname for key in ("DATABASE_URL", "AMQP_URL")}
    assert hosts <= set(services()), f"{where}: the URLs name hosts {hosts}, not compose services"
    assert hosts <= set(service.get("depends_on") or {}), f"{where}: depends_on should name {hosts}"


def test_parity_check_catches_an_unknown_or_invalid_setting() -> None:
    assert settings_errors("probe", {f"{ENV_PREFIX}DATABASE_URLS": "x"})
    assert settings_errors("probe", {f"{ENV_PREFIX}LOG_LEVEL": "LOUD"})
    assert settings_errors("probe", {f"{ENV_PREFIX}LOG_LEVEL": "DEBUG", "OTHER": "ignored"}) == []


def test_the_runtime_dependencies_provide_every_module_the_image_imports() -> None:
    """Every import of the shipped packages is met by pyproject's dependencies, not by the dev extra
    only: the image installs `pip install .` (the `accord` command once needed httpx from dev)."""
    providers = importlib.metadata.packages_distributions()
    runtime = runtime_distributions()
    missing = {module: sorted(files) for module, files in imported_modules().items()
               if not {canonicalize_name(d) for d in providers.get(module, [])} & runtime}
    assert missing == {}, f"add to pyproject [project] dependencies what provides: {missing}"


def test_image_environment_is_service_settings() -> None:
    assert settings_errors("Dockerfile ENV", image_environment()) == []


# --- (c) commands are declared console scripts ---------------------------------------------------

_PROBE = """
import importlib, sys
target, name, *args = sys.argv[1:]
module, _, attribute = target.partition(":")
try:
    entry = importlib.import_module(module)
    for part in attribute.split("."):
        entry = getattr(entry, part)
except (ImportError, AttributeError) as error:
    print(f"{type(error).__name__}: {error}", file=sys.stderr)
    sys.exit(97)
sys.argv = [name, *args]
sys.exit(entry())
"""


@pytest.mark.parametrize(("where", "argv"), list(service_commands()), ids=lambda value: str(value))
def test_commands_run_declared_console_scripts(where: str, argv: list[str]) -> None:
    assert argv, f"{where}: no command"
    assert argv[0] in console_scripts(), (
        f"{where}: {argv[0]!r} is not a console script in pyproject [project.scripts] "
        f"({', '.join(sorted(console_scripts()))})")
    assert argv[1:2] == ["serve"], f"{where}: a service container runs `{argv[0]} serve`"


@pytest.mark.parametrize("argv", sorted({tuple(argv) for _, argv in service_commands()}),
                         ids=lambda value: " ".join(value))
def test_console_script_has_the_subcommand(argv: tuple[str, ...]) -> None:
    script, subcommand = argv[0], argv[1]
    assert script in console_scripts(), f"{script} is not in pyproject [project.scripts]"
    target = console_scripts()[script]
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, target, script, subcommand, "--help"],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode != 97, (
        f"console script {script} = {target!r} (pyproject [project.scripts]) cannot be loaded: "
        f"{(done.stderr.strip().splitlines() or ['?'])[-1]} (is the service's code all there?)")
    assert done.returncode == 0, f"`{script} {subcommand} --help`:\n{done.stdout}\n{done.stderr}"


# --- (d) healthchecks and start order ------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(services()))
def test_every_service_has_a_healthcheck(name: str) -> None:
    check = services()[name].get("healthcheck") or {}
    test = check.get("test")
    assert test and not check.get("disable") and command(test)[:1] != ["NONE"], (
        f"docker-compose.yml services.{name}: needs a healthcheck (others wait for it)")


@pytest.mark.parametrize("name", sorted(services()))
def test_dependencies_wait_until_healthy(name: str) -> None:
    depends_on = services()[name].get("depends_on") or {}
    assert isinstance(depends_on, dict), (
        f"docker-compose.yml services.{name}: use depends_on.<service>.condition: service_healthy")
    for dependency, how in depends_on.items():
        assert dependency in services(), f"services.{name} depends on unknown {dependency}"
        where = f"docker-compose.yml services.{name}.depends_on.{dependency}"
        assert how.get("condition") == "service_healthy", f"{where}: condition: service_healthy"
        assert services()[dependency].get("healthcheck"), f"{where}: it has no healthcheck"


# --- (e) health endpoints and ports agree --------------------------------------------------------


def test_the_runtime_serves_the_probed_paths() -> None:
    from accord_runtime.http import create_app

    app = create_app(title="probe", routers=(), readiness={}, error_statuses={})
    paths = {getattr(route, "path", None)
             for route in app.routes if "GET" in getattr(route, "methods", ())}
    assert {LIVENESS_PATH, READINESS_PATH} <= paths


def test_image_exposes_and_probes_the_default_port() -> None:
    stage = final_stage()
    exposed = {port.partition("/")[0] for port in only("EXPOSE", stage).arguments.split()}
    assert exposed == {str(DEFAULT_PORT)}, f"Dockerfile EXPOSE {exposed}, http_port={DEFAULT_PORT}"
    env = image_environment()
    assert env.get(f"{ENV_PREFIX}HTTP_PORT") == str(DEFAULT_PORT)
    assert env.get(f"{ENV_PREFIX}HTTP_HOST") == "0.0.0.0", "Dockerfile: listen on all interfaces"

    probe = " ".join(only("HEALTHCHECK", stage).exec_form())
    url = urlsplit(healthcheck_url("Dockerfile HEALTHCHECK", probe))
    assert url.path == LIVENESS_PATH, f"Dockerfile HEALTHCHECK should probe {LIVENESS_PATH}"
    port = url.netloc.rpartition(":")[2]
    if port == "%s":  # the port is read from ACCORD_HTTP_PORT, with a fallback
        fallback = re.search(rf"{ENV_PREFIX}HTTP_PORT['\"],\s*['\"](\d+)['\"]", probe)
        assert fallback, "Dockerfile HEALTHCHECK: read the port from ACCORD_HTTP_PORT, or 8000"
        port = fallback.group(1)
    assert port == str(DEFAULT_PORT), f"Dockerfile HEALTHCHECK probes port {port}"


@pytest.mark.parametrize("name", sorted(accord_services()))
def test_compose_publishes_and_probes_the_image_port(name: str) -> None:
    service = accord_services()[name]
    where = f"docker-compose.yml services.{name}"
    env = environment(service)
    assert env.get(f"{ENV_PREFIX}HTTP_PORT", str(DEFAULT_PORT)) == str(DEFAULT_PORT), where
    assert env.get(f"{ENV_PREFIX}HTTP_HOST") == "0.0.0.0", f"{where}: listen on all interfaces"

    targets: set[str] = set()
    for port in service.get("ports") or []:
        target = port["target"] if isinstance(port, dict) else str(port).rpartition(":")[2]
        targets.add(str(target).partition("/")[0])
    assert targets == {str(DEFAULT_PORT)}, f"{where}: publish the container's port {DEFAULT_PORT}"

    url = urlsplit(healthcheck_url(where, service["healthcheck"]["test"]))
    assert url.path == READINESS_PATH, f"{where}: the healthcheck should probe {READINESS_PATH}"
    assert url.port == DEFAULT_PORT, f"{where}: the healthcheck probes port {url.port}"


# --- the image builds what pyproject packages ----------------------------------------------------


def test_image_copies_every_package_and_installs_without_dev_extras() -> None:
    copied: set[str] = set()
    for instruction in dockerfile():
        if instruction.keyword == "COPY" and "--from" not in instruction.arguments:
            copied.update(Path(source).name for source in shlex.split(instruction.arguments)[:-1])
    patterns = pyproject()["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = {pattern.rstrip("*.") for pattern in patterns}
    needed = packages | {"pyproject.toml", str(pyproject()["project"]["readme"])}
    assert needed <= copied, f"Dockerfile: COPY {sorted(needed - copied)} too"

    lines = [line.strip() for line in DOCKERIGNORE.read_text().splitlines()]
    allowed = {line.lstrip("!").rstrip("/") for line in lines if line.startswith("!")}
    assert needed <= allowed, f".dockerignore (an allow-list): add !{sorted(needed - allowed)}"

    runs = [each.arguments for each in dockerfile() if each.keyword == "RUN"]
    installs = [run for run in runs if "pip install" in run]
    assert installs, "Dockerfile: no pip install"
    assert not any("[dev]" in run or " -e " in run for run in installs), "Dockerfile: no dev, no -e"


def test_image_runs_as_a_user_of_its_own() -> None:
    user = only("USER", final_stage()).arguments.split(":")[0]
    assert user not in {"root", "0"}, "Dockerfile: the final stage must not run as root"


# --- the README tells the same story -------------------------------------------------------------

README = ROOT / "README.md"
CI_SCRIPT = ROOT / ".ci" / "run"
INSTALL_COMMAND = ".venv/bin/pip install -e '.[dev]'"
TEST_COMMAND = ".venv/bin/pytest -q"


def test_readme_documents_every_setting() -> None:
    text = README.read_text()
    names = {name for settings in SERVICE_SETTINGS.values() for name in settings.model_fields}
    missing = [f"{ENV_PREFIX}{name.upper()}" for name in sorted(names) if f"`{ENV_PREFIX}{name.upper()}`" not in text]
    assert missing == [], f"README.md: add {missing} to the configuration table"


def test_ci_runs_the_install_and_test_commands_the_readme_gives() -> None:
    readme, ci = README.read_text(), CI_SCRIPT.read_text()
    for wanted in (INSTALL_COMMAND, TEST_COMMAND):
        assert wanted in readme, f"README.md: the quick start should say {wanted}"
        assert wanted in ci, f".ci/run should run {wanted}, as README.md says"


def test_readme_documents_every_compose_variable() -> None:
    """Every `${VAR:-default}` the compose file reads is in README.md, so an operator can set it."""
    text = README.read_text()
    names = set(re.findall(r"\$\{([A-Z_]+):-", COMPOSE_FILE.read_text()))
    assert names, "docker-compose.yml reads no variables?"
    missing = sorted(name for name in names if f"`{name}`" not in text)
    assert missing == [], f"README.md: document {missing}"
