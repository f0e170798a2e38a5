"""The `schedcp` command line. Each service registers its commands from its own module."""
