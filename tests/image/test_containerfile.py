"""The Containerfile, read as text: what the image runs, as whom, and what goes into it.

Building and running the image is `make image` (.ci/image); these checks need no container
tool and catch a Containerfile that drifts from pyproject.toml or the settings.
"""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import pytest

from gateway.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
# (instruction, arguments) per stage; continuation lines joined, comments dropped.
Stage = list[tuple[str, str]]


def _stages() -> list[Stage]:
    text = (ROOT / "Containerfile").read_text(encoding="utf-8")
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    stages: list[Stage] = [[]]
    for line in joined.splitlines():
        if not line.strip():
            continue
        instruction, _, arguments = line.strip().partition(" ")
        if instruction.upper() == "FROM":
            stages.append([])
        stages[-1].append((instruction.upper(), " ".join(arguments.split())))
    return stages


STAGES = _stages()
PREAMBLE, *BUILD_STAGES, FINAL = STAGES


def _all(stage: Stage, instruction: str) -> list[str]:
    return [arguments for name, arguments in stage if name == instruction]


def _one(stage: Stage, instruction: str) -> str:
    (arguments,) = _all(stage, instruction)
    return arguments


def _env(stage: Stage) -> dict[str, str]:
    pairs = re.findall(r"(\w+)=(\S+)", " ".join(_all(stage, "ENV")))
    return dict(pairs)


def test_the_default_version_is_the_packages() -> None:
    """A plain `podman build .` labels the image with pyproject.toml's version."""
    defaults = {
        arguments.partition("=")[2]
        for stage in STAGES
        for arguments in _all(stage, "ARG")
        if arguments.startswith("VERSION=")
    }
    assert defaults == {PYPROJECT["project"]["version"]}
    assert "org.opencontainers.image.version=${VERSION}" in _one(FINAL, "LABEL").replace('"', "")


def test_the_labels_name_the_project_and_its_licence() -> None:
    labels = _one(FINAL, "LABEL").replace('"', "")
    assert f"org.opencontainers.image.title={PYPROJECT['project']['name']}" in labels
    assert f"org.opencontainers.image.licenses={PYPROJECT['project']['license']}" in labels
    for name in ("description", "source", "revision"):
        assert f"org.opencontainers.image.{name}=" in labels


def test_the_base_is_an_argument_used_by_every_stage() -> None:
    assert _one(PREAMBLE, "ARG").startswith("BASE=")
    assert all(stage[0][1].split()[0] == "${BASE}" for stage in [*BUILD_STAGES, FINAL])


def test_it_serves_the_gateway_on_8080_as_a_numeric_non_root_user() -> None:
    assert json.loads(_one(FINAL, "ENTRYPOINT")) == ["cloudlink-gateway"]
    assert json.loads(_one(FINAL, "CMD")) == ["serve", "--host", "0.0.0.0", "--port", "8080"]
    assert _one(FINAL, "EXPOSE") == "8080"
    uid, _, gid = _one(FINAL, "USER").partition(":")
    assert uid.isdigit()
    assert gid.isdigit()
    assert int(uid) != 0
    assert int(gid) != 0


def test_the_healthcheck_asks_livez_without_curl() -> None:
    healthcheck = _one(FINAL, "HEALTHCHECK")
    command = json.loads(healthcheck.partition(" CMD ")[2])
    assert command[0].startswith("/opt/venv/bin/python")
    assert "/livez" in command[-1]
    assert ":8080/" in command[-1]


def test_the_data_directory_is_the_settings_and_a_volume() -> None:
    """GATEWAY_DATA_DIR is the name the settings read; the volume is that directory."""
    assert "data_dir" in Settings.model_fields
    name = f"{Settings.model_config['env_prefix']}DATA_DIR"
    data_dir = _env(FINAL)[name]
    assert json.loads(_one(FINAL, "VOLUME")) == [data_dir]
    assert _one(FINAL, "WORKDIR") == data_dir
    env = _env(FINAL)
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert env["PYTHONUNBUFFERED"] == "1"


@pytest.mark.parametrize(
    "package",
    [
        pattern.rstrip("*")
        for pattern in PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]
    ],
)
def test_every_package_is_copied_into_the_build(package: str) -> None:
    """A package pyproject.toml ships but the build does not copy would be missing from
    the image, with no error until it is imported."""
    (build,) = BUILD_STAGES
    assert f"{package} ./{package}" in _all(build, "COPY")
    ignore = (ROOT / ".containerignore").read_text(encoding="utf-8").splitlines()
    assert f"!{package}/" in ignore


def test_the_image_takes_only_the_virtualenv_from_the_build() -> None:
    """No source tree, tests, benchmarks or .git: the final stage copies the virtualenv."""
    assert _all(FINAL, "COPY") == ["--from=build /opt/venv /opt/venv"]
    (build,) = BUILD_STAGES
    copied = {arguments.split()[0] for arguments in _all(build, "COPY")}
    assert not copied & {".", "tests", "bench", "demo", "docs", ".git"}
