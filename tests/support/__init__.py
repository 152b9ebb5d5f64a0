"""Test platform helpers: the local cluster, deadlines and polling."""
