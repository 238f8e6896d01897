"""Reading what runs wrote and what the project expects: expectation files, results files and the
nightly matrix. Standard library, YAML and packaging only, so results can be read anywhere without torch."""
