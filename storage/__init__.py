"""Uploaded datasets on disk: checked before they are accepted, then stored where
workers read them."""
