"""One small module per `miniglm` command; each is a thin `main(argv) -> exit code` over library code."""
