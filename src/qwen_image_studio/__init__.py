"""Qwen-Image Studio: train LoRAs for Qwen-Image and Qwen-Image-Edit."""

__version__ = "0.1.0"
