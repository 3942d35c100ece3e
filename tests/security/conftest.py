"""The attack suite: each module probes one class of defect (issue 12) and asserts that nothing
leaks, nothing is lost and every refusal says why."""
