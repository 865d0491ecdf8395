"""deploysim.checks layer."""
