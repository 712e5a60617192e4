"""Images: the sample photographs, folders of jpg/png, and ImageNet-style preprocessing."""
