"""locvtp: video-text pre-training for temporal localization (LocVTP, Cao et al., ECCV 2022)."""
__version__ = "0.1.0"
