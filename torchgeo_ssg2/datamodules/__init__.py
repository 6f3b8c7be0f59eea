"""datamodules."""

__all__: tuple[str, ...] = ()
