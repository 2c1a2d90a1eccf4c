"""`c360 demo`: the embedded database, the channel simulator on loopback, one full sync_all with a
progress bar, then the API. Nothing to install or configure beyond the project itself."""

from __future__ import annotations

import threading
import time
from typing import Any

import typer

from api.cli_sync import console, print_summary


def start_simulator(config: Any, host: str = "127.0.0.1") -> tuple[str, Any]:
    """Serve the simulator with uvicorn in a daemon thread on a free loopback port; return its URL."""
    import socket

    import uvicorn

    from sync.simulator import create_simulator_app

    with socket.socket() as s:
        s.bind((host, 0))
        port = int(s.getsockname()[1])
    server = uvicorn.Server(
        uvicorn.Config(create_simulator_app(config), host=host, port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, name="c360-simulator", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"the simulator did not start on {host}:{port}")
        time.sleep(0.05)
    return f"http://{host}:{port}", server


def demo(
    seed: int = typer.Option(42, help="Simulator seed: the same seed gives the same retailer."),
    people: int = typer.Option(2000, min=10, help="Simulated people."),
    orders: int = typer.Option(8000, min=10, help="Simulated orders over Tmall, JD, the app and POS."),
    pos_files: int = typer.Option(300, min=0, help="POS transactions also written to the drop folder."),
    serve: bool = typer.Option(True, help="Serve the API after the sync (--no-serve: stop after it)."),
    port: int | None = typer.Option(None, help="API port (default C360_PORT)."),
) -> None:
    """Start the embedded database and the channel simulator, sync every channel, then serve the API."""
    from api.cli import fail, serve_api
    from api.cli_sync import prepare, run_sync
    from infra.settings import Settings
    from sync.config import get_sync_settings
    from sync.connectors.base import SyncError
    from sync.simulator import SimulatorConfig, write_pos_export

    console.print("[bold]Customer 360 demo[/bold]: database, simulator, sync, API")
    settings, sync_settings = prepare(migrate=True)
    config = SimulatorConfig(seed=seed, people=people, orders=orders)
    base_url, simulator = start_simulator(config)
    console.print(f"simulator on {base_url} (seed {seed}, {people} people, {orders} orders)")
    if pos_files:
        # A register export in the drop folder, so the file path is exercised too (it overlaps the HTTP
        # feed on purpose: the same transactions land once).
        drop = get_sync_settings().pos_drop_dir
        write_pos_export(drop, config, fmt="csv", start_index=0, count=pos_files)
        console.print(f"POS export written to {drop}")
    try:
        result = run_sync(None, None, base_url, simulator=True)
    except SyncError as exc:
        fail(str(exc))
    print_summary(result)
    if not serve:
        simulator.should_exit = True
        return
    if port is not None:
        settings = Settings.model_validate({**settings.model_dump(), "port": port})
    console.print(f"simulator keeps running on {base_url}: POST {base_url}/_sim/advance then `c360 sync run "
                  f"--base-url {base_url} --simulator` pulls what changed")  # fmt: skip
    serve_api(settings, migrate=False)
