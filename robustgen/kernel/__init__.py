"""The kernel: what training and samplers stand on, and nothing above it.

Inner order (tests/test_layout.py checks it): the base modules (errors, finite, io, cache, device,
distributed, threat, energy, pictures, tables) import only each other; robustgen.kernel.data imports the
base; robustgen.kernel.models imports the base and data. Nothing here imports training, samplers,
robustgen.app or robustgen.cli.
"""
