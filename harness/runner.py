"""The one seam through which the harness runs commands and host-side HTTP.

kind, docker, `docker exec` into nodes and `kubectl` all go through a Runner,
so every command is logged (DEBUG, pasteable into a shell), timed, and can be
replaced by `FakeRunner` in unit tests. Modelled on kind's exec.Cmder.
Engine calls through the docker SDK (containers, networks, images) go through
`Runner.engine`, with a client for the engine this runner's environment names
(DOCKER_HOST and its TLS settings), logged and timed the same way. The docker
CLI stays for `docker exec` (the SDK's exec has no timeout) and for kind.
HTTP requests the host itself sends (kube-proxy's metrics and health
endpoints on a node's address) go through `Runner.http`, logged and timed the
same way, through `requests`.
"""
from __future__ import annotations

import copy
import logging
import os
import shlex
import subprocess
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence, TypeVar

T = TypeVar("T")

log = logging.getLogger(__name__)


@dataclass
class Result:
    argv: list[str]
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def ok(self) -> bool:
        return self.returncode == 0


class CommandError(RuntimeError):
    """A command failed: says what ran, how it ended and the tail of its output."""

    def __init__(self, result: Result, what: str = ""):
        self.result = result
        tail = (result.stderr.strip() or result.stdout.strip())[-2000:]
        head = f"{what}: " if what else ""
        super().__init__(f"{head}command failed (exit {result.returncode} after "
                         f"{result.seconds:.1f}s): {shlex.join(result.argv)}\n{tail}")


class EngineError(RuntimeError):
    """An engine call through the docker SDK failed: what was asked, which engine, what it said."""

    def __init__(self, what: str, where: str, error: Exception, seconds: float):
        self.error = error
        super().__init__(f"{what} on the {where} engine failed after {seconds:.1f}s: "
                         f"{type(error).__name__}: {error}")


_CLIENTS: dict = {}
DOCKER_API_VERSION = "1.41"


def _docker_client(env: dict, timeout: float):
    """A docker SDK client for the engine `env` names (DOCKER_HOST, DOCKER_TLS_VERIFY, DOCKER_CERT_PATH;
    none: the local socket); one per engine and timeout, per process."""
    import docker
    key = (tuple(sorted((k, v) for k, v in env.items() if k.startswith("DOCKER_"))), timeout, os.getpid())
    if key not in _CLIENTS:
        # A fixed API version: "auto" would ask the engine at once, before trust_env is off below.
        # 1.41 is the guest's dockerd (20.10); the host's newer engine still serves it.
        client = docker.from_env(environment=dict(key[0]), timeout=int(timeout), version=DOCKER_API_VERSION)
        # requests would let REQUESTS_CA_BUNDLE (or a proxy variable) replace the engine's own CA
        # (and route engine calls elsewhere): the engine's TLS settings are the only ones that count.
        client.api.trust_env = False
        _CLIENTS[key] = client
    return _CLIENTS[key]


@dataclass
class HttpResult:
    url: str
    status: int            # 0 when no HTTP answer came (connection refused, timeout)
    text: str
    seconds: float
    error: str = ""

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


class HttpError(RuntimeError):
    """A host-side HTTP request failed: says what was asked, what came back and how long it took."""

    def __init__(self, res: HttpResult, what: str = ""):
        self.result = res
        head = f"{what}: " if what else ""
        seen = f"HTTP {res.status}" if res.status else res.error
        super().__init__(f"{head}GET {res.url} failed after {res.seconds:.2f}s: {seen}\n{res.text[-500:]}")


class Runner:
    """Runs host commands. `check=True` raises CommandError on non-zero exit.

    A Runner may carry extra environment for every command, e.g. the
    DOCKER_HOST of a guest's Docker engine (harness.guest): docker and kind
    through it reach that engine. `where` names the engine for reports.
    """
    env: dict = {}
    where: str = "host"

    def on_engine(self, env: dict, where: str) -> "Runner":
        """A copy of this runner whose commands run with `env` (e.g. DOCKER_HOST)."""
        other = copy.copy(self)
        other.env = {**self.env, **env}
        other.where = where
        return other

    def engine(self, what: str, call: Callable[[Any], T], *, check: bool = True, default: Any = None,
               timeout: float = 120) -> T:
        """`call(client)` with a docker SDK client of this runner's engine: logged and timed like a
        command. `check=False` returns `default` instead of raising EngineError."""
        log.debug("engine (%s): %s", self.where, what)
        started = time.monotonic()
        try:
            out = call(_docker_client(self.env, timeout))
        except Exception as e:  # noqa: BLE001 - the SDK raises requests' and its own errors
            seconds = time.monotonic() - started
            log.debug("  -> %s in %.2fs", type(e).__name__, seconds)
            if check:
                raise EngineError(what, self.where, e, seconds) from e
            return default
        log.debug("  -> ok in %.2fs", time.monotonic() - started)
        return out

    def http(self, url: str, *, timeout: float = 5.0, check: bool = True, what: str = "") -> HttpResult:
        """GET `url` from this host (never through a proxy from the environment)."""
        import requests  # only host-side HTTP needs it
        log.debug("GET %s", url)
        started = time.monotonic()
        try:
            with requests.Session() as s:
                s.trust_env = False  # an HTTP(S)_PROXY variable must not route cluster traffic elsewhere
                r = s.get(url, timeout=timeout)
            res = HttpResult(url, r.status_code, r.text, time.monotonic() - started)
        except requests.RequestException as e:
            res = HttpResult(url, 0, "", time.monotonic() - started, error=f"{type(e).__name__}: {e}")
        log.debug("  -> %s in %.2fs", res.status or res.error, res.seconds)
        if check and not res.ok:
            raise HttpError(res, what)
        return res

    def run(self, argv: Sequence[str], *, input: str | None = None, timeout: float | None = 600,
            check: bool = True, env: dict | None = None, cwd: str | None = None,
            what: str = "", output: str | os.PathLike | None = None, stream: bool = False,
            passthrough: bool = False) -> Result:
        """`output`: a file that gets stdout and stderr as they come (long runs you can tail);
        the Result then holds only the output's last 2000 characters, as stderr.
        `stream`: each line of output is also a progress line (harness.progress) as it comes.
        `passthrough`: the command writes to this process's own stdout and stderr (a run the user
        watches, e.g. pytest per release); the Result holds no output."""
        argv = [str(a) for a in argv]
        prefix = "".join(f"{k}={shlex.quote(v)} " for k, v in self.env.items())
        log.debug("$ %s%s%s", prefix, shlex.join(argv), f" >{output} 2>&1" if output else "")
        started = time.monotonic()
        env = {**self.env, **(env or {})}
        full_env = {**os.environ, **env} if env else None
        try:
            if passthrough:
                p = _run_passthrough(argv, timeout, full_env, cwd)
            elif stream and output is None:
                p = _run_streaming(argv, input, timeout, full_env, cwd)
            elif output is None:
                p = subprocess.run(argv, input=input, capture_output=True, text=True,
                                   timeout=timeout, env=full_env, cwd=cwd)
            else:
                with open(output, "w") as out:
                    p = subprocess.run(argv, input=input, stdout=out, stderr=subprocess.STDOUT, text=True,
                                       timeout=timeout, env=full_env, cwd=cwd)
                with open(output, "rb") as out:
                    out.seek(max(0, os.path.getsize(output) - 2000))
                    p.stdout, p.stderr = "", out.read().decode(errors="replace")
            res = Result(argv, p.returncode, p.stdout, p.stderr, time.monotonic() - started)
        except subprocess.TimeoutExpired as e:
            out = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
            err = e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else (e.stderr or "")
            res = Result(argv, 124, out, err + f"\n(timed out after {timeout}s)", time.monotonic() - started)
        except FileNotFoundError:
            res = Result(argv, 127, "", f"{argv[0]}: command not found", 0.0)
        log.debug("  -> exit %d in %.2fs", res.returncode, res.seconds)
        if check and not res.ok:
            raise CommandError(res, what)
        return res


def _run_passthrough(argv, timeout, env, cwd) -> subprocess.CompletedProcess:
    """The command writes to our own stdout and stderr. A SIGTERM to us is passed on to it, and a
    Ctrl-C (which the terminal sends it too) waits for it: either way it can clean up and exit,
    and its exit code is returned."""
    import signal
    import threading
    started: list[subprocess.Popen] = []
    early: list[int] = []  # a signal that came before the command had started

    def forward(signum, frame):
        if started:
            started[0].send_signal(signum)
        else:
            early.append(signum)

    forwarding = threading.current_thread() is threading.main_thread()
    if forwarding:
        previous = signal.signal(signal.SIGTERM, forward)
    try:
        proc = subprocess.Popen(argv, env=env, cwd=cwd)
        started.append(proc)
        for signum in early:
            proc.send_signal(signum)
        try:
            proc.wait(timeout=timeout)
        except KeyboardInterrupt:
            proc.wait()
        except subprocess.TimeoutExpired:
            proc.terminate()
            proc.wait()
            raise
    finally:
        if forwarding:
            signal.signal(signal.SIGTERM, previous)
    return subprocess.CompletedProcess(argv, proc.returncode, "", "")


def _run_streaming(argv, input, timeout, env, cwd) -> subprocess.CompletedProcess:
    """subprocess.run with stdout and stderr merged and each line emitted as progress as it comes."""
    import threading
    from . import progress
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=cwd)
    lines: list[str] = []

    def read() -> None:
        for line in proc.stdout:
            lines.append(line)
            if line.strip():
                progress.emit(f"   {argv[0].rsplit('/', 1)[-1]}: {line.strip()}")
    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    if input is not None:
        proc.stdin.write(input)
        proc.stdin.close()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        reader.join(5)
        raise subprocess.TimeoutExpired(argv, timeout, output="".join(lines), stderr="")
    reader.join(5)
    return subprocess.CompletedProcess(argv, proc.returncode, "", "".join(lines))


@dataclass
class FakeRunner(Runner):
    """Records argv and answers from a script: [(predicate or argv-prefix, Result-ish)]."""
    responses: list = field(default_factory=list)
    http_responses: list = field(default_factory=list)
    engine_responses: list = field(default_factory=list)
    calls: list[list[str]] = field(default_factory=list)

    def on_api(self, what_prefix: str, value: Any = None, error: Exception | None = None) -> "FakeRunner":
        """Answer engine calls whose description starts with `what_prefix` (recorded as ["engine", what])."""
        self.engine_responses.append((what_prefix, value, error))
        return self

    def engine(self, what, call, *, check=True, default=None, timeout=120):
        self.calls.append(["engine", what])
        for prefix, value, error in self.engine_responses:
            if what.startswith(prefix):
                if error is None:
                    return value
                if check:
                    raise EngineError(what, self.where, error, 0.0)
                return default
        return default

    def on(self, prefix: Sequence[str] | Callable[[list[str]], bool], stdout: str = "",
           returncode: int = 0, stderr: str = "") -> "FakeRunner":
        self.responses.append((prefix, stdout, returncode, stderr))
        return self

    def on_http(self, url_prefix: str, text: str = "", status: int = 200) -> "FakeRunner":
        """Answer GETs whose URL starts with `url_prefix` (recorded in `calls` as ["GET", url])."""
        self.http_responses.append((url_prefix, text, status))
        return self

    def http(self, url, *, timeout=5.0, check=True, what=""):
        self.calls.append(["GET", url])
        for prefix, text, status in self.http_responses:
            if url.startswith(prefix):
                res = HttpResult(url, status, text, 0.0)
                break
        else:
            res = HttpResult(url, 0, "", 0.0, error="no fake answer")
        if check and not res.ok:
            raise HttpError(res, what)
        return res

    def run(self, argv, *, input=None, timeout=None, check=True, env=None, cwd=None, what="", output=None,
            stream=False, passthrough=False):
        argv = [str(a) for a in argv]
        self.calls.append(argv)
        for prefix, stdout, rc, stderr in self.responses:
            hit = prefix(argv) if callable(prefix) else argv[:len(prefix)] == list(prefix)
            if hit:
                res = Result(argv, rc, stdout, stderr, 0.0)
                break
        else:
            res = Result(argv, 0, "", "", 0.0)
        if check and not res.ok:
            raise CommandError(res, what)
        return res


DEFAULT = Runner()


class Step:
    """A long step with a status line and its time: `with Step("building node image"):`.

    Logs at INFO (shown live under pytest via log_cli), and records its time for the run's
    timing table (harness.progress.record_step).
    """

    def __init__(self, title: str):
        self.title = title
        self.seconds = 0.0
        self.failed = False  # set by a step that ends without an exception but did not succeed

    def __enter__(self):
        self._t0 = time.monotonic()
        _status(f" • {self.title} ...")
        return self

    def __exit__(self, exc_type, exc, tb):
        self.seconds = time.monotonic() - self._t0
        ok = exc_type is None and not self.failed
        _status(f" {'✓' if ok else '✗'} {self.title} ({self.seconds:.1f}s)")
        from . import progress
        progress.record_step(self.title, self.seconds, ok)
        return False


def _status(line: str) -> None:
    # Under pytest these show live through log_cli (see pyproject.toml), and from xdist workers
    # through the controller's progress tail (harness.progress).
    from . import progress
    progress.emit(line.strip())
