"""samplers."""

__all__: tuple[str, ...] = ()
