"""The base layer: the contract (artifacts, workflows, checks), tie flags, precisions, devices, versions,
outcomes and errors, and reading the case files. No torch at import; everything else builds on it."""
