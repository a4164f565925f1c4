"""The scaling-law lab: IsoFLOP sweeps of ordinary run directories (sweep.py) and Chinchilla's
Approaches 2 and 3 fitted to them (fit.py, report.py). See docs/scale.md."""
