"""Networks (MLP, UNet) and the exact GMM oracle."""
from .oracle import GMMOracle, OracleModel

__all__ = ["GMMOracle", "OracleModel"]
