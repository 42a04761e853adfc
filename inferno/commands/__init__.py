"""Thin click commands: parse, load, call the library, print or write."""
