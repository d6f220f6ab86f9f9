"""One module per ``cico`` subcommand: argument parsing and printing only; the work is in the library."""
