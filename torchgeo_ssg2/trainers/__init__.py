"""trainers."""

__all__: tuple[str, ...] = ()
