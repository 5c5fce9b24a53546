"""Identity resolution: which person an event belongs to, merging devices into one person.

``resolver`` maps ids to persons inside the processor; ``admin`` holds audited merges and
separations.
"""
