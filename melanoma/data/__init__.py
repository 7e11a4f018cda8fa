"""Stage 1, data: the releases' official layouts read into manifests (:mod:`.ingest`), merged
into training combinations (:mod:`.combine`), de-duplicated across releases (:mod:`.dedup`);
safe image decoding (:mod:`.images`), the resized-image cache (:mod:`.cache`) and the
synthetic replicas of every release (:mod:`.synthetic`)."""
