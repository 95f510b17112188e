"""Losses, schedules, optimisers, the compiled step, sharding, checkpoints and the trainer."""
