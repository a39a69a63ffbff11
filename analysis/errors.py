"""Errors the CLI reports in one line: each says what is wrong with the folder or the request."""


class AnalysisError(Exception):
    pass


class NoCompleteRuns(AnalysisError):
    pass
