"""``from vtg_datasets.collate_fns import SFTCollator`` keeps working; see
``model_garden.vtg.collate``."""

from model_garden.vtg.collate import SFTCollator

__all__ = ["SFTCollator"]
