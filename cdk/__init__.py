"""Infrastructure only: stacks and constructs. Runtime code never imports this package."""
