"""Stage 2, training: parameters (:mod:`.params`), the model registry (:mod:`.models`),
transforms, the feature cache, a run directory (:mod:`.run`), the one epoch loop
(:mod:`.loop`) and the recipe that chooses fast / DataLoader / resident / grouped paths
(:mod:`.recipe`)."""
