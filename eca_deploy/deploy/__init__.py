"""`deploy`: every stage from checkpoint to shippable artifacts, cached, with a manifest and a report."""
