"""dcgan: deep convolutional GANs for small images, from training to pictures and numbers."""

__version__ = "0.1.0"
