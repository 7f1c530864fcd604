"""The CIFAR-10 data the trainings read: the splits, whitened and cached (sources), and `hpsearch data check`."""
