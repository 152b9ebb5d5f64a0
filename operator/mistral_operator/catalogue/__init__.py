"""Catalogue data that both the API models and the core read: models and GPUs."""
