"""The GPU stage: work units, transcription and screening runs, and the GPU worker."""
