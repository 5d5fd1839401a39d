"""Stage 5, batches: collate items into reused shared memory (uint8 to float on the way), frames to a device."""
