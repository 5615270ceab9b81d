"""Benchmarks of lmforge's engines: static batches (``generation``), offline request throughput
(``throughput``) and load against a running api_server (``serve``), with the workloads they use."""
