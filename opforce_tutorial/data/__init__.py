"""Reference data: OpenMM systems, CG maps and force maps, resumable replica exchange, datasets."""
