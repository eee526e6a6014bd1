"""The report of a study, in small parts: ``results`` (metrics files → rows with intervals, claims tested),
``markdown`` (tables and number formats), ``tables`` (every table and the CSV) and ``figures``; the stage
``core.stages.report`` puts them together."""
