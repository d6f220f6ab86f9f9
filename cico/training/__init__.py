"""Training: clip matching, the CiCo losses, and the torchrun engine."""
