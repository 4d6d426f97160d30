"""The parameter schema: every parameter declared once, everything else derived from it."""
