"""Accounting: what each user stores, their storage quota and its enforcement."""
