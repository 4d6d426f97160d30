"""The web UI: a Flask app over a workspace; it launches stages as processes and never imports torch."""
