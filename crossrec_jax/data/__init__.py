"""Raw files -> validated tables -> splits -> text -> tokens -> batches."""
