"""Check docker-compose.yaml without a Docker engine: a real compose parser, then everything it names.

``make compose-check`` runs ``python -m deploy.compose_check``. Steps:

1. Debian's ``docker-compose`` (v1.29, the compose file spec's reference parser in Debian bookworm) runs in
   ``config`` mode, which needs no engine: schema, anchors/merge keys, interpolation of every ``${VAR}``
   (with a ``.env`` rendered from ``.env.example`` by ``deploy/make_env.py``, in an otherwise empty
   environment), named volumes, ``depends_on`` targets. Its resolved output is what we check next.
2. Variables: every ``${VAR}`` of the compose file is documented (a comment) in ``.env.example``, and every
   variable there is used.
3. Images and build contexts: a built image's context and Dockerfile exist, the Dockerfile's ``FROM`` is the
   Airflow version pinned in requirements.txt, its ``COPY`` sources exist and are not excluded by
   ``.dockerignore`` (which must exclude ``.env``); other images are pinned to a tag.
4. Files and volumes: bind-mounted files exist inside the repo; named volumes are declared.
5. Commands: ``airflow ...`` (including the official image's entrypoint shorthand ``api-server``...) parses
   with Airflow's own CLI parser; ``python -m MOD ...`` and console scripts parse their arguments with the
   project's own argparse parser (run with parsing stubbed to stop right after it); scripts exist in the
   image (mapped back to the repo through the Dockerfile's ``COPY`` lines and bind mounts) and pass
   ``bash -n``; health-check tools exist in their image.
6. Health checks: every long-running service has one; one-shot jobs (``restart: "no"``) are only waited for
   with ``service_completed_successfully``, and ``service_healthy`` only names services with a health check.
7. Environment: each ``AIRFLOW__SECTION__KEY`` is an option of Airflow's configuration (providers included);
   each other variable is read by this repo's code or by the image it is given to.

Why not a JSON-schema validator alone: the schema cannot know what exists in the repo, which is where a
compose file usually breaks (a renamed script, a typo in an Airflow option, an undocumented variable).
"""

from __future__ import annotations

import argparse
import contextlib
import fnmatch
import io
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from deploy.make_env import documented_variables, parse_env_file, render

REPO = Path(__file__).resolve().parents[1]

#: Executables that the non-project images used here are known to ship (checked in health checks).
IMAGE_TOOLS: dict[str, set[str]] = {"postgres": {"pg_isready", "psql"}, "redis": {"redis-cli"}}
#: Environment variables interpreted by the images themselves (their entrypoints), not by this repo's code.
IMAGE_ENV: dict[str, set[str]] = {
    "postgres": {"POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB"},
    "redis": set(),
    # The official Airflow image's entrypoint (docs: docker-stack/entrypoint).
    "airflow": {"DUMB_INIT_SETSID", "CONNECTION_CHECK_MAX_COUNT", "CONNECTION_CHECK_SLEEP_TIME"},
}
#: Tools of the official Airflow image that the project's image inherits.
AIRFLOW_IMAGE_TOOLS = {"curl", "airflow", "celery", "python", "python3", "bash", "/bin/bash", "pip"}
_VAR_REF = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)|(?<![\$\w])\$([A-Za-z_][A-Za-z0-9_]*)")
_CODE_SUFFIXES = {".py", ".sh"}

# Run in a subprocess: stop a CLI right after argparse accepted its arguments, so that nothing is started.
_ARGS_PROBE = r"""
import argparse, importlib, runpy, sys

class _Parsed(BaseException):
    pass

_original = argparse.ArgumentParser.parse_args

def _parse_then_stop(self, args=None, namespace=None):
    _original(self, args, namespace)
    raise _Parsed()

argparse.ArgumentParser.parse_args = _parse_then_stop
kind, target = sys.argv[1], sys.argv[2]
sys.argv = [target, *sys.argv[3:]]
try:
    if kind == "module":
        runpy.run_module(target, run_name="__main__", alter_sys=True)
    else:
        module, _, func = target.partition(":")
        getattr(importlib.import_module(module), func)()
except _Parsed:
    sys.exit(0)
print(f"{target} returned without parsing its arguments with argparse", file=sys.stderr)
sys.exit(3)
"""


@dataclass
class Report:
    """Problems found, each naming where and what to do."""

    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, where: str, message: str) -> None:
        self.problems.append(f"{where}: {message}")


@dataclass
class BuildInfo:
    """What a Dockerfile puts where: container path prefix -> repo path."""

    copies: list[tuple[str, Path]] = field(default_factory=list)
    base_image: str = ""


class ComposeChecker:
    """Checks one compose file against the repository it lives in."""

    def __init__(
        self,
        root: Path = REPO,
        compose_file: Path | None = None,
        env_example: Path | None = None,
        python: str = sys.executable,
    ) -> None:
        self.root = root.resolve()
        self.compose_file = (compose_file or self.root / "docker-compose.yaml").resolve()
        self.env_example = (env_example or self.root / ".env.example").resolve()
        self.python = python
        self.report = Report()
        self._builds: dict[str, BuildInfo] = {}
        self._code_text: str | None = None

    # -- driver ---------------------------------------------------------------------------------------
    def run(self) -> Report:
        if not self.compose_file.is_file():
            self.report.add(str(self.compose_file), "compose file not found")
            return self.report
        if not self.env_example.is_file():
            self.report.add(str(self.env_example), "not found: every variable must be documented there")
            return self.report
        example = self.env_example.read_text(encoding="utf-8")
        raw_text = self.compose_file.read_text(encoding="utf-8")
        self.check_variables(raw_text, example)
        resolved = self.parse_with_compose(example)
        if resolved is None:
            return self.report
        services: dict[str, Any] = resolved.get("services") or {}
        declared_volumes = set((resolved.get("volumes") or {}).keys())
        built_images = {svc.get("image") for svc in services.values() if svc.get("build") and svc.get("image")}
        for name, svc in services.items():
            self.check_image(name, svc, built_images)
        for name, svc in services.items():
            self.check_volumes(name, svc, declared_volumes)
            self.check_health(name, svc, services)
            self.check_commands(name, svc, built_images)
            self.check_environment(name, svc, built_images)
        return self.report

    # -- 1. the real parser ---------------------------------------------------------------------------
    def parse_with_compose(self, example: str) -> dict[str, Any] | None:
        binary = shutil.which("docker-compose")
        if binary is None:
            self.report.add("docker-compose", "not installed: run `make system-deps` (Debian package docker-compose)")
            return None
        try:
            env_text, _ = render(example, {})
        except ValueError as exc:
            self.report.add(self._rel(self.env_example), str(exc))
            return None
        with tempfile.TemporaryDirectory(prefix="compose-check-") as tmp:
            env_file = Path(tmp) / ".env"
            env_file.write_text(env_text, encoding="utf-8")
            # An empty environment: a variable missing from .env.example must not be masked by the caller's.
            clean_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": tmp}
            proc = subprocess.run(
                [binary, "--project-directory", str(self.root), "-f", str(self.compose_file),
                 "--env-file", str(env_file), "--profile", "demo", "config"],
                capture_output=True, text=True, env=clean_env, cwd=tmp, timeout=120,
            )
        if proc.returncode != 0:
            message = (proc.stderr or proc.stdout).strip()
            self.report.add(self._rel(self.compose_file), f"docker-compose config rejects it: {message}")
            return None
        resolved = yaml.safe_load(proc.stdout)
        if not isinstance(resolved, dict):
            self.report.add(self._rel(self.compose_file), "docker-compose config printed no mapping")
            return None
        self.report.notes.append(f"docker-compose config: OK ({len(resolved.get('services') or {})} services)")
        return resolved

    # -- 2. variables ---------------------------------------------------------------------------------
    def check_variables(self, raw_text: str, example: str) -> None:
        try:
            defined = {name for name, _ in parse_env_file(example)}
        except ValueError as exc:
            self.report.add(self._rel(self.env_example), str(exc))
            return
        docs = documented_variables(example)
        used: set[str] = set()
        for line in raw_text.splitlines():
            if line.lstrip().startswith("#"):
                continue
            for match in _VAR_REF.finditer(line):
                used.add(match.group(1) or match.group(2))
        for name in sorted(used - defined):
            self.report.add(self._rel(self.compose_file), f"${{{name}}} is not in .env.example: add it with a comment")
        for name in sorted(used & defined):
            if not docs.get(name):
                self.report.add(self._rel(self.env_example), f"{name} has no comment saying what it is")
        for name in sorted(defined - used):
            self.report.add(self._rel(self.env_example), f"{name} is not used by {self.compose_file.name}: drop it")

    # -- 3. images and builds -------------------------------------------------------------------------
    def check_image(self, name: str, svc: dict[str, Any], built_images: set[Any]) -> None:
        where = f"service {name}"
        build = svc.get("build")
        image = svc.get("image")
        if build:
            context = Path(build["context"] if isinstance(build, dict) else build)
            if not context.is_absolute():
                context = self.root / context
            if not context.is_dir():
                self.report.add(where, f"build context {context} does not exist")
                return
            dockerfile = context / (build.get("dockerfile", "Dockerfile") if isinstance(build, dict) else "Dockerfile")
            if not dockerfile.is_file():
                self.report.add(where, f"Dockerfile {dockerfile} does not exist")
                return
            if str(dockerfile) not in self._builds:
                self._builds[str(dockerfile)] = self.check_dockerfile(dockerfile, context)
            return
        if not image:
            self.report.add(where, "has neither image nor build")
            return
        if image in built_images:
            return
        repo, _, tag = str(image).rpartition(":") if ":" in str(image).split("/")[-1] else (str(image), "", "")
        if not tag or tag == "latest":
            self.report.add(where, f"image {image} must be pinned to a version tag")
        if repo.split("/")[-1] not in IMAGE_TOOLS:
            self.report.add(where, f"image {image} is not one this checker knows (add its tools to IMAGE_TOOLS)")

    def check_dockerfile(self, dockerfile: Path, context: Path) -> BuildInfo:
        info = BuildInfo()
        where = self._rel(dockerfile)
        ignore = self._dockerignore(context)
        if not any(p in (".env", "/.env", "**/.env") for p in ignore):
            self.report.add(self._rel(context / ".dockerignore"), "must exclude .env (it holds the secrets)")
        text = re.sub(r"\\\n", " ", dockerfile.read_text(encoding="utf-8"))
        for line in text.splitlines():
            words = line.strip().split()
            if not words or words[0].startswith("#"):
                continue
            instruction = words[0].upper()
            if instruction == "FROM" and not info.base_image:
                info.base_image = words[1]
                self._check_base_image(where, words[1])
            elif instruction in ("COPY", "ADD"):
                args = [w for w in words[1:] if not w.startswith("--")]
                if any(w.startswith("--from") for w in words[1:]) or len(args) < 2:
                    continue
                *sources, dest = args
                for src in sources:
                    path = context / src
                    if not path.exists():
                        self.report.add(where, f"{instruction} source {src} does not exist in {self._rel(context)}")
                        continue
                    if self._ignored(src.rstrip("/"), ignore):
                        self.report.add(where, f"{instruction} source {src} is excluded by .dockerignore")
                    # A directory's contents land in dest; a file lands at dest, or inside it when dest ends in /.
                    if path.is_dir():
                        target = dest.rstrip("/") + "/"
                    else:
                        target = dest + path.name if dest.endswith("/") or len(sources) > 1 else dest
                    info.copies.append((target, path))
        if not info.base_image:
            self.report.add(where, "has no FROM line")
        return info

    def _check_base_image(self, where: str, image: str) -> None:
        if not image.startswith("apache/airflow:"):
            return
        tag = image.split(":", 1)[1]
        pinned = self._pinned_airflow_version()
        if pinned and not tag.startswith(f"{pinned}-python"):
            self.report.add(where, f"FROM {image} does not match apache-airflow=={pinned} in requirements.txt")
        if not tag.endswith("-python3.11"):
            self.report.add(where, f"FROM {image}: the project runs on Python 3.11 (use the -python3.11 tag)")

    def _pinned_airflow_version(self) -> str | None:
        req = self.root / "requirements.txt"
        if not req.is_file():
            return None
        for line in req.read_text(encoding="utf-8").splitlines():
            match = re.match(r"^apache-airflow==([\w.]+)\s*$", line.strip())
            if match:
                return match.group(1)
        return None

    @staticmethod
    def _dockerignore(context: Path) -> list[str]:
        path = context / ".dockerignore"
        if not path.is_file():
            return []
        lines = (line.strip() for line in path.read_text(encoding="utf-8").splitlines())
        return [line for line in lines if line and not line.startswith("#")]

    @staticmethod
    def _ignored(relpath: str, patterns: Iterable[str]) -> bool:
        parts = PurePosixPath(relpath).parts
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        for pattern in patterns:
            pattern = pattern.strip("/")
            for prefix in prefixes:
                if fnmatch.fnmatch(prefix, pattern) or (
                    pattern.startswith("**/") and fnmatch.fnmatch(prefix.split("/")[-1], pattern[3:])
                ):
                    return True
        return False

    # -- 4. volumes -----------------------------------------------------------------------------------
    def check_volumes(self, name: str, svc: dict[str, Any], declared: set[str]) -> None:
        for volume in svc.get("volumes") or []:
            source, target = self._volume_parts(volume)
            if source is None:
                continue
            if source.startswith(("/", ".")):
                host = Path(source) if source.startswith("/") else self.root / source
                if not host.exists():
                    self.report.add(f"service {name}", f"bind mount source {source} does not exist")
                elif not host.resolve().is_relative_to(self.root):
                    self.report.add(f"service {name}", f"bind mount source {source} is outside the repository")
            elif source not in declared:
                self.report.add(f"service {name}", f"named volume {source} (at {target}) is not declared")

    @staticmethod
    def _volume_parts(volume: Any) -> tuple[str | None, str]:
        if isinstance(volume, dict):
            return volume.get("source"), str(volume.get("target", ""))
        parts = str(volume).split(":")
        if len(parts) == 1:
            return None, parts[0]  # anonymous volume
        return parts[0], parts[1]

    def _container_file(self, name: str, svc: dict[str, Any], path: str) -> Path | None:
        """The repo file that appears at ``path`` inside the service's container, if any."""
        for volume in svc.get("volumes") or []:
            source, target = self._volume_parts(volume)
            if source and source.startswith(("/", ".")) and (path == target or path.startswith(target + "/")):
                base = Path(source) if source.startswith("/") else self.root / source
                return base / path[len(target):].lstrip("/") if path != target else base
        build = svc.get("build")
        if build:
            context = Path(build["context"] if isinstance(build, dict) else build)
            if not context.is_absolute():
                context = self.root / context
            dockerfile = context / (build.get("dockerfile", "Dockerfile") if isinstance(build, dict) else "Dockerfile")
            info = self._builds.get(str(dockerfile))
            for dest, src in info.copies if info else []:
                if dest.endswith("/") and path.startswith(dest):
                    return src / path[len(dest):]
                if path == dest.rstrip("/"):
                    return src
        return None

    # -- 5. commands ----------------------------------------------------------------------------------
    def check_commands(self, name: str, svc: dict[str, Any], built_images: set[Any]) -> None:
        ours = bool(svc.get("build")) or svc.get("image") in built_images
        entrypoint = self._argv(svc.get("entrypoint"))
        command = self._argv(svc.get("command"))
        where = f"service {name}"
        if ours:
            if entrypoint:
                self._check_argv(where, name, svc, entrypoint + command)
            elif command:
                head = command[0]
                argv = command if head in ("bash", "python", "airflow") else ["airflow", *command]
                self._check_argv(where, name, svc, argv)
        health = svc.get("healthcheck") or {}
        test = health.get("test")
        if not test or health.get("disable"):
            return
        test = self._argv(test)
        if test[0] == "CMD":
            commands = [test[1:]]
        elif test[0] == "CMD-SHELL":
            commands = [shlex.split(part) for part in re.split(r"\|\||&&|;", " ".join(test[1:])) if part.strip()]
        else:
            commands = [shlex.split(" ".join(test))]
        for argv in commands:
            if not argv:
                continue
            if ours:
                if argv[0] not in AIRFLOW_IMAGE_TOOLS:
                    self.report.add(f"{where} healthcheck", f"{argv[0]} is not in the image")
                elif argv[0] != "curl":
                    self._check_argv(f"{where} healthcheck", name, svc, argv)
            else:
                image = str(svc.get("image", "")).split(":")[0].split("/")[-1]
                if argv[0] not in IMAGE_TOOLS.get(image, set()):
                    self.report.add(f"{where} healthcheck", f"{argv[0]} is not known to exist in image {image}")

    @staticmethod
    def _argv(value: Any) -> list[str]:
        if value is None:
            return []
        if isinstance(value, str):
            return shlex.split(value)
        return [str(v) for v in value]

    def _check_argv(self, where: str, name: str, svc: dict[str, Any], argv: list[str]) -> None:
        exe, args = argv[0], argv[1:]
        if exe in ("bash", "/bin/bash"):
            if args[:1] == ["-c"]:
                self._bash_syntax(where, args[1] if len(args) > 1 else "", inline=True)
            elif args:
                self._check_script(where, name, svc, args[0], bash=True)
        elif exe in ("python", "python3"):
            if args[:1] == ["-m"] and len(args) > 1:
                self._probe_cli(where, "module", args[1], args[2:])
            elif args[:1] == ["-c"] and len(args) > 1:
                try:
                    compile(args[1], f"<{where}>", "exec")
                except SyntaxError as exc:
                    self.report.add(where, f"python -c code does not compile: {exc}")
            elif args:
                self._check_script(where, name, svc, args[0], bash=False)
        elif exe == "airflow":
            self._check_airflow_cli(where, args)
        elif exe == "celery":
            self._check_celery(where, args)
        elif exe in self._console_scripts():
            self._probe_cli(where, "script", self._console_scripts()[exe], args)
        elif exe.startswith("/"):
            self._check_script(where, name, svc, exe, bash=False)
        else:
            self.report.add(where, f"command {exe} is neither an Airflow command nor a script or CLI of this repo")

    def _check_script(self, where: str, name: str, svc: dict[str, Any], path: str, *, bash: bool) -> None:
        local = self._container_file(name, svc, path)
        if local is None:
            self.report.add(where, f"{path} is neither copied into the image nor bind-mounted")
            return
        if not local.is_file():
            self.report.add(where, f"{path} maps to {self._rel(local)}, which does not exist")
            return
        if bash or local.suffix == ".sh":
            self._bash_syntax(where, str(local), inline=False)
            if not bash and not os.access(local, os.X_OK):
                self.report.add(where, f"{self._rel(local)} is not executable (chmod +x)")

    def _bash_syntax(self, where: str, script: str, *, inline: bool) -> None:
        argv = ["bash", "-n", "-c", script] if inline else ["bash", "-n", script]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        if proc.returncode != 0:
            self.report.add(where, f"bash syntax error: {proc.stderr.strip()}")

    def _console_scripts(self) -> dict[str, str]:
        pyproject = self.root / "pyproject.toml"
        if not pyproject.is_file():
            return {}
        data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
        scripts: dict[str, str] = data.get("project", {}).get("scripts", {})
        return scripts

    def _probe_cli(self, where: str, kind: str, target: str, args: Sequence[str]) -> None:
        """Let the CLI's own argparse parser judge the arguments, stopping before it does anything."""
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(self.root), env.get("PYTHONPATH", "")]))
        try:
            proc = subprocess.run(
                [self.python, "-c", _ARGS_PROBE, kind, target, *args],
                capture_output=True, text=True, timeout=120, cwd=self.root, env=env,
            )
        except subprocess.TimeoutExpired:
            self.report.add(where, f"{target} did not finish parsing its arguments within 120 s")
            return
        if proc.returncode != 0:
            tail = "\n".join(proc.stderr.strip().splitlines()[-3:])
            self.report.add(where, f"`{target} {' '.join(args)}` is rejected: {tail}")

    def _check_airflow_cli(self, where: str, args: list[str]) -> None:
        from airflow.cli.cli_parser import get_parser

        stderr = io.StringIO()
        try:
            with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
                get_parser().parse_args(args)
        except SystemExit as exc:
            if exc.code not in (0, None):
                message = stderr.getvalue().strip().splitlines()[-1:] or ["invalid"]
                self.report.add(where, f"`airflow {' '.join(args)}`: {message[0]}")

    def _check_celery(self, where: str, args: list[str]) -> None:
        app = None
        for i, arg in enumerate(args):
            if arg in ("--app", "-A") and i + 1 < len(args):
                app = args[i + 1]
            elif arg.startswith("--app="):
                app = arg.split("=", 1)[1]
        if app is None:
            self.report.add(where, "celery without --app")
            return
        module, _, attr = app.rpartition(".") if ":" not in app else app.replace(":", ".").rpartition(".")
        code = f"import importlib; assert hasattr(importlib.import_module({module!r}), {attr!r})"
        proc = subprocess.run([self.python, "-c", code], capture_output=True, text=True, timeout=120)
        if proc.returncode != 0:
            self.report.add(where, f"celery app {app} cannot be imported: {proc.stderr.strip().splitlines()[-1:]}")

    # -- 6. health ------------------------------------------------------------------------------------
    def check_health(self, name: str, svc: dict[str, Any], services: dict[str, Any]) -> None:
        one_shot = str(svc.get("restart", "no")) == "no"
        health = svc.get("healthcheck") or {}
        has_check = bool(health.get("test")) and not health.get("disable")
        if not one_shot and not has_check:
            self.report.add(f"service {name}", "long-running service without a healthcheck")
        depends = svc.get("depends_on") or {}
        if isinstance(depends, list):
            depends = {d: {"condition": "service_started"} for d in depends}
        for target, spec in depends.items():
            condition = (spec or {}).get("condition", "service_started")
            other = services.get(target)
            if other is None:
                self.report.add(f"service {name}", f"depends on unknown service {target}")
                continue
            other_one_shot = str(other.get("restart", "no")) == "no"
            other_health = other.get("healthcheck") or {}
            if condition == "service_healthy" and not other_health.get("test"):
                self.report.add(f"service {name}", f"waits for {target} to be healthy, but it has no healthcheck")
            if condition == "service_completed_successfully" and not other_one_shot:
                self.report.add(f"service {name}", f"waits for {target} to complete, but it restarts forever")
            if condition == "service_started" and other_one_shot:
                self.report.add(
                    f"service {name}", f"one-shot {target} should be waited for with service_completed_successfully"
                )

    # -- 7. environment -------------------------------------------------------------------------------
    def check_environment(self, name: str, svc: dict[str, Any], built_images: set[Any]) -> None:
        env = svc.get("environment") or {}
        if isinstance(env, list):
            env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
        ours = bool(svc.get("build")) or svc.get("image") in built_images
        image = "airflow" if ours else str(svc.get("image", "")).split(":")[0].split("/")[-1]
        for var in env:
            if var.startswith("AIRFLOW__"):
                self._check_airflow_option(f"service {name}", var)
            elif var not in IMAGE_ENV.get(image, set()) and not self._read_by_repo(var):
                self.report.add(f"service {name}", f"environment variable {var} is read by nothing in this repo")

    def _check_airflow_option(self, where: str, var: str) -> None:
        parts = var.split("__")
        if len(parts) != 3 or not parts[1] or not parts[2]:
            self.report.add(where, f"{var} is not of the form AIRFLOW__SECTION__KEY")
            return
        section, key = parts[1].lower(), parts[2].lower()
        from airflow.configuration import conf

        description = conf.configuration_description
        if section not in description:
            self.report.add(where, f"{var}: Airflow has no configuration section [{section}]")
            return
        options = description[section].get("options", {})
        # AIRFLOW__S__K_CMD / _SECRET read option k from a command or a secrets backend.
        candidates = {key, key.removesuffix("_cmd"), key.removesuffix("_secret")}
        if not candidates & set(options):
            self.report.add(where, f"{var}: Airflow has no option {key} in [{section}]")

    def _read_by_repo(self, var: str) -> bool:
        if self._code_text is None:
            chunks: list[str] = []
            for folder in ("deploy", "plugins", "include", "dags", "emulator"):
                base = self.root / folder
                if base.is_dir():
                    chunks.extend(p.read_text(encoding="utf-8", errors="replace")
                                  for p in sorted(base.rglob("*")) if p.suffix in _CODE_SUFFIXES and p.is_file())
            self._code_text = "\n".join(chunks)
        if re.search(rf"(?<![A-Za-z0-9_]){re.escape(var)}(?![A-Za-z0-9_])", self._code_text):
            return True
        # Settings read by name, e.g. os.environ.get(f"CONNECTIF_{name.upper()}") with "source_url" a known name.
        prefix, _, rest = var.partition("_")
        return bool(rest) and f'f"{prefix}_{{' in self._code_text and f'"{rest.lower()}"' in self._code_text

    def _rel(self, path: Path) -> str:
        with contextlib.suppress(ValueError):
            return str(path.resolve().relative_to(self.root))
        return str(path)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Validate docker-compose.yaml and what it names (no Docker engine).")
    parser.add_argument("--root", type=Path, default=REPO, help="repository root (build contexts, scripts)")
    parser.add_argument("--file", type=Path, default=None, help="compose file (default: ROOT/docker-compose.yaml)")
    parser.add_argument("--env-example", type=Path, default=None, help="default: ROOT/.env.example")
    args = parser.parse_args(argv)
    report = ComposeChecker(args.root, args.file, args.env_example).run()
    for note in report.notes:
        print(note, flush=True)
    if report.problems:
        print(f"compose-check: {len(report.problems)} problem(s):", file=sys.stderr)
        for problem in report.problems:
            print(f"  - {problem}", file=sys.stderr)
        return 1
    print("compose-check: OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
