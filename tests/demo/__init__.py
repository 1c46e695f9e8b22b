"""Tests of the customer-service demo and its command line."""
