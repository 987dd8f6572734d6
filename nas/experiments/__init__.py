"""Small, self-contained experiments that reproduce claims of the MobileNetV2 paper."""
