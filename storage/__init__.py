"""Blob store (local folder or S3) and database (SQLite or PostgreSQL)."""
