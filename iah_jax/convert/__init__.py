"""Weight converters from other frameworks into Flax variables."""
