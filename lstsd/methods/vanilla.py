"""``method=vanilla``: cross-entropy on the labels, nothing else (the base interface's defaults)."""
from lstsd.config import MethodConfig
from lstsd.methods import register_method
from lstsd.methods.base import Method


@register_method("vanilla", MethodConfig)
class Vanilla(Method):
    """L = CE(f(x), y)."""
