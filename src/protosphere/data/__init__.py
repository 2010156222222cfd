"""Datasets as in-memory arrays: loaders, look-up and status."""

from protosphere.data.base import DatasetStatus, ImageDataset
from protosphere.data.cifar import load_cifar10, load_cifar100
from protosphere.data.digits import load_digits
from protosphere.data.idx import read_idx
from protosphere.data.image_folder import DOMAINNET_DOMAINS, load_domainnet, load_imagenet100
from protosphere.data.mnist import load_fashion_mnist, load_mnist
from protosphere.data.registry import DATASET_NAMES, dataset_status, format_dataset_status, load_dataset
from protosphere.data.tiny_imagenet import load_tiny_imagenet

__all__ = [
    "DATASET_NAMES",
    "DOMAINNET_DOMAINS",
    "DatasetStatus",
    "ImageDataset",
    "dataset_status",
    "format_dataset_status",
    "load_cifar10",
    "load_dataset",
    "load_cifar100",
    "load_digits",
    "load_domainnet",
    "load_fashion_mnist",
    "load_imagenet100",
    "load_mnist",
    "load_tiny_imagenet",
    "read_idx",
]
