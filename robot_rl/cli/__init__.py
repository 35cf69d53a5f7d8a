"""The `robot-rl` command line: the only place that reads argv."""
