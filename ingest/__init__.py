"""Ingest: accept scans (files, folders, zips, PDFs), reject bad ones by name, render page images."""  # noqa: E501
