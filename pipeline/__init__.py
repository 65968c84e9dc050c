"""The shared prompt-tuning kernel: backbone, tasks, methods, loops and run(cell); knows no studies."""
