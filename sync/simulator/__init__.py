"""Channel simulator: Tmall/Taobao, JD, the own app, WeChat, Weibo and store POS over real HTTP,
serving deterministic demo data from a seed, with a ground truth and fault injection."""

from sync.simulator.app import create_simulator_app
from sync.simulator.config import CST, SimulatorConfig
from sync.simulator.dataset import identity_frame
from sync.simulator.pos import write_pos_export
from sync.simulator.signing import jos_sign, top_sign

__all__ = [
    "CST",
    "SimulatorConfig",
    "create_simulator_app",
    "identity_frame",
    "jos_sign",
    "top_sign",
    "write_pos_export",
]
