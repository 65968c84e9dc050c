"""Pure functions on result tables and arrays: gains, similarities, statistics, and the report."""
