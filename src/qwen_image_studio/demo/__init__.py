"""The demo factory: tiny random-weight models in the release layouts plus a small dataset."""
