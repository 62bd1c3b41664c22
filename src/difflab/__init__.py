"""difflab: diffusion and score-based generative models on PyTorch Lightning + Hydra."""
__version__ = "0.1.0"
