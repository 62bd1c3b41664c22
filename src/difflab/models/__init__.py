"""Networks (MLP, UNet) and the exact GMM oracle."""
from .embeddings import NoiseEmbedding, sinusoidal_embedding
from .mlp import MLP
from .oracle import GMMOracle, OracleModel
from .unet import UNet

__all__ = ["GMMOracle", "OracleModel", "MLP", "UNet", "NoiseEmbedding", "sinusoidal_embedding"]
