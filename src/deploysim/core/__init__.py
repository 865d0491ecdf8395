"""deploysim.core layer."""
