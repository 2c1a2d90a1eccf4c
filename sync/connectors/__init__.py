"""One connector per channel family. Each pulls over HTTP and yields validated, canonical batches."""
