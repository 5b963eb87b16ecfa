"""rewards.judges.llamacpp_server: starting, waiting for and stopping a judge server process
(with stand-in processes, so no llama-cpp-python is needed)."""

from __future__ import annotations

import sys
import textwrap
import urllib.request

import pytest

from rewards.judges import llamacpp_server
from rewards.judges.llamacpp_server import LlamaCppServer, ServerStartError

FAKE_SERVER = textwrap.dedent("""
    import http.server, sys
    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200 if self.path == "/v1/models" else 404)
            self.end_headers()
            self.wfile.write(b'{"data": []}')
        def log_message(self, *args):
            pass
    http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
""")


@pytest.fixture
def gguf(tmp_path):
    path = tmp_path / "model.gguf"
    path.write_bytes(b"GGUF")
    return path


@pytest.fixture(autouse=True)
def server_modules_present(monkeypatch):
    monkeypatch.setattr(llamacpp_server, "missing_server_modules", lambda: [])


def test_server_starts_answers_and_stops(monkeypatch, gguf, tmp_path):
    monkeypatch.setattr(LlamaCppServer, "command",
                        lambda self, port: [sys.executable, "-c", FAKE_SERVER, str(port)])
    with LlamaCppServer(gguf, alias="m", log=tmp_path / "log", timeout=30) as server:
        assert server.url.startswith("http://127.0.0.1:")
        with urllib.request.urlopen(server.url + "/v1/models", timeout=5) as response:
            assert response.status == 200
        proc = server._proc
        assert server.start_seconds > 0
    assert proc.poll() is not None  # stopped on exit
    server.stop()  # twice is fine


def test_a_server_that_exits_raises_with_its_log(monkeypatch, gguf, tmp_path):
    monkeypatch.setattr(LlamaCppServer, "command", lambda self, port: [
        sys.executable, "-c", "import sys; print('bad model file'); sys.exit(3)"])
    with pytest.raises(ServerStartError, match="(?s)exited with 3.*bad model file"):
        LlamaCppServer(gguf, log=tmp_path / "log", timeout=30).start()


def test_a_server_that_never_answers_times_out_and_is_stopped(monkeypatch, gguf, tmp_path):
    monkeypatch.setattr(LlamaCppServer, "command", lambda self, port: [
        sys.executable, "-c", "import time; time.sleep(60)"])
    server = LlamaCppServer(gguf, log=tmp_path / "log", timeout=1.5)
    with pytest.raises(ServerStartError, match="not ready after 2 s"):
        server.start()
    assert server._proc is None


def test_missing_install_or_file_is_a_clear_error(monkeypatch, gguf, tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.gguf"):
        LlamaCppServer(tmp_path / "nowhere.gguf")
    monkeypatch.setattr(llamacpp_server, "missing_server_modules", lambda: ["uvicorn"])
    with pytest.raises(ServerStartError, match=r"uvicorn.*pip install 'llama-cpp-python\[server\]"):
        LlamaCppServer(gguf).start()


def test_server_command_keeps_logits_for_every_position(gguf):
    cmd = LlamaCppServer(gguf, alias="judge", threads=3, n_ctx=2048).command(8123)
    text = " ".join(cmd)
    for part in ("-m llama_cpp.server", "--logits_all true", "--port 8123", "--n_ctx 2048",
                 "--n_threads 3", "--n_threads_batch 3", "--model_alias judge"):
        assert part in text
