"""qwen-gateway: a streaming gateway for Qwen models."""

__version__ = "0.1.0"
