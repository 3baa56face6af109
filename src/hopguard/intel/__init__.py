"""Threat intelligence: feed readers, the indicator store and fast matchers (offline by
default; fetching a feed over the network is an explicit switch)."""
