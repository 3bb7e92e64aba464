"""Data: CSV datasets, video I/O, transforms, buckets, cached latents and text embeddings, the data loader."""
from mg.data.buckets import Bucket, parse_buckets
from mg.data.dataset import VideoDataset
from mg.data.loader import VideoDataLoader
from mg.data.sampler import BucketBatchSampler

__all__ = ["Bucket", "BucketBatchSampler", "VideoDataLoader", "VideoDataset", "parse_buckets"]
