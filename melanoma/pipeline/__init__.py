"""Running it all: the experiment grid (:mod:`.grid`), the papermill notebook runner
(:mod:`.nbrun`), Snakemake runs, locks and retries (:mod:`.runner`), SLURM status
(:mod:`.cluster`) and the notebooks' first-use defaults (:mod:`.defaults`)."""
