"""Framework-neutral core: the I3D table, the name map, canonical weights (numpy only)."""
