"""``from vtg_datasets.video_dataset import VideoTemporalSFTDataset`` keeps working; see
``model_garden.vtg.dataset``."""

from model_garden.vtg.dataset import VideoTemporalSFTDataset

__all__ = ["VideoTemporalSFTDataset"]
