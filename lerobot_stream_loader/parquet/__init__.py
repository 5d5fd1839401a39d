"""Parquet by byte range: footers, the row groups of one episode, checks of what a footer claims."""
