"""The CiCo network: backbone, FPN, clip prediction head, clip mask head, and their typed outputs."""
