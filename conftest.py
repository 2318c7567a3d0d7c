"""Makes the repository root importable for the tests (``import iah_jax`` without installing)."""
