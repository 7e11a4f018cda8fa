"""Stage 4, reporting: the grid's summary table (:mod:`.summary`), figures (:mod:`.plots`),
the Jupyter Book (:mod:`.book`, :mod:`.pages`) and the web page export (:mod:`.export`)."""
