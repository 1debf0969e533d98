"""Reusable assets: the users' libraries and common/."""
