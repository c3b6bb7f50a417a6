"""Macular OCT measurement, classical baseline (pure numpy/OpenCV): ILM/RPE segmentation,
thickness map, fovea, ETDRS grid, macular volume and fluid. Demonstration, not clinically
validated. Entry point: :func:`appliance.inference.oct.measure.measure_oct`."""
