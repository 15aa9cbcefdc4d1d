"""Data quality: the gate every incoming row passes before it becomes a license.

The gate (:mod:`quality.gate`) validates each batch with the source's Great Expectations suite
(:mod:`quality.suite`, generated from the catalogue and the source's YAML, on check columns
computed in :mod:`quality.checks`) and splits it row by row; :mod:`quality.docs` renders the
validations as GX Data Docs. Supervision cards build on the run history.

Nothing is imported here: the gate pulls in pandas and the suite builder, which the cards, the
monitor and the admin pages do not need.
"""
