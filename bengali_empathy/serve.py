"""Serve the fine-tuned model through an existing engine with an OpenAI-compatible API (transformers serve).

    python test_model.py serve --preset demo --port 8000           # http://127.0.0.1:8000/v1, the demo adapter merged
    python test_model.py batch --preset demo --api-base http://127.0.0.1:8000/v1 --greedy    # talk to it

`transformers serve` cannot load a PEFT adapter folder, so the adapter is first exported as a merged bf16
folder (export.export_merged: chat template with our system prompt, stop tokens and decoding defaults in
generation_config.json), reused while the adapter is unchanged. The server binds to 127.0.0.1: it has no
authentication, so another address is refused (put an authenticating proxy in front, or use vLLM's
--api-key; README). The safety layer runs in the client (--api-base), not in the server.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from .config import Config
from .errors import ConfigError

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
DEFAULT_PORT = 8000


def check_host(host: str) -> None:
    if host not in LOCAL_HOSTS:
        raise ConfigError(f"--host {host}: transformers serve has no authentication, so it serves this machine only "
                          "(127.0.0.1); for other machines put an authenticating reverse proxy in front, or run "
                          "vLLM with --api-key (README)")


def merged_folder(cfg: Config, adapter_dir: Path | None, out: Path | None = None) -> Path:
    """The folder to serve: the base model's (no adapter), or the adapter exported merged (reused if current)."""
    from . import export
    from .model import resolve_model_path

    if adapter_dir is None:
        return Path(resolve_model_path(cfg))
    target = out or adapter_dir.parent / f"{adapter_dir.name}-merged"
    if export.up_to_date(target, adapter_dir, cfg):
        print(f"serving the earlier export {target} (the adapter is unchanged)", file=sys.stderr, flush=True)
        return target
    print(f"exporting {adapter_dir} merged into {target} (transformers serve does not load adapter folders) ...",
          file=sys.stderr, flush=True)
    export.export_merged(cfg, adapter_dir, target)
    return target


def serve_command(folder: Path, host: str, port: int, device: str = "auto") -> list[str]:
    """The `transformers serve` command line (run with this Python, so the venv's transformers serves)."""
    code = "import sys; from transformers.cli.transformers import main; sys.argv[0] = 'transformers'; main()"
    return [sys.executable, "-c", code, "serve", str(folder), "--host", host, "--port", str(port),
            "--device", device, "--dtype", "bfloat16", "--log-level", "warning"]


def run_server(cfg: Config, adapter_dir: Path | None, host: str = "127.0.0.1", port: int = DEFAULT_PORT,
               out: Path | None = None) -> int:
    """Export if needed, then run transformers serve in the foreground until Ctrl-C."""
    from .model import cuda_available

    check_host(host)
    if not 0 < port < 65536:
        raise ConfigError(f"--port {port} is not a port number (1-65535)")
    folder = merged_folder(cfg, adapter_dir, out)
    cmd = serve_command(folder, host, port, "auto" if cuda_available() else "cpu")
    url = f"http://{host}:{port}/v1"
    print(f"serving {folder} at {url} (model name: {folder}); talk to it with\n"
          f"  python test_model.py --preset {cfg.preset} --api-base {url}\n"
          f"  python test_model.py batch --preset {cfg.preset} --api-base {url}", file=sys.stderr, flush=True)
    proc = subprocess.Popen(cmd)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        return 0
