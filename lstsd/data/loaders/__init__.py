"""The training and evaluation loaders: the split on the device (:mod:`.memory`, also the torchvision
DataLoader path), or read from disk by worker processes (:mod:`.stream`)."""
