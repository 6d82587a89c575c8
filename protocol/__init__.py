"""The typed, pure protocol layer of qwen-gateway."""
