"""Reporting: summary tables and pictures."""
