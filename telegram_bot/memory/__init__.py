"""What the model sees of a long conversation: the prompt within the token budget (compose,
assembler, budget, calibration), rolling summaries (compaction) and recall from the archive.
Nothing here imports `telegram`."""
