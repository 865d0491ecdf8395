"""deploysim.pipeline layer."""
