"""The GPU stage: work units, transcription and screening runs, and the GPU worker.

``work_units`` plans the day's units; ``transcribe`` and ``classify`` are a unit's two stages,
which read their inputs through ``unit_inputs``, load their models through ``models`` and record
their figures through ``figures``; ``worker`` preloads the heavy libraries on a GPU worker.
"""
