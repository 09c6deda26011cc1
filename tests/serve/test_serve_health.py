"""Start-up states: /health and the API say 503 while the models load, 200 once ready; a checkpoint that
fails to load after the server started makes `miniglm serve` exit 2 with one line."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import httpx
import pytest
from serve_helpers import make_checkpoint

from miniglm.checkpoint import CheckpointError
from miniglm.config import SampleConfig
from miniglm.serve.app import ServerSettings, create_app
from miniglm.serve.models import Registry, parse_model_specs

CPU = SampleConfig(device="cpu", dtype="float32")


def get(app, path: str) -> httpx.Response:
    async def request():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
            return await client.get(path)
    return asyncio.run(request())


def test_health_is_503_while_loading_and_200_when_ready(tmp_path):
    registry = Registry(parse_model_specs([f"m={make_checkpoint(tmp_path, 'm')}"]), CPU)
    app = create_app(registry, ServerSettings())
    loading = get(app, "/health")
    assert loading.status_code == 503 and loading.json() == {"status": "loading", "models": {}}
    models = get(app, "/v1/models")
    assert models.status_code == 503 and models.json()["error"]["code"] == "not_ready"
    registry.load()
    try:
        ready = get(app, "/health")
        assert ready.status_code == 200 and ready.json()["status"] == "ready"
        assert ready.json()["models"]["m"]["running"] == 0
        assert [m["id"] for m in get(app, "/v1/models").json()["data"]] == ["m"]
    finally:
        registry.close()


def test_a_model_that_fails_to_load_fails_health_and_the_command(tmp_path):
    run = make_checkpoint(tmp_path, "broken")
    (run / "checkpoints" / "step_0000001" / "model.safetensors").write_bytes(b"not safetensors")
    registry = Registry(parse_model_specs([str(run)]), CPU)  # metadata is fine: the weights fail later
    app = create_app(registry, ServerSettings())
    with pytest.raises(CheckpointError, match="unreadable weights"):
        registry.load()
    health = get(app, "/health")
    assert health.status_code == 503 and health.json() == {"status": "failed", "models": {}}
    models = get(app, "/v1/models")  # behind the key (none here): the reason is given
    assert models.status_code == 503 and "unreadable weights" in models.json()["error"]["message"]
    # in a process of its own: uvicorn installs logging handlers and signal handlers of its own
    proc = subprocess.run([sys.executable, "-m", "miniglm", "serve", str(run), "--port", "0", "--device", "cpu"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert "listening on http://127.0.0.1:" in proc.stdout
    assert proc.stderr.startswith("miniglm serve: error: could not load the models:") and proc.stderr.count("\n") == 1
    assert "unreadable weights" in proc.stderr
