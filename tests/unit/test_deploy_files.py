"""The deployment examples in deploy/ and the README name only `investo` commands and options that exist.

Each command line of the Procfile, the systemd units and docker-compose.yml is parsed
by the real command's click parser (``make_context``: unknown options, missing required
ones and bad values fail), and the examples must start exactly one engine per shard of
the shard counts their ``investo cluster init`` writes. The README's command lines (in
code blocks and inline code) hold placeholders (``FILE``, ``[--repeat 3]``), so of them
only the command path and the option names are checked.
"""

from __future__ import annotations

import re
import shlex
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from investo.cli import app

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
SYSTEMD = DEPLOY / "systemd"
CLI = typer.main.get_command(app)
PROCFILE_LINE = re.compile(r"^([A-Za-z0-9_-]+):\s*(.+)$")  # honcho's and foreman's
VARIABLE = re.compile(r"\$\{(\w+)\}|\$(\w+)")


def _env_file(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = line.partition("=")
            values[name.strip()] = value.strip().strip('"')
    return values


CLUSTER_ENV = _env_file(SYSTEMD / "cluster.env")


def _expand(token: str) -> str:
    """Replace $VAR / ${VAR} by the sample value in cluster.env (which must define it)."""

    def value(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        assert name in CLUSTER_ENV, f"${name} is not set in deploy/systemd/cluster.env"
        return CLUSTER_ENV[name]

    return VARIABLE.sub(value, token)


def _command(argv: list[str]) -> tuple[list[str], Any, list[str]]:
    """The subcommand path ``argv`` names, its click command, and the arguments after the path."""
    command: Any = CLI
    rest = list(argv)
    path: list[str] = []
    while getattr(command, "commands", None) is not None:  # a group (click's, or typer's own)
        assert rest and not rest[0].startswith("-"), f"no subcommand in {argv}"
        name = rest.pop(0)
        assert name in command.commands, f"`investo {' '.join([*path, name])}` does not exist ({argv})"
        path.append(name)
        command = command.commands[name]
    return path, command, rest


def _parse(argv: list[str]) -> tuple[str, dict[str, Any]]:
    """Parse ``investo`` arguments as the CLI does; return the command path and its parameters."""
    path, command, rest = _command([_expand(token) for token in argv])
    try:
        ctx = command.make_context(f"investo {' '.join(path)}", rest)
    except Exception as error:  # a usage error: unknown option, missing one, bad value
        describe = getattr(error, "format_message", None)
        message = describe() if describe is not None else repr(error)
        pytest.fail(f"investo {' '.join(argv)}: {message}")
    result = CliRunner().invoke(app, [*path, "--help"])
    assert result.exit_code == 0, result.output
    return " ".join(path), dict(ctx.params)


def _check_cluster(commands: list[tuple[str, dict[str, Any]]], init: dict[str, Any]) -> Counter[str]:
    """Exactly one engine per shard that `cluster init` creates; returns the processes by command."""
    engines = Counter((p["role"], p["shard"]) for name, p in commands if name == "engine")
    wanted = {("accounts", k) for k in range(init["accounts_shards"])}
    wanted |= {("matching", k) for k in range(init["matching_shards"])}
    assert set(engines) == wanted, f"engines {sorted(engines)}, shards {sorted(wanted)}"
    assert all(count == 1 for count in engines.values()), f"two engines for one shard: {engines}"
    return Counter(name for name, _ in commands)


def test_procfile_runs_one_engine_per_shard_two_db_writers_two_gateways_and_the_market_streams() -> None:
    commands = []
    names = []
    init = None
    for line in (DEPLOY / "Procfile").read_text().splitlines():
        if "investo cluster init" in line:  # documented in a comment: it runs once, before
            argv = shlex.split(line[line.index("investo cluster init") :])
            assert _parse(argv[1:])[0] == "cluster init"
            init = _parse(argv[1:])[1]
        match = PROCFILE_LINE.match(line)
        if match:
            names.append(match.group(1))
            argv = shlex.split(match.group(2))
            assert argv[0] == "investo", line
            commands.append(_parse(argv[1:]))
    assert len(names) == len(set(names))
    assert init is not None, "the Procfile says how to run `investo cluster init`"
    assert init["matching_shards"] == 2 and init["accounts_shards"] == 2
    assert _check_cluster(commands, init) == {
        "engine": 4, "dbwriter": 2, "gateway": 2, "marketdata": 2, "ws": 2,
    }  # fmt: skip
    assert all(p["redis"] == CLUSTER_ENV["INVESTO_REDIS"] for _, p in commands)
    ports = [p["port"] for name, p in commands if name in ("gateway", "ws")]
    assert len(set(ports)) == 4, ports


def _unit(path: Path) -> dict[str, list[str]]:
    """A unit file's ``Key=value`` settings (a key may repeat)."""
    settings: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        if "=" in line and not line.startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


@pytest.mark.parametrize(
    "unit",
    [
        "investo-accounts@.service", "investo-matching@.service", "investo-dbwriter@.service",
        "investo-gateway@.service", "investo-marketdata@.service", "investo-ws@.service",
    ],
)  # fmt: skip
def test_systemd_units_run_existing_commands(unit: str) -> None:
    settings = _unit(SYSTEMD / unit)
    (exec_start,) = settings["ExecStart"]
    argv = shlex.split(exec_start.lstrip("-@:+!"))
    assert argv[0].startswith("/") and argv[0].endswith("/bin/investo"), exec_start
    name, params = _parse([token.replace("%i", "1") for token in argv[1:]])
    assert settings["Restart"] == ["always"]
    assert settings["EnvironmentFile"] == ["/etc/investo/cluster.env"]
    assert settings["User"] not in (["root"], [])
    assert settings["PartOf"] == ["investo.target"] and settings["WantedBy"] == ["investo.target"]
    if name == "engine":
        assert unit == f"investo-{params['role']}@.service"
        assert "%i" in exec_start and params["shard"] == 1  # the instance is the shard
        assert settings["RestartPreventExitStatus"] == ["3"]  # fenced: another engine runs it
    elif name in ("gateway", "ws"):
        assert "%i" in exec_start and params["port"] == 1  # the instance is the port
    else:
        assert name in ("dbwriter", "marketdata")
    assert (SYSTEMD / "investo.target").exists()


def test_docker_compose_services() -> None:
    yaml = pytest.importorskip("yaml", reason="PyYAML is not installed: docker-compose.yml not parsed")
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"redis", "postgres", "init", "dbwriter-1", "dbwriter-2", "gateway"} <= set(services)
    assert services["redis"]["image"].startswith("redis:7")
    assert services["postgres"]["image"].startswith("postgres:1")
    assert int(services["postgres"]["image"].split(":")[1].split(".")[0]) >= 15

    # Redis runs on deploy/redis.conf, mounted from beside the compose file
    redis = services["redis"]
    mounts = [volume.split(":") for volume in redis["volumes"]]
    configs = [(source, target) for source, target, *_ in mounts if source.endswith(".conf")]
    assert len(configs) == 1
    source, target = configs[0]
    assert (DEPLOY / source).resolve() == DEPLOY / "redis.conf"
    assert redis["command"][:2] == ["redis-server", target]
    conf = (DEPLOY / "redis.conf").read_text().splitlines()
    assert "appendfsync always" in conf and "maxmemory-policy noeviction" in conf

    commands = []
    init = None
    for name, service in services.items():
        if name in ("redis", "postgres"):
            continue
        build = service["build"]
        assert (DEPLOY / build["context"]).resolve() == ROOT and build["dockerfile"] == "deploy/Dockerfile"
        parsed = _parse([str(token) for token in service["command"]])
        if parsed[0] == "cluster init":
            init = parsed[1]
            assert service["restart"] == "no"
        else:
            assert service["depends_on"]["init"] == {"condition": "service_completed_successfully"}
            commands.append(parsed)
    assert init is not None
    assert _check_cluster(commands, init) == {
        "engine": 4, "dbwriter": 2, "gateway": 1, "marketdata": 2, "ws": 1,
    }  # fmt: skip
    assert services["gateway"]["ports"] == ["127.0.0.1:8000:8000"]
    assert services["ws"]["ports"] == ["127.0.0.1:9000:9000"]


def test_dockerfile_installs_the_repository_with_its_constraints() -> None:
    lines = [line.strip() for line in (DEPLOY / "Dockerfile").read_text().splitlines()]
    assert "FROM python:3.11-slim" in lines
    assert any("pip install -c constraints.txt ." in line for line in lines)
    for line in lines:
        if line.startswith("COPY "):
            *sources, _ = line.split()[1:]
            assert all((ROOT / source).exists() for source in sources), line
    assert 'ENTRYPOINT ["investo"]' in lines


# an ``investo`` command where a shell command starts, up to a comment or a shell operator
README_COMMAND = re.compile(r"(?:^\s*|[;&|(]\s*)(?:\./)?investo\s+([^#&|;>]*)")


def _readme_commands() -> list[tuple[int, str]]:
    """``(line, arguments)`` of every ``investo`` command in the README's code blocks and inline code."""
    found: list[tuple[int, str]] = []
    in_block, command = False, ""
    for number, line in enumerate((ROOT / "README.md").read_text().splitlines(), 1):
        if line.lstrip().startswith("```"):
            in_block = not in_block
        elif in_block:
            command += line
            if command.endswith("\\"):  # continued on the next line
                command = command[:-1] + " "
                continue
            found += [(number, match.group(1)) for match in README_COMMAND.finditer(command)]
            command = ""
        else:
            for span in re.findall(r"`([^`]+)`", line):
                match = re.match(r"(?:\./)?investo\s+(.*)", span)
                if match:
                    found.append((number, match.group(1)))
    return found


def test_readme_names_only_commands_and_options_that_exist() -> None:
    commands = _readme_commands()
    assert len(commands) > 50, "the README's commands were not found"
    for number, arguments in commands:
        text = arguments.replace("[", " ").replace("]", " ")  # optional parts, as usage lines write them
        try:
            argv = shlex.split(text)
        except ValueError:  # a quote that inline code leaves open
            argv = text.split()
        path, command, rest = _command(argv)
        options = {name for param in command.params for name in (*param.opts, *param.secondary_opts)}
        for token in rest:
            option = token.split("=")[0]
            assert not option.startswith("--") or option in options | {"--help"}, (
                f"README.md:{number}: `investo {' '.join(path)}` has no option {option}"
            )
