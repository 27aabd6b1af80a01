"""The dataset readers, one module per family, each registered with its schema (``@register_dataset(name,
Schema)``): a reader returns the raw :class:`~lstsd.data.types.Splits` of its files."""
