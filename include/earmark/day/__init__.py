"""The day: its schedule, its state in the results DB, and the report."""
