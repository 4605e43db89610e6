"""The web app: the worker review page, operator and agency pages, and the JSON API."""
