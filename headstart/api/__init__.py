"""HTTP interfaces: the Segment-compatible ingest API and the admin read API."""
