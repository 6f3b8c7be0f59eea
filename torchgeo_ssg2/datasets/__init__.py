"""datasets."""

__all__: tuple[str, ...] = ()
