"""Starting and stopping a real `tritonserver` on loopback.

Where the binary comes from, in order: `--tritonserver` / `$GRIFFIN_TRITONSERVER`, the binary the
`nvidia-pytriton` wheel ships (CPU hosts: Python back end only), a system `tritonserver` on PATH or in
`/opt/tritonserver` (GPU hosts, NGC containers).

For the pytriton binary we assemble a back-end folder of our own: symlinks to the wheel's
`backends/python` files plus the Python back-end stub built for the running interpreter (a stub copied
outside the wheel cannot find its bundled libraries; a symlink resolves `$ORIGIN` to the wheel). The
stub embeds libpython, so the child gets this venv's `bin` first on PATH and the base interpreter's
libdir on LD_LIBRARY_PATH.

Module-level imports are stdlib only: `griffin-trt serve` and the client never pay for torch here.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

LOOPBACK = "127.0.0.1"
DEFAULT_RECIPE = Path(__file__).resolve().parents[2] / "build" / "demo.toml"
# How long tritonserver waits for in-flight requests when asked to stop (its own default is 30 s). A
# streamed request that tritonserver 2.51 refuses and the client then cancels is never released and
# keeps its model "live", so every shutdown waits this long after one: keep it short (README, "Bad input").
EXIT_TIMEOUT_S = 10
PR_SET_PDEATHSIG = 1


class ServerError(RuntimeError):
    """tritonserver cannot be found, cannot run here, or did not become ready (log tail included)."""


@dataclass(frozen=True)
class TritonInstall:
    binary: Path
    backends: Path  # the wheel's or the system's back-end folder
    source: str  # "pytriton" | "system" | "explicit"
    stub: Path | None = None  # pytriton: the stub matching this interpreter


def _glibc_ok(minimum: tuple[int, int] = (2, 35)) -> tuple[bool, str]:
    try:
        name = os.confstr("CS_GNU_LIBC_VERSION") or ""
    except (ValueError, OSError):
        name = ""
    parts = name.split()
    if len(parts) != 2 or parts[0] != "glibc":
        return False, name or "unknown libc"
    try:
        ver = tuple(int(x) for x in parts[1].split(".")[:2])
    except ValueError:
        return False, name
    return ver >= minimum, name


def _pytriton_install() -> TritonInstall | None:
    spec = importlib.util.find_spec("pytriton")  # locates the wheel without importing it
    if spec is None or not spec.submodule_search_locations:
        return None
    root = Path(list(spec.submodule_search_locations)[0]) / "tritonserver"
    binary = root / "bin" / "tritonserver"
    if not binary.is_file():
        return None
    ver = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = root / "python_backend_stubs" / ver / "triton_python_backend_stub"
    return TritonInstall(binary=binary, backends=root / "backends", source="pytriton", stub=stub)


def find_tritonserver(explicit: str | os.PathLike | None = None) -> TritonInstall:
    """The tritonserver to run; raises ServerError naming what was looked for."""
    explicit = explicit or os.environ.get("GRIFFIN_TRITONSERVER")
    if explicit:
        b = Path(explicit).expanduser().resolve()
        if not b.is_file() or not os.access(b, os.X_OK):
            raise ServerError(f"tritonserver {b} is not an executable file")
        backends = b.parent.parent / "backends"
        return TritonInstall(binary=b, backends=backends, source="explicit")
    inst = _pytriton_install()
    if inst is not None:
        return inst
    for cand in (shutil.which("tritonserver"), "/opt/tritonserver/bin/tritonserver"):
        if cand and Path(cand).is_file():
            b = Path(cand).resolve()
            return TritonInstall(binary=b, backends=b.parent.parent / "backends", source="system")
    raise ServerError(
        "no tritonserver found: install the serve extra (`pip install -e .[serve]`, ships a CPU "
        "tritonserver in nvidia-pytriton), put tritonserver on PATH, or set GRIFFIN_TRITONSERVER"
    )


def check_runnable(inst: TritonInstall) -> None:
    """Raise ServerError with the reason this install cannot serve our Python models here."""
    if inst.source != "pytriton":
        return
    ok, libc = _glibc_ok()
    if not ok:
        raise ServerError(f"the pytriton tritonserver needs glibc >= 2.35, this host has {libc}")
    if inst.stub is None or not inst.stub.is_file():
        raise ServerError(
            f"nvidia-pytriton ships no Python back-end stub for Python "
            f"{sys.version_info.major}.{sys.version_info.minor} (looked for {inst.stub})"
        )
    if not sysconfig.get_config_var("Py_ENABLE_SHARED"):
        raise ServerError(
            "the Python back-end stub embeds libpython, but this interpreter is not a shared-library "
            "build (Py_ENABLE_SHARED=0); use a Python built with --enable-shared"
        )


def make_backend_dir(inst: TritonInstall, where: Path) -> Path:
    """A back-end folder for `--backend-directory`: pytriton's python back end + the matching stub."""
    if inst.source != "pytriton":
        return inst.backends
    py = where / "python"
    py.mkdir(parents=True, exist_ok=True)
    src = inst.backends / "python"
    for f in src.iterdir():
        if f.name == "__pycache__":
            continue
        link = py / f.name
        if not link.exists():
            link.symlink_to(f)
    stub = py / "triton_python_backend_stub"
    if not stub.exists():
        stub.symlink_to(inst.stub)
    return where


def server_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """PATH with this venv's bin first; LD_LIBRARY_PATH with the base interpreter's libdir."""
    env = dict(os.environ if base is None else base)
    bindir = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join([bindir] + [p for p in env.get("PATH", "").split(os.pathsep) if p and p != bindir])
    libdir = sysconfig.get_config_var("LIBDIR")
    if libdir:
        rest = [p for p in env.get("LD_LIBRARY_PATH", "").split(os.pathsep) if p and p != libdir]
        env["LD_LIBRARY_PATH"] = os.pathsep.join([libdir] + rest)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def free_ports(n: int) -> list[int]:
    """n distinct free TCP ports on loopback (held open together so they differ)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((LOOPBACK, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _die_with_parent():
    """A preexec_fn: the child gets SIGTERM when the thread that started it dies, even by SIGKILL (Linux).

    Everything is looked up here, in the parent: after fork the child only calls prctl (no imports, no
    locks that another thread may hold). None where prctl is not available.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return lambda: prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM))


def _http_ok(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status == 200
    except (urllib.error.URLError, ConnectionError, OSError):
        return False


@dataclass
class TritonServer:
    """One tritonserver child process on loopback ports; use as a context manager or start()/stop().

    The child gets SIGTERM when the thread that called start() ends: start it from a thread that lives
    as long as the server should.
    """

    model_repository: Path
    grpc_port: int | None = None
    http_port: int | None = None
    metrics_port: int | None = None
    tritonserver: str | None = None
    log_path: Path | None = None
    log_verbose: int = 0
    exit_timeout_s: int = EXIT_TIMEOUT_S
    extra_args: list[str] = field(default_factory=list)
    proc: subprocess.Popen | None = None
    _workdir: tempfile.TemporaryDirectory | None = None
    _log_file: object | None = None

    @property
    def grpc_url(self) -> str:
        return f"{LOOPBACK}:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"http://{LOOPBACK}:{self.http_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{LOOPBACK}:{self.metrics_port}/metrics"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def command(self, backend_dir: Path) -> list[str]:
        inst = self._inst
        return [
            str(inst.binary),
            "--model-repository", str(self.model_repository),
            "--backend-directory", str(backend_dir),
            "--http-address", LOOPBACK, "--http-port", str(self.http_port),
            "--grpc-address", LOOPBACK, "--grpc-port", str(self.grpc_port),
            "--metrics-address", LOOPBACK, "--metrics-port", str(self.metrics_port),
            "--allow-metrics", "true", "--allow-gpu-metrics", "false",
            "--strict-readiness", "true", "--exit-on-error", "true",
            "--exit-timeout-secs", str(int(self.exit_timeout_s)),
            "--log-verbose", str(self.log_verbose),
            *self.extra_args,
        ]

    def start(self, timeout: float = 180.0) -> "TritonServer":
        repo = Path(self.model_repository)
        if not repo.is_dir():
            raise ServerError(f"model repository {repo} does not exist (run `griffin-trt build` first)")
        self._inst = find_tritonserver(self.tritonserver)
        check_runnable(self._inst)
        ports = free_ports(3)
        self.grpc_port = self.grpc_port or ports[0]
        self.http_port = self.http_port or ports[1]
        self.metrics_port = self.metrics_port or ports[2]
        self._workdir = tempfile.TemporaryDirectory(prefix="griffin-triton-")
        backend_dir = make_backend_dir(self._inst, Path(self._workdir.name) / "backends")
        if self.log_path is None:
            self.log_path = Path(self._workdir.name) / "tritonserver.log"
        self._log_file = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            self.command(backend_dir),
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=server_env(),
            start_new_session=True,  # its own process group: stop() reaches the back-end stubs too
            preexec_fn=_die_with_parent(),  # so a killed `griffin-trt serve` leaves no server behind
        )
        try:
            self.wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def log_tail(self, n: int = 40) -> str:
        try:
            lines = Path(self.log_path).read_text(errors="replace").splitlines()
        except (OSError, TypeError):
            return ""
        return "\n".join(lines[-n:])

    def wait_ready(self, timeout: float = 180.0) -> None:
        deadline = time.monotonic() + timeout
        url = f"{self.http_url}/v2/health/ready"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServerError(
                    f"tritonserver exited with code {self.proc.returncode} before it was ready; log tail:\n"
                    + self.log_tail()
                )
            if _http_ok(url):
                return
            time.sleep(0.25)
        raise ServerError(f"tritonserver not ready after {timeout:.0f} s; log tail:\n" + self.log_tail())

    def is_alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float | None = None) -> None:
        """SIGTERM the server's own process group (by its pid), SIGKILL after `timeout`
        (default: tritonserver's exit timeout + 15 s)."""
        timeout = self.exit_timeout_s + 15.0 if timeout is None else timeout
        if self.proc is not None and self.proc.poll() is None:
            pgid = self.proc.pid  # start_new_session: the group id is the child's pid
            try:
                os.killpg(pgid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
            # Whatever is left in the group (tritonserver past its timeout; back-end stubs still loading a
            # model when tritonserver stopped, which outlive it otherwise) is ours: SIGKILL it.
            try:
                os.killpg(pgid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(10)
            deadline = time.monotonic() + 10  # until the group is gone (and its ports with it)
            while time.monotonic() < deadline:
                try:
                    os.killpg(pgid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.05)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        if self._workdir is not None:
            keep = self.log_path and Path(self._workdir.name) in Path(self.log_path).parents
            if keep and self.proc is not None and self.proc.returncode not in (0, None, -signal.SIGTERM):
                pass  # leave the log of a crashed server where the error message pointed
            else:
                self._workdir.cleanup()
            self._workdir = None

    def __enter__(self) -> "TritonServer":
        return self.start() if self.proc is None else self

    def __exit__(self, *exc) -> None:
        self.stop()


# ---------------------------------------------------------------- CLI: griffin-trt serve


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "serve",
        help="start tritonserver on the built model repository (loopback, gRPC + HTTP + metrics)",
        description="Start tritonserver on <build-dir>/triton_repo and serve until Ctrl-C.",
    )
    p.add_argument("--recipe", default=str(DEFAULT_RECIPE), help="build recipe (default: build/demo.toml)")
    p.add_argument("--build-dir", default=None, help="build output folder (default: the recipe's output_dir)")
    p.add_argument("--grpc-port", type=int, default=8001)
    p.add_argument("--http-port", type=int, default=8000)
    p.add_argument("--metrics-port", type=int, default=8002)
    p.add_argument("--tritonserver", default=None, help="tritonserver binary (default: pytriton's, then PATH)")
    p.add_argument("--log-verbose", type=int, default=0)
    p.add_argument("--exit-timeout", type=int, default=EXIT_TIMEOUT_S,
                   help=f"seconds tritonserver waits for in-flight requests when stopping (default {EXIT_TIMEOUT_S})")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for readiness")
    p.add_argument("--openai-port", type=int, default=None,
                   help="also serve OpenAI's API (/v1/completions, /v1/chat/completions, /v1/models) on this "
                        "port, forwarding to the running models (needs the openai extra)")
    p.add_argument("--openai-host", default=LOOPBACK, help=f"address of the OpenAI endpoint (default {LOOPBACK})")
    p.set_defaults(func=run_serve, handler=run_serve)
    return p


def repository_for(recipe, build_dir: str | os.PathLike | None = None) -> Path:
    """The filled repository of a build; fills it from the templates when only it is missing."""
    from .repository import fill_repository

    out = Path(build_dir) if build_dir else Path(recipe.output_dir)
    repo = out / "triton_repo"
    if not (repo / "griffin" / "config.pbtxt").is_file():
        if recipe.backend != "torch" and not (out / "manifest.json").is_file():
            raise ServerError(
                f"{out} holds no build (no manifest.json, no triton_repo): run "
                f"`griffin-trt build --recipe {recipe.source or '<recipe>'}` first"
            )
        repo = fill_repository(recipe, out)
    return repo


def _openai_server(args: argparse.Namespace, recipe, repo: Path, grpc_url: str):
    """The OpenAI endpoint beside tritonserver, or None without --openai-port."""
    if args.openai_port is None:
        return None
    try:
        from .openai.runner import OpenAIServer, served_model
    except ModuleNotFoundError as e:
        raise ServerError(f"--openai-port needs the openai extra (`pip install -e .[openai]`): {e}") from None
    return OpenAIServer(served_model(recipe, repo.parent), grpc_url, args.openai_host, args.openai_port).start()


def run_serve(args: argparse.Namespace) -> int:
    from ..recipe import load_recipe

    recipe = load_recipe(args.recipe)
    try:
        repo = repository_for(recipe, args.build_dir)
    except ServerError as e:
        print(f"griffin-trt serve: error: {e}", file=sys.stderr)
        return 1
    if args.openai_port is not None and not 0 < args.openai_port < 65536:
        print(f"griffin-trt serve: error: --openai-port must be in [1, 65535], got {args.openai_port}", file=sys.stderr)
        return 2
    server = TritonServer(
        repo,
        grpc_port=args.grpc_port,
        http_port=args.http_port,
        metrics_port=args.metrics_port,
        tritonserver=args.tritonserver,
        log_verbose=args.log_verbose,
        exit_timeout_s=args.exit_timeout,
    )
    print(f"starting tritonserver on {repo} ...", flush=True)

    def _terminate(*_):  # SIGTERM stops like Ctrl-C, during the 5-15 s start as well as while serving
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, _terminate)
    ready = False
    code = None
    openai = None
    try:
        server.start(timeout=args.timeout)  # stops the child itself if interrupted before ready
        openai = _openai_server(args, recipe, repo, server.grpc_url)
        ready = True
        print(
            f"ready: gRPC {server.grpc_url}  HTTP {server.http_url}  metrics {server.metrics_url}  "
            + (f"OpenAI {openai.url}  " if openai else "")
            + f"(pid {server.pid}, log {server.log_path}); Ctrl-C stops",
            flush=True,
        )
        while server.is_alive() and (openai is None or openai.is_alive()):
            time.sleep(0.5)
        code = server.proc.returncode
        if code is None:  # tritonserver still runs: the OpenAI endpoint's thread ended
            print("griffin-trt serve: error: the OpenAI endpoint stopped; stopping tritonserver", file=sys.stderr)
            return 1  # after the finally block below has stopped tritonserver
    except ServerError as e:
        print(f"griffin-trt serve: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("stopping tritonserver ...", file=sys.stderr, flush=True)
    finally:
        # A second Ctrl-C / SIGTERM must not cut the stop short (it ends in SIGKILL after the exit timeout).
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)
        try:
            if openai is not None:
                openai.stop()
            server.stop()
        finally:
            signal.signal(signal.SIGINT, signal.default_int_handler)
            signal.signal(signal.SIGTERM, previous)
    if code not in (None, 0):
        print(f"tritonserver exited with code {code}; log tail:\n{server.log_tail()}", file=sys.stderr)
        return 1
    return 0 if ready else 130
