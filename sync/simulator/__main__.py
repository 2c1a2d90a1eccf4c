"""`python -m sync.simulator --port 8765 [--seed 42 --people 2000 --orders 8000]`: serve the simulator."""

from __future__ import annotations

import argparse
import gc

import uvicorn

from sync.simulator.app import create_simulator_app
from sync.simulator.config import SimulatorConfig


def serve(
    config: SimulatorConfig, host: str = "127.0.0.1", port: int = 8765, log_level: str = "info"
) -> None:
    """Run the simulator for `config` under uvicorn (one process: the clock, faults, WeChat tokens and
    update overlays live in its memory) until interrupted."""
    app = create_simulator_app(config)
    # The population and catalogue live as long as the process: freeze them out of the cyclic
    # collector, so the collections that building pages triggers only walk the pages.
    gc.collect()
    gc.freeze()
    uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=log_level == "debug")


def main(argv: list[str] | None = None) -> None:
    """Parse the command line and run the simulator under uvicorn until interrupted."""
    parser = argparse.ArgumentParser(prog="python -m sync.simulator", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--people", type=int, default=2000)
    parser.add_argument("--orders", type=int, default=8000, help="total over tmall, jd, app and pos")
    parser.add_argument("--malformed-rate", type=float, default=0.0)
    parser.add_argument(
        "--render-cache-mib",
        type=int,
        default=SimulatorConfig.render_cache_bytes // 2**20,
        help="MiB of rendered Tmall/JD orders kept for reuse (about 1.2 KB per order; 0: off)",
    )
    args = parser.parse_args(argv)
    config = SimulatorConfig(
        seed=args.seed,
        people=args.people,
        orders=args.orders,
        malformed_rate=args.malformed_rate,
        render_cache_bytes=args.render_cache_mib * 2**20,
    )
    serve(config, args.host, args.port)


if __name__ == "__main__":
    main()
