"""The command line, `dagtop`: click commands over `engine.client.Client`, and their output."""
