"""The pages made from results (report, diff, gate, timeline) and their templates. Like reading/, they
need no torch."""
