"""The IDX files of the MNIST family: their names, magic numbers and folders. Torch-free, so that
analysis reads test labels through it without loading torch."""

FILES = {  # the same four names for the whole 28x28 family
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
IMAGE_MAGIC, LABEL_MAGIC = 2051, 2049
# data.name -> the torchvision class, whose name is the folder that holds raw/
FOLDERS = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST", "kmnist": "KMNIST"}
