"""Small parts every stage uses: bounded waits, daemon thread pools, atomic files, per-process state."""
