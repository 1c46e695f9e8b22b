"""Demos of reliablelink, run by the ``reliablelink`` command."""
