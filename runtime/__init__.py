"""Shared runtime of every stage: storage URLs and atomic writes, the telemetry mechanism, the Ray
session, and one bounded parallel map with progress. It imports no stage; every stage imports it."""
