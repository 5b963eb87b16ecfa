"""Start and stop a local ``llama_cpp.server`` for the OpenAI-compatible judge.

llama-cpp-python's server (``pip install 'llama-cpp-python[server]==0.3.36'``, built from
source in about 9 minutes) serves a GGUF file over the OpenAI-compatible HTTP API. The judge
needs it with ``--logits_all true`` (the server's logprobs come from logits kept for every
prompt position). :class:`LlamaCppServer` runs it as a subprocess on a free local port,
waits until ``/v1/models`` answers, and stops it on exit::

    with LlamaCppServer(packaged_gguf_path("qwen2.5-coder-0.5b-instruct"), threads=2) as server:
        judge = OpenAIJudge(tokenizer, server.url, model=server.alias, server="llamacpp")

Nothing here imports ``llama_cpp``: the server runs in its own interpreter.
"""

from __future__ import annotations

import importlib.util
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from types import TracebackType

__all__ = ["SERVER_MODULES", "LlamaCppServer", "ServerStartError", "free_port",
           "missing_server_modules", "wait_until_ready"]

#: Modules ``python -m llama_cpp.server`` needs (llama-cpp-python's ``[server]`` extra).
SERVER_MODULES: tuple[str, ...] = ("llama_cpp", "uvicorn", "fastapi", "sse_starlette",
                                   "starlette_context", "pydantic_settings")
INSTALL_HINT = "pip install 'llama-cpp-python[server]==0.3.36'"


class ServerStartError(RuntimeError):
    """The server exited or did not answer in time (the message holds its log's tail)."""


def missing_server_modules() -> list[str]:
    """The :data:`SERVER_MODULES` this interpreter cannot import (empty: ready to serve)."""
    return [m for m in SERVER_MODULES if importlib.util.find_spec(m) is None]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _tail(log: Path | None, chars: int = 3000) -> str:
    if log is None or not log.is_file():
        return ""
    return log.read_text(errors="replace")[-chars:]


def wait_until_ready(url: str, timeout: float, proc: subprocess.Popen | None = None,
                     log: Path | None = None) -> None:
    """Poll ``url/v1/models`` every 0.5 s until it answers 200.

    Raises:
        ServerStartError: ``proc`` exited, or ``timeout`` seconds passed (with ``log``'s tail).
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise ServerStartError(f"llama_cpp.server exited with {proc.returncode}:\n"
                                   f"{_tail(log)}")
        try:
            with urllib.request.urlopen(url + "/v1/models", timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:  # URLError, HTTPError, ConnectionRefused, timeouts
            pass
        time.sleep(0.5)
    raise ServerStartError(f"{url} not ready after {timeout:.0f} s:\n{_tail(log)}")


class LlamaCppServer:
    """``python -m llama_cpp.server`` on ``model`` (a ``.gguf`` path), as a context manager.

    Args:
        model: GGUF file (e.g. :func:`rlaif_gym.models.packaged_gguf_path` of a short name).
        alias: the model name the server reports and requests must use.
        threads: ``--n_threads`` and ``--n_threads_batch``.
        n_ctx: context length in tokens.
        port: TCP port on 127.0.0.1 (None: a free one).
        log: file for the server's stdout/stderr (None: a temporary file).
        timeout: seconds to wait for the server to answer.

    Attributes:
        url: ``http://127.0.0.1:PORT`` once started.
        start_seconds: wall time from launch to the first answer.
    """

    def __init__(self, model: str | Path, *, alias: str = "judge", threads: int = 2,
                 n_ctx: int = 4096, port: int | None = None, log: str | Path | None = None,
                 timeout: float = 600.0) -> None:
        self.model = Path(model)
        if not self.model.is_file():
            raise FileNotFoundError(f"GGUF file not found: {self.model}")
        if threads < 1 or n_ctx < 1:
            raise ValueError(f"threads and n_ctx must be >= 1, got {threads}, {n_ctx}")
        self.alias = alias
        self.threads = int(threads)
        self.n_ctx = int(n_ctx)
        self.port = port
        self.log = Path(log) if log is not None else None
        self.timeout = float(timeout)
        self.url = ""
        self.start_seconds = float("nan")
        self._proc: subprocess.Popen | None = None

    def command(self, port: int) -> list[str]:
        """The server's command line."""
        threads = str(self.threads)
        return [sys.executable, "-m", "llama_cpp.server", "--model", str(self.model),
                "--host", "127.0.0.1", "--port", str(port), "--logits_all", "true",
                "--n_ctx", str(self.n_ctx), "--n_threads", threads,
                "--n_threads_batch", threads, "--model_alias", self.alias,
                "--verbose", "false"]

    def start(self) -> LlamaCppServer:
        """Launch the server and wait until it answers (stops it again on failure)."""
        missing = missing_server_modules()
        if missing:
            raise ServerStartError(f"llama-cpp-python server not installed (missing "
                                   f"{', '.join(missing)}): {INSTALL_HINT}")
        port = self.port or free_port()
        if self.log is None:
            self.log = Path(tempfile.mkdtemp(prefix="llamacpp-")) / "server.log"
        started = time.perf_counter()
        with open(self.log, "wb") as out:
            self._proc = subprocess.Popen(self.command(port), stdout=out,
                                          stderr=subprocess.STDOUT)
        self.url = f"http://127.0.0.1:{port}"
        try:
            wait_until_ready(self.url, self.timeout, self._proc, self.log)
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.perf_counter() - started
        return self

    def stop(self) -> None:
        """Terminate the server (kill it after 20 s); safe to call twice."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=20)

    def __enter__(self) -> LlamaCppServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
