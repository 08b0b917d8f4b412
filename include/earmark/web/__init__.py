"""The RA review web UI: a small FastAPI app that Airflow mounts at ``/earmark`` (a plugin).

Server-rendered pages, every route behind Airflow's auth. ``app`` builds the app from
``day_pages`` (day status, reports, stats) and ``review_pages`` (claim, decide, history), which
share ``shared``'s dependencies and templates. Every write to the review queue is
``earmark.review.queue``'s and day counts are ``earmark.day.status``'s; ``queries`` holds the
few reads only the pages need.
"""
