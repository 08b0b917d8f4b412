"""The recordings' lifecycle: erasure on request (`erase`) and retention per kind of data
(`retention`), both recorded in ``erasures``; `disk` is what they remove."""
