"""The RA review web UI: a small FastAPI app that Airflow mounts at ``/earmark`` (a plugin).

Server-rendered pages, every route behind Airflow's auth. Queue logic stays in
``earmark.review.queue`` and day counts in ``earmark.day.status``; ``queries`` holds the few
reads only the pages need.
"""
