"""The lab: the experiments that reproduce the paper's claims, their reports, and the cluster simulator.

It depends on the library (:mod:`dasr`), never the other way; it is not installed with the package.
"""
