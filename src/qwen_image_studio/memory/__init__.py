"""Memory options: fp8 weight storage, block swapping, activation offload."""
