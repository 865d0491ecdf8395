"""deploysim.evaluate layer."""
