"""Wire contracts: message bodies, headers, topology and CloudEvents."""
