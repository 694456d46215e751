"""Test oracles shared by the test suite and the benchmarks.

:mod:`~geneattn.testing.reference` holds plain numpy references of the seed interfaces'
kernels, :mod:`~geneattn.testing.bert_reference` a numpy BERT forward pass,
:mod:`~geneattn.testing.genohoption` GenoHoption's equations with dense matrices (seed 001),
and :mod:`~geneattn.testing.toy` seeded toy cells and models. Nothing in the workflow imports
them; they ship in the package (as ``numpy.testing`` does) so that users can check a build.
"""
