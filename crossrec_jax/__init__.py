"""crossrec_jax: cross-domain recommendation with pretrained language models in JAX/Flax NNX."""

__version__ = "0.1.0"
