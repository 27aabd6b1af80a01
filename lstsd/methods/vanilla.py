"""``method=vanilla``: cross-entropy on the labels, nothing else (the base interface's defaults)."""
from lstsd.config import MethodConfig
from lstsd.methods.base import Method
from lstsd.registry import register_method


@register_method("vanilla", MethodConfig)
class Vanilla(Method):
    """L = CE(f(x), y)."""
