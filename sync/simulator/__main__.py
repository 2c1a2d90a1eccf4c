"""`python -m sync.simulator --port 8765 [--seed 42 --people 2000 --orders 8000]`: serve the simulator."""

from __future__ import annotations

import argparse

import uvicorn

from sync.simulator.app import create_simulator_app
from sync.simulator.config import SimulatorConfig


def main(argv: list[str] | None = None) -> None:
    """Parse the command line and run the simulator under uvicorn until interrupted."""
    parser = argparse.ArgumentParser(prog="python -m sync.simulator", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--people", type=int, default=2000)
    parser.add_argument("--orders", type=int, default=8000, help="total over tmall, jd, app and pos")
    parser.add_argument("--malformed-rate", type=float, default=0.0)
    args = parser.parse_args(argv)
    config = SimulatorConfig(
        seed=args.seed, people=args.people, orders=args.orders, malformed_rate=args.malformed_rate
    )
    uvicorn.run(create_simulator_app(config), host=args.host, port=args.port, log_level="info")


if __name__ == "__main__":
    main()
