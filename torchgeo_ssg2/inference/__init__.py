"""inference."""

__all__: tuple[str, ...] = ()
