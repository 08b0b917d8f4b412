"""The recordings' lifecycle: erasure on request (`erase`), recorded in ``erasures``."""
