"""Architecture configs, key maps, loaders and writers for the release file layouts."""
