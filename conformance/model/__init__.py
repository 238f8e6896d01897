"""What a case is and how one runs: families (tiny configs), feature probes, recipes, cases and their
generators, the pipeline steps, checkpoint layouts, effective weights and the oracles that judge them."""
