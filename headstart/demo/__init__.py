"""The real-data demo: Stack Exchange dumps mapped to Segment messages, with a plan for each."""
