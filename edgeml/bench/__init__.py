"""Measurement: timing, power meters, op counts, energy estimates and reports."""
