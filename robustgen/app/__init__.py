"""The floor above `training` and `samplers`: what uses both (the demo pipeline, the HTML report).

The kernel (`robustgen` minus `app` and `cli`) knows neither package; `training` and `samplers`
know the kernel only; `robustgen.app` and the CLI may use all three.
"""
