"""Great Expectations validation of raw events and the quarantine of bad rows."""
