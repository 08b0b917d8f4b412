"""The one shape of an input verdict: a short reason code and a detail for people."""

from __future__ import annotations


class Rejected(Exception):  # noqa: N818 - a verdict, not a failure of the program
    """Input that is not acceptable; ``code`` is a short snake_case reason.

    Input errors are recorded (quarantine, ``error`` columns) as ``"code: detail"`` and never
    raised past a task; infrastructure errors are ordinary exceptions and make Airflow retry.
    """

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(code, detail)
        self.code = code
        self.detail = detail

    def __str__(self) -> str:
        return f"{self.code}: {self.detail}"
