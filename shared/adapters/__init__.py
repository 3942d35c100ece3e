"""Adapters that implement :mod:`shared.ports` for AWS (boto3) and for the local runtime."""
