"""The data path: labelled images -> splits (dataset), decoding (decode), the decode cache (cache), loader processes
and device-side augmentation (loaders, augment), the built-in data set and the dataset report. Pure torch/torchvision
and Pillow: no Ray, no MLflow."""
