"""What every part runs on: the console, paths relative to the launch folder, processes, file locks,
the GPU pool of a parallel sweep, and the device settings (mixed precision, XLA)."""
