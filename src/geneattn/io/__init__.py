"""Reading and writing: raw counts in every supported format
(:mod:`~geneattn.io.readers`), atomic writes (:mod:`~geneattn.io.atomic`) and checked
``.npz`` files (:mod:`~geneattn.io.npz`)."""
