"""Raw web audio with weak labels -> validated WebDataset shards + manifest on local or S3 storage."""
