"""Weight-space model merging: methods (pytree functions), kernels (per-tensor arithmetic), io (streamed inputs and
output), host_memory (the peak resident memory the merge job reports)."""
