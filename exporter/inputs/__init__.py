"""Inputs: each turns an outside source into raw lines or JSON values for the pipeline."""
