"""The study's HTML report: :mod:`~geneattn.report.html` assembles the page,
:mod:`~geneattn.report.plots` draws its figures."""
