"""BERT encoder (NNX), Hugging Face import, gradient reversal, heads and recommenders."""
