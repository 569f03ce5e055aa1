"""Data access: the only tier that talks to DynamoDB and S3."""
